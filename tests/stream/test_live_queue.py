"""A live source's queue: a short burst waits and is scored in order, a sustained backlog keeps only
the newest, and every drop is counted by its cause."""

from __future__ import annotations

import queue
import time

import pytest

from dualkd_edge.stream.capture.queues import LiveFrameQueue


def test_a_burst_within_the_buffer_loses_nothing_and_keeps_the_order():
    q = LiveFrameQueue(capacity=8, behind_s=1.0)
    q.put_nowait("warm")
    q.get_nowait()  # the pipeline runs
    for i in range(8):
        assert q.put_nowait(i) == 0
    assert [q.get_nowait() for _ in range(8)] == list(range(8))
    assert q.empty() and q.drops == {"startup": 0, "behind": 0, "burst": 0}
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_more_than_the_buffer_at_once_drops_the_oldest_as_a_burst():
    q = LiveFrameQueue(capacity=4, behind_s=10.0)
    q.put_nowait("warm")
    q.get_nowait()
    for i in range(6):
        q.put_nowait(i)
    assert q.drops["burst"] == 2 and [q.get_nowait() for _ in range(4)] == [2, 3, 4, 5]


def test_frames_before_the_pipeline_takes_one_are_startup_drops():
    q = LiveFrameQueue(capacity=2, behind_s=0.0)
    for i in range(5):
        q.put_nowait(i)
    assert q.drops == {"startup": 3, "behind": 0, "burst": 0}


def test_a_backlog_that_never_empties_keeps_only_the_newest():
    q = LiveFrameQueue(capacity=8, behind_s=0.05)
    q.put_nowait("warm")
    q.get_nowait()
    q.put_nowait(0)
    q.put_nowait(1)
    q.put_nowait(2)
    q.get_nowait()  # the pipeline takes one, the backlog stays
    time.sleep(0.08)
    assert q.put_nowait(3) == 2  # behind for longer than behind_s: 1 and 2 are dropped
    assert q.drops["behind"] == 2 and q.get_nowait() == 3 and q.empty()
