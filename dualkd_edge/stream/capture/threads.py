"""Capture threads: one per source, each filling its own bounded queue.

Live sources (cameras, network streams) keep only the newest frame and count the ones they drop;
files and folders hand over every frame in order (the reader waits for the pipeline)."""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dualkd_edge.fileio import read_image
from dualkd_edge.stream.capture.queues import DROP_CAUSES, LiveFrameQueue
from dualkd_edge.stream.capture.sources import SourceSpec, image_files_only, redact

log = logging.getLogger("dualkd_edge")


@dataclass
class Frame:
    source: int
    source_name: str
    index: int
    timestamp: float  # wall-clock time of capture (seconds since the epoch)
    t_ready: float  # perf_counter() when the decoded frame became available
    # Time inside OpenCV's grab/retrieve: decoding, and for live sources also the wait for the
    # next frame to arrive (OpenCV cannot tell the two apart).
    decode_ms: float
    image: np.ndarray
    # The frame's model input (preprocess.model_input: resized, normalised), made on the capture
    # thread when the pipeline asks for it: resizing a camera frame (~4 ms at 1080p) and normalising
    # it then overlap the previous inference.
    model_input: np.ndarray | None = None
    resize_ms: float = 0.0  # the time making `model_input` took (JSON name kept: scripts read it)


@dataclass
class SourceStats:
    name: str
    live: bool
    frames: int = 0
    dropped: int = 0  # every cause together (summary.json `dropped`)
    dropped_by_cause: dict = field(default_factory=lambda: dict.fromkeys(DROP_CAUSES, 0))
    corrupted: int = 0
    skipped_files: int = 0
    reconnects: int = 0
    opened: bool = False
    open_failures: int = 0  # attempts to open it that failed (a camera that is down from the start)
    expected_frames: int | None = None  # video files: the frame count their container announces
    errors: list[str] = field(default_factory=list)


@dataclass
class RetryPolicy:
    max_retries: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0
    open_timeout_ms: int = 5000
    read_timeout_ms: int = 5000

    @classmethod
    def from_options(cls, retries: int, read_timeout_s: float) -> "RetryPolicy":
        """From `infer --retries N --read-timeout S`, refusing what cannot work (nan, <= 0)."""
        from dualkd_edge.errors import UserError

        if not math.isfinite(read_timeout_s) or read_timeout_s <= 0:
            raise UserError(f"--read-timeout: expected seconds > 0, got {read_timeout_s}")
        if retries < 0:
            raise UserError(f"--retries: must be >= 0, got {retries}")
        return cls(max_retries=retries, read_timeout_ms=max(1, round(read_timeout_s * 1000)))

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1))


def prepare_source(spec: SourceSpec, decoder: str = "opencv") -> SourceSpec:
    """The spec as the capture worker should use it, checked in the main thread before capture
    starts: `decoder` gstreamer turns rtsp:// URLs into pipelines; pipelines are parsed, their
    elements looked up and their liveness learned (stream/gstreamer.py)."""
    if decoder == "gstreamer" and spec.kind == "url":
        from dualkd_edge.stream.capture.gstreamer import decode_with_gstreamer

        spec = decode_with_gstreamer(spec)
    if spec.kind == "gstreamer":
        from dualkd_edge.stream.capture.gstreamer import prepare_gstreamer_source

        return prepare_gstreamer_source(spec)
    return spec


def open_capture(spec: SourceSpec, policy: RetryPolicy, stats: SourceStats | None = None):
    """A cv2.VideoCapture, or for GStreamer pipelines a GstCapture (same interface); None when the
    source cannot be opened now."""
    import cv2

    if spec.kind == "gstreamer":  # through GStreamer itself: PyPI's OpenCV has no GStreamer
        from dualkd_edge.stream.capture.gstreamer import GstCapture

        return GstCapture.open(spec, policy.open_timeout_ms, policy.read_timeout_ms, stats)
    if spec.kind == "camera":
        cap = cv2.VideoCapture(int(spec.target))
    else:
        if spec.target.lower().startswith(("rtsp://", "rtsps://")) and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            # RTP over the RTSP TCP connection: no lost UDP packets (smeared frames) on busy factory
            # networks, and it passes firewalls. Set OPENCV_FFMPEG_CAPTURE_OPTIONS to override.
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, policy.open_timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, policy.read_timeout_ms]
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class CaptureWorker(threading.Thread):
    def __init__(self, index: int, spec: SourceSpec, stop: threading.Event, policy: RetryPolicy,
                 queue_size: int = 2, arrived: threading.Event | None = None,
                 make_input: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(name=f"capture-{index}", daemon=True)
        self.index = index
        self.spec = spec
        self.stop_event = stop
        self.policy = policy
        self.stats = SourceStats(spec.name, spec.live)
        # Live: a short burst is buffered, newest-wins only when behind (LiveFrameQueue); files: the
        # capture waits for the pipeline (nothing is ever dropped).
        self.queue = (LiveFrameQueue(drops=self.stats.dropped_by_cause) if spec.live
                      else queue.Queue(maxsize=queue_size))
        self.finished = threading.Event()
        self.fps: float | None = None
        self.last_delivery: float | None = None  # perf_counter() of the last frame handed over
        # Set after every frame handed over and at the end: the pipeline sleeps on it instead of polling.
        self.arrived = arrived if arrived is not None else threading.Event()
        self.make_input = make_input

    # -- delivery -------------------------------------------------------------------------------
    def _deliver(self, frame: Frame) -> bool:
        """Hand `frame` to the pipeline; False when it was skipped (no model can take it)."""
        if self.make_input is not None:  # after t_ready: e2e latency still counts the resize
            t0 = time.perf_counter()
            try:
                frame.model_input = self.make_input(frame.image)
            except Exception as exc:  # noqa: BLE001 - ValueError, cv2.error: a frame no model can take is skipped
                log.warning("%s: skipping frame %d (%s)", self.spec.name, frame.index, exc)
                self.stats.corrupted += 1
                return False
            frame.resize_ms = (time.perf_counter() - t0) * 1e3
        self.last_delivery = frame.t_ready
        if self.spec.live:
            self.stats.dropped += self.queue.put_nowait(frame)  # by cause: counted in stats by the queue
            self.arrived.set()
            return True
        while not self.stop_event.is_set():
            try:
                self.queue.put(frame, timeout=0.1)
                self.arrived.set()
                return True
            except queue.Full:
                continue
        return True  # read, and left unscored by the stop (as before)

    def _frame(self, n: int, t0: float, image: np.ndarray) -> Frame:
        now = time.perf_counter()
        return Frame(self.index, self.spec.name, n, time.time(), now, (now - t0) * 1e3, image)

    # -- sources --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.spec.kind == "unavailable":
                self.stats.errors.append(self.spec.problem)
            elif self.spec.kind in ("image", "images"):
                self._run_files()
            else:
                self._run_capture()
        except Exception as exc:  # noqa: BLE001 - a broken source must not take the pipeline down
            self.stats.errors.append(redact(f"{self.spec.name}: {type(exc).__name__}: {exc}"))
            log.error("%s: %s", self.spec.name, exc)
        finally:
            self.finished.set()
            self.arrived.set()

    def _run_files(self) -> None:
        images, others = image_files_only(self.spec.files)
        for other in others:
            log.warning("%s: skipping %s (not an image)", self.spec.name, other.name)
            self.stats.skipped_files += 1
        self.stats.opened = True
        n = 0
        for path in images:
            if self.stop_event.is_set():
                return
            t0 = time.perf_counter()
            img = read_image(path)
            if img is None:
                log.warning("%s: skipping unreadable image %s", self.spec.name, path.name)
                self.stats.skipped_files += 1
                continue
            frame = self._frame(n, t0, img)
            frame.source_name = str(path)
            if not self._deliver(frame):  # counted as corrupted, not as a frame read
                continue
            self.stats.frames += 1
            n += 1
        if n == 0:  # nothing usable: not a success, whatever was skipped
            what = "is not a readable image" if self.spec.kind == "image" else \
                f"holds no readable image ({len(self.spec.files)} file(s) skipped)"
            self.stats.errors.append(f"{self.spec.name}: {what}")

    def _open_with_retries(self, reconnect: bool):
        attempt = 0
        while not self.stop_event.is_set():
            cap = open_capture(self.spec, self.policy, self.stats)
            if cap is not None:
                return cap
            if not reconnect:
                self.stats.open_failures += 1
            if not self.spec.reconnects:
                return None
            attempt += 1
            if attempt > self.policy.max_retries:
                return None
            delay = self.policy.delay(attempt)
            log.warning("%s: %s failed; retry %d/%d in %.1f s", self.spec.name,
                        "reconnect" if reconnect else "open", attempt, self.policy.max_retries, delay)
            self.stop_event.wait(delay)
        return None

    def _run_capture(self) -> None:
        import cv2

        cap = self._open_with_retries(reconnect=False)
        if cap is None:
            if not self.stop_event.is_set():
                self.stats.errors.append(f"{self.spec.name}: could not be opened")
            return
        self.stats.opened = True
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        if self.spec.kind == "video":
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.stats.expected_frames = int(count) if count and count > 0 else None
        n = 0
        try:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                ok = cap.grab()
                if not ok:
                    if not self.spec.reconnects:
                        if getattr(cap, "error", None):  # a pipeline that failed rather than ended
                            self.stats.errors.append(f"{self.spec.name}: {cap.error}")
                        else:
                            self._check_complete()
                        return  # end of file
                    cap.release()
                    log.warning("%s: stream lost (closed, or no frame within the %.1f s read timeout); "
                                "reconnecting", self.spec.name, self.policy.read_timeout_ms / 1000)
                    cap = self._open_with_retries(reconnect=True)
                    if cap is None:
                        if not self.stop_event.is_set():
                            self.stats.errors.append(f"{self.spec.name}: lost and not reconnected after "
                                                     f"{self.policy.max_retries} retries")
                        return
                    self.stats.reconnects += 1
                    log.info("%s: reconnected", self.spec.name)
                    continue
                ok, img = cap.retrieve()
                if not ok or img is None or img.size == 0:
                    self.stats.corrupted += 1
                    continue
                if not self._deliver(self._frame(n, t0, img)):  # counted as corrupted
                    continue
                self.stats.frames += 1
                n += 1
        finally:
            if cap is not None:
                cap.release()

    def _check_complete(self) -> None:
        """At the end of a video file: were all its frames read? A file cut short (a copy that
        did not finish, a recording that ran out of disk) decodes up to where it ends; that is a
        failure, not a shorter video. Containers whose count is an estimate may be off by a few."""
        read = self.stats.frames + self.stats.corrupted
        expected = self.stats.expected_frames
        cut = mpegts_cut_short(Path(self.spec.target))
        if read == 0:
            self.stats.errors.append(f"{self.spec.name}: no frame could be decoded")
        elif cut:
            self.stats.errors.append(f"{self.spec.name}: read {read} frames, then {cut}; the recording is truncated")
        elif expected is not None and expected - read > max(2, expected // 50):
            self.stats.errors.append(f"{self.spec.name}: read {read} of the {expected} frames its container "
                                     "announces; the file is truncated or damaged")
        elif expected is not None and read != expected:
            log.info("%s: read %d frames, the container announces %d", self.spec.name, read, expected)


TS_PACKET = 188
TS_SYNC = 0x47
TS_SUFFIXES = (".ts", ".trp")  # 188-byte packets (.m2ts/.mts have 192)


def mpegts_cut_short(path: Path) -> str | None:
    """An MPEG-TS file states no frame count, but it is a sequence of 188-byte packets that each start
    with 0x47: a file that ends inside a packet was cut (a recording that lost power, a copy that
    did not finish). What is wrong, or None (not MPEG-TS, or whole)."""
    if path.suffix.lower() not in TS_SUFFIXES:
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < TS_PACKET or f.read(1) != bytes([TS_SYNC]):
                return None  # not a plain 188-byte TS: nothing to say
            tail = size % TS_PACKET
            f.seek(size - tail - TS_PACKET)
            last_whole = f.read(1)
    except OSError:
        return None
    if tail:
        return f"the file ends {tail} bytes into a {TS_PACKET}-byte packet"
    if last_whole != bytes([TS_SYNC]):
        return "its last packet has lost its sync byte"
    return None
