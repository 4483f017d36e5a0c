"""The file outputs of a stream (overlay images, overlay video, JSONL) written off the inference
thread: painting an overlay and encoding video cost as much as a small model's inference, and a
line camera's next frame should not wait for them.

One worker thread takes the scored frames in order from a bounded queue and hands each to its sinks
in their order (pictures first, then the JSONL record), so every file keeps the frame order. Files
never drop a frame: when the queue is full (the disk or the encoder is slower than the camera for a
while), `submit` waits, which holds the pipeline back (back-pressure); each wait is counted and
reported, and a sink that fails (disk full) stops the run loudly as before.

When the model's threads take every core, the worker runs at the lowest CPU priority (Linux): the
files take what is left instead of stalling one of them mid-operator, which held up the whole
parallel inference (edge-s224 INT8 on 2 cores: 57 -> 61 ms per image at equal priority, 58.5 ms at
nice 19; benchmarks/results/line-pace-cpu-2core.md). Not when a core was left for the outputs
(core_share.model_takes_every_core): there the capture threads took that core from a deprioritised
worker (tiny at 720p: 0.71x -> 0.60x). The queue bounds how far the files may fall behind: when it
is full, the pipeline waits and the files catch up."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Callable

from dualkd_edge.stream.outputs.sinks import Sink
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.summary import StageLatencies

log = logging.getLogger("dualkd_edge")

OUTPUT_THREAD_NICE = 19  # the lowest priority: inference always goes first
QUEUE_FRAMES = 16  # frames waiting for the file outputs (each holds its image: ~1 MB at VGA)
_DONE = object()


class FileOutputWorker(threading.Thread):
    def __init__(self, sinks: list[Sink], on_error: Callable[[Sink, OSError], None], failed: set[int],
                 capacity: int = QUEUE_FRAMES, yield_cpu: bool = True) -> None:
        """`on_error` records a sink that could not write in `failed` (the runner's set of ids), which
        then gets no more frames; `yield_cpu`: run at the lowest priority (the model takes every core)."""
        super().__init__(name="file-outputs", daemon=True)
        self.sinks = sinks
        self.on_error = on_error
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.failed = failed
        self.yield_cpu = yield_cpu
        self.latency = StageLatencies()  # time the sinks took per frame, off the inference thread
        self.waits = 0  # times the pipeline waited for a full queue
        self.wait_ms = 0.0

    def submit(self, result: FrameResult) -> None:
        try:
            self.queue.put_nowait(result)
        except queue.Full:
            t0 = time.perf_counter()
            self.queue.put(result)
            self.waits += 1
            self.wait_ms += (time.perf_counter() - t0) * 1e3

    def run(self) -> None:
        if self.yield_cpu:
            lower_thread_priority(OUTPUT_THREAD_NICE)
        while (result := self.queue.get()) is not _DONE:
            t0 = time.perf_counter()
            for sink in self.sinks:
                if id(sink) in self.failed:
                    continue
                try:
                    sink.write(result)
                except OSError as exc:
                    self.on_error(sink, exc)
                except Exception as exc:  # noqa: BLE001 - a dead worker would leave submit() blocked for ever
                    log.exception("%s: failed on frame %d", sink.option or type(sink).__name__, result.frame.index)
                    self.on_error(sink, OSError(f"{type(exc).__name__}: {exc}"))
            self.latency.add((time.perf_counter() - t0) * 1e3)

    def finish(self) -> None:
        """Write what is queued (nothing is lost at the end of a run or on Ctrl-C), then stop."""
        if self.is_alive():
            self.queue.put(_DONE)
            self.join()

    def report(self) -> dict:
        return {"sinks": [s.option or type(s).__name__ for s in self.sinks], "ms_per_frame": self.latency.stats(),
                "pipeline_waits": self.waits, "pipeline_wait_ms": round(self.wait_ms, 1)}


def lower_thread_priority(nice: int) -> None:
    """Give the calling thread the niceness `nice` (Linux, where a thread id is a process id to
    setpriority; elsewhere that call would reach the whole process, so nothing is done). Lowering a
    priority needs no privilege; a refusal only costs pace, so it is logged and the run goes on."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:
        log.debug("file outputs keep the default CPU priority (%s)", exc)
