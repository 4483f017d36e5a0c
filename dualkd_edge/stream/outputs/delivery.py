"""Sinks that send decisions to other machines (MQTT broker, PLC, webhook) without ever holding up
inference: `write` only puts the decision in a bounded queue; a worker thread per sink delivers
it. When the receiver is down or slow the queue fills and the oldest decision waiting is dropped
(and counted): on a line the newest decision matters most. What was delivered and what was not
goes into the run's summary and the dashboard."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass

from dualkd_edge.stream.capture.queues import put_newest
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.outputs.sinks import Sink

log = logging.getLogger("dualkd_edge")


@dataclass
class DeliveryStats:
    """Counts of one line-side sink. accepted = delivered + dropped + failed + left (+ in flight)."""

    sink: str  # mqtt | modbus | webhook
    target: str  # where to, credentials removed
    accepted: int = 0  # decisions handed to the sink
    delivered: int = 0  # acknowledged by the receiver
    dropped: int = 0  # pushed out of a full queue (the receiver was too slow or down)
    failed: int = 0  # given up after the retries
    left: int = 0  # still waiting when the run ended
    reconnects: int = 0
    connected: bool = False
    last_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        text = (f"{self.sink} {self.target}: delivered {self.delivered} of {self.accepted}, dropped {self.dropped}, "
                f"failed {self.failed}, left at exit {self.left}, reconnects {self.reconnects}")
        return text + (f" (last error: {self.last_error})" if self.last_error else "")


class RetryDelays:
    """Exponential backoff between attempts: first, 2x first, ... up to `longest` seconds."""

    def __init__(self, first: float = 0.25, longest: float = 5.0) -> None:
        self.first = first
        self.longest = longest

    def __call__(self, attempt: int) -> float:
        return min(self.longest, self.first * 2 ** max(0, attempt - 1))


class QueuedSink(Sink):
    """The non-blocking part every line-side sink shares. Subclasses say which results they take
    (`selects`) and how one record is delivered (`deliver`, in the worker thread: True when the
    receiver acknowledged it, False when it failed (an exception counts as failed too), None when a
    client library took it and counts the acknowledgement itself)."""

    def __init__(self, sink: str, target: str, queue_size: int = 256, drain_seconds: float = 3.0) -> None:
        self.delivery = DeliveryStats(sink, target)
        self.queue: queue.Queue[dict] = queue.Queue(maxsize=queue_size)
        self.drain_seconds = drain_seconds
        self.stopping = threading.Event()  # close() was called: drain, then stop
        self.abandon = threading.Event()  # the drain time is over: give up waiting and retrying
        self.worker = threading.Thread(target=self._work, name=f"{sink}-sink", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> "QueuedSink":
        self.worker.start()
        return self

    def selects(self, result: FrameResult) -> bool:
        return True

    def make_record(self, result: FrameResult) -> dict:
        """What goes into the queue (inference thread: keep it cheap)."""
        return result.record()

    def deliver(self, record: dict) -> bool | None:
        raise NotImplementedError

    def count(self, field: str, n: int = 1) -> None:
        """Counters are written by the inference thread, the worker and client callbacks."""
        with self._lock:
            setattr(self.delivery, field, getattr(self.delivery, field) + n)

    def write(self, result: FrameResult) -> None:
        if not self.selects(result):
            return
        record = self.make_record(result)
        self.count("accepted")
        dropped = put_newest(self.queue, record)
        if dropped:
            self.count("dropped", dropped)

    def _work(self) -> None:
        while not (self.stopping.is_set() and self.queue.empty()) and not self.abandon.is_set():
            try:
                record = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                ok = self.deliver(record)
            except Exception as exc:  # noqa: BLE001 - a receiver's failure must never end the run
                self.delivery.last_error = f"{type(exc).__name__}: {exc}"
                ok = False
            if ok is not None:  # None: in flight, the client library counts it when acknowledged
                self.count("delivered" if ok else "left" if self.abandon.is_set() else "failed")

    def wait(self, seconds: float) -> None:
        """Sleep between retries, cut short when the run gives up on this sink."""
        self.abandon.wait(seconds)

    def finish(self) -> None:
        """After the queue is drained (or the time is up): flush what the client still holds."""

    def close(self) -> list[str]:
        """Deliver what is queued for at most `drain_seconds`, then count the rest as left."""
        self.stopping.set()
        self.worker.join(timeout=self.drain_seconds)
        self.abandon.set()
        self.worker.join(timeout=2.0)
        self.finish()
        self.count("left", self.queue.qsize())
        log.info("%s", self.delivery.format())
        return []
