"""Bounded queues of live streams: `put_newest` (a full queue loses its oldest) and `LiveFrameQueue`
(a short burst is buffered; newest-wins only when the pipeline has fallen behind; drops counted by cause)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque


def put_newest(q: queue.Queue, item: object) -> int:
    """Put `item` without blocking, dropping the oldest entries while `q` is full (another thread
    may take one meanwhile); returns how many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


DROP_CAUSES = ("startup", "behind", "burst")


class LiveFrameQueue:
    """A live source's frames between its capture thread and the pipeline.

    A line camera must lose no part while the pipeline keeps up on average: frames that arrive in a
    short burst (a GC pause, a slow batch, the encoder flushing) wait here, up to `capacity`, and are
    scored in order. Only when the pipeline has really fallen behind (the backlog has not emptied for
    `behind_s`) does it keep just the newest frame, so decisions do not lag further and further. Every
    drop is counted by its cause: `startup` (before the pipeline took its first frame), `behind` (a
    sustained backlog), `burst` (more frames at once than the buffer holds).

    The interface is the part of queue.Queue the pipeline uses: put_nowait, get_nowait, empty."""

    def __init__(self, capacity: int = 32, behind_s: float = 1.0, drops: dict[str, int] | None = None) -> None:
        self.capacity = capacity
        self.behind_s = behind_s
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._backlog_since: float | None = None  # monotonic time the queue last became non-empty
        self._taken = False  # the pipeline has taken a frame
        # cause -> frames dropped; a capture thread passes its SourceStats' tally, counted in place
        self.drops = dict.fromkeys(DROP_CAUSES, 0) if drops is None else drops

    def put_nowait(self, item: object) -> int:
        """Add `item`; returns how many older frames were dropped for it."""
        now = time.monotonic()
        with self._lock:
            if not self._items:
                self._backlog_since = now
            dropped = 0
            if self._taken and now - self._backlog_since > self.behind_s:
                dropped = len(self._items)  # behind for a while: only the newest matters now
                self._items.clear()
                self._backlog_since = now
                self.drops["behind"] += dropped
            elif len(self._items) >= self.capacity:
                self._items.popleft()
                dropped = 1
                self.drops["burst" if self._taken else "startup"] += 1
            self._items.append(item)
            return dropped

    def get_nowait(self) -> object:
        with self._lock:
            if not self._items:
                raise queue.Empty
            self._taken = True
            item = self._items.popleft()
            if not self._items:
                self._backlog_since = None
            return item

    def empty(self) -> bool:
        with self._lock:
            return not self._items

    def qsize(self) -> int:
        with self._lock:
            return len(self._items)
