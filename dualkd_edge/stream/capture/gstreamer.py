"""GStreamer capture through GStreamer itself: PyGObject's `Gst` runs the pipeline and an appsink
hands over BGR frames.

PyPI's OpenCV is built without GStreamer (and on a Jetson it would shadow JetPack's), so pipelines
such as `nvarguscamerasrc ... ! appsink` or `rtspsrc ... ! nvv4l2decoder ...` never go through
cv2.VideoCapture. `GstCapture` offers the part of cv2.VideoCapture's interface that the capture
worker uses (grab, retrieve, get(CAP_PROP_FPS), release), so both backends share one capture loop
with the same live-source semantics (capture.py): newest frame, drop count, reconnect with backoff.

Liveness comes from GStreamer: a pipeline whose source is live (a camera, RTSP, `is-live=true`)
answers NO_PREROLL when paused; its appsink keeps only the newest frame (`drop=true max-buffers=1`)
and a lost stream is reopened. Any other pipeline (a file, `videotestsrc`) hands over every frame in
order and ends at its EOS."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace

import numpy as np

from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.stream.capture.sources import SourceSpec, redact

log = logging.getLogger("dualkd_edge")

INSTALL = ("pip install 'dualkd-edge[gstreamer]' and the OS packages listed in docs/streams.md, "
           "'GStreamer capture'")

# Where a missing element comes from, for the one-line error that names it.
_JETSON_ONLY = {
    "nvv4l2decoder": "this is not a Jetson; use avdec_h264 (or avdec_h265)",
    "nvvidconv": "this is not a Jetson; use videoconvert",
    "nvvideoconvert": "this is not a Jetson or DeepStream machine; use videoconvert",
    "nvarguscamerasrc": "this is not a Jetson with JetPack's camera stack; use v4l2src for a USB camera",
    "nvv4l2camerasrc": "this is not a Jetson with JetPack's camera stack; use v4l2src for a USB camera",
}
_PACKAGES = {
    "gstreamer1.0-plugins-base": ("appsink", "videoconvert", "videoscale", "videorate", "videotestsrc",
                                  "decodebin", "uridecodebin", "parsebin", "playbin"),
    "gstreamer1.0-plugins-good": ("rtspsrc", "rtph264depay", "rtph265depay", "rtpjpegdepay", "v4l2src",
                                  "jpegdec", "souphttpsrc", "multipartdemux", "qtdemux", "matroskademux", "udpsrc"),
    "gstreamer1.0-plugins-bad": ("h264parse", "h265parse", "mpegtsdemux", "tsdemux"),
    "gstreamer1.0-plugins-ugly": ("x264enc",),
    "gstreamer1.0-libav": ("avdec_h264", "avdec_h265", "avdec_mjpeg"),
}

_gst = None


def load_gst():
    """The initialised `Gst` module, or a one-line error saying what to install."""
    global _gst
    if _gst is not None:
        return _gst
    try:
        import gi
    except ImportError:
        raise MissingDependencyError(f"GStreamer pipelines need PyGObject (module 'gi'): {INSTALL}") from None
    try:
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ValueError, ImportError):
        raise MissingDependencyError("GStreamer is not installed (no Gst-1.0 introspection data): apt install "
                                     "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good") from None
    Gst.init(None)
    _gst = Gst
    return Gst


def element_hint(name: str) -> str:
    if name in _JETSON_ONLY:
        return _JETSON_ONLY[name]
    for package, elements in _PACKAGES.items():
        if name in elements or (package == "gstreamer1.0-libav" and name.startswith("avdec_")):
            return f"install {package}"
    return "check the name with gst-inspect-1.0"


def explain_parse_error(message: str) -> str:
    missing = re.match(r'no element "([^"]+)"', message)
    if missing:
        name = missing.group(1)
        return f"no element {name}: {element_hint(name)}"
    return message


def has_element(name: str) -> bool:
    return load_gst().ElementFactory.find(name) is not None


def _sinks(bin_) -> list:
    it = bin_.iterate_sinks()
    found = []
    while True:
        result, element = it.next()
        if result != load_gst().IteratorResult.OK:
            return found
        found.append(element)


def build_pipeline(description: str, name: str):
    """(pipeline, appsink): the description parsed; one that does not end in a sink gets
    `videoconvert ! appsink` appended. Mistakes in it are UserErrors naming the source."""
    Gst = load_gst()
    from gi.repository import GLib

    for attempt in (description, f"{description} ! videoconvert ! appsink"):
        try:
            element = Gst.parse_launch(attempt)
        except GLib.Error as exc:
            raise UserError(f"SOURCE: {name}: {redact(explain_parse_error(exc.message))}") from None
        pipeline = element if isinstance(element, Gst.Pipeline) else None
        sinks = _sinks(pipeline) if pipeline is not None else []
        if sinks:
            break
    kinds = [s.get_factory().get_name() for s in sinks]
    if kinds.count("appsink") != 1 or len(kinds) != 1:
        raise UserError(f"SOURCE: {name}: the pipeline must end in one appsink (frames reach dualkd-edge "
                        f"through it); it has {', '.join(kinds) or 'no sink'}")
    return pipeline, sinks[0]


def configure_appsink(sink, live: bool) -> None:
    """BGR frames; a live source keeps only the newest, anything else waits for the reader."""
    Gst = load_gst()
    sink.set_property("caps", Gst.Caps.from_string("video/x-raw,format=BGR"))
    sink.set_property("emit-signals", False)
    sink.set_property("sync", False)  # hand frames over as they come, never wait for the clock
    sink.set_property("drop", live)
    sink.set_property("max-buffers", 1 if live else 2)


def _bus_error(pipeline, timeout_ns: int = 0) -> str | None:
    """The first error on the pipeline's bus, redacted ('end of stream' for EOS), or None."""
    Gst = load_gst()
    msg = pipeline.get_bus().timed_pop_filtered(timeout_ns, Gst.MessageType.ERROR | Gst.MessageType.EOS)
    if msg is None:
        return None
    if msg.type == Gst.MessageType.EOS:
        return "end of stream"
    err, debug = msg.parse_error()
    detail = err.message
    if "not-negotiated" in (debug or ""):
        detail += " (the pipeline cannot deliver BGR frames: put videoconvert before appsink)"
    return redact(f"{msg.src.get_name()}: {detail}")


def prepare_gstreamer_source(spec: SourceSpec, preroll_seconds: float = 10.0) -> SourceSpec:
    """Check a pipeline before any thread starts and learn whether it is live; mistakes are
    UserErrors in the main thread rather than a failed capture thread. A pipeline that is not live
    (a file, `videotestsrc`) is prerolled: its first frame must reach the appsink as BGR."""
    Gst = load_gst()
    pipeline, sink = build_pipeline(spec.target, spec.name)
    configure_appsink(sink, live=False)
    try:
        ret = pipeline.set_state(Gst.State.PAUSED)
        if ret == Gst.StateChangeReturn.ASYNC:
            ret = pipeline.get_state(int(preroll_seconds * Gst.SECOND))[0]
        if ret == Gst.StateChangeReturn.FAILURE:
            raise UserError(f"SOURCE: {spec.name}: {_bus_error(pipeline, Gst.SECOND) or 'it cannot start'}")
        return replace(spec, live=ret == Gst.StateChangeReturn.NO_PREROLL)
    finally:
        pipeline.set_state(Gst.State.NULL)


def rtsp_pipeline(url: str, latency_ms: int = 200) -> str:
    """rtspsrc -> depay -> parse -> decoder for an H.264 camera: nvv4l2decoder (the Jetson's hardware
    decoder) where it exists, else avdec_h264. RTP over TCP, as the OpenCV path uses."""
    if '"' in url:
        raise UserError(f"SOURCE: {redact(url)}: a URL with a double quote cannot go into a GStreamer pipeline")
    head = f'rtspsrc location="{url}" latency={latency_ms} protocols=tcp ! rtph264depay ! h264parse'
    if has_element("nvv4l2decoder"):
        return f"{head} ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink"
    if not has_element("avdec_h264"):
        raise UserError(f"--decoder gstreamer: no element avdec_h264: {element_hint('avdec_h264')}")
    return f"{head} ! avdec_h264 ! videoconvert ! appsink"


def decode_with_gstreamer(spec: SourceSpec) -> SourceSpec:
    """`--decoder gstreamer`: an rtsp:// source becomes the pipeline of `rtsp_pipeline`; other
    URLs (HTTP MJPEG, ...) stay with OpenCV."""
    if spec.kind != "url" or not spec.target.lower().startswith(("rtsp://", "rtsps://")):
        return spec
    pipeline = rtsp_pipeline(spec.target)
    log.info("%s: decoding with GStreamer: %s", spec.name, redact(pipeline))
    return replace(spec, kind="gstreamer", target=pipeline)


def sample_to_bgr(sample) -> np.ndarray:
    """An appsink sample (video/x-raw BGR, rows padded to 4 bytes) as an HxWx3 uint8 array."""
    caps = sample.get_caps().get_structure(0)
    w, h = caps.get_value("width"), caps.get_value("height")
    buf = sample.get_buffer()
    data = buf.extract_dup(0, buf.get_size())
    stride = len(data) // h
    rows = np.frombuffer(data, np.uint8, count=stride * h).reshape(h, stride)
    return np.ascontiguousarray(rows[:, :w * 3]).reshape(h, w, 3)


class GstCapture:
    """A running pipeline read like a cv2.VideoCapture by the capture worker."""

    POLL_NS = 100_000_000  # pull in 0.1 s slices so a bus error ends a read at once

    def __init__(self, pipeline, sink, spec: SourceSpec, read_timeout_ms: int, stats=None) -> None:
        self.pipeline = pipeline
        self.sink = sink
        self.spec = spec
        self.read_timeout_ms = read_timeout_ms
        self.stats = stats  # SourceStats: appsink drops are added to its `dropped`
        self.fps: float | None = None
        self.error: str | None = None  # why the last grab failed (None: end of a file)
        self._sample = None
        self._pending = None
        self._arrived = 0  # buffers that reached the appsink (streaming thread)
        self._pulled = 0
        self._dropped = 0
        sink.get_static_pad("sink").add_probe(load_gst().PadProbeType.BUFFER, self._count_arrival)

    def _count_arrival(self, _pad, _info):
        self._arrived += 1
        return load_gst().PadProbeReturn.OK

    @classmethod
    def open(cls, spec: SourceSpec, open_timeout_ms: int, read_timeout_ms: int, stats=None) -> "GstCapture | None":
        Gst = load_gst()
        pipeline, sink = build_pipeline(spec.target, spec.name)
        configure_appsink(sink, spec.live)
        cap = cls(pipeline, sink, spec, read_timeout_ms, stats)
        if pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE:
            cap._pending = cap._pull(open_timeout_ms)
        if cap._pending is None:
            log.warning("%s: could not start: %s", spec.name, cap.error or _bus_error(pipeline) or
                        f"no frame within {open_timeout_ms / 1000:.1f} s")
            cap.release()
            return None
        rate = cap._pending.get_caps().get_structure(0).get_fraction("framerate")
        if rate[0] and rate[2]:
            cap.fps = rate[1] / rate[2]
        return cap

    def _pull(self, timeout_ms: int):
        """The next sample, or None at EOS, on a pipeline error (kept in `error`) or after the timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            sample = self.sink.emit("try-pull-sample", self.POLL_NS)
            if sample is not None:
                self._pulled += 1
                return sample
            problem = _bus_error(self.pipeline)
            if problem is not None or self.sink.get_property("eos"):
                self.error = None if problem in (None, "end of stream") else problem
                return None
            if time.monotonic() > deadline:
                self.error = f"no frame for {timeout_ms / 1000:.1f} s"
                return None

    def _account_drops(self) -> None:
        """Buffers the appsink dropped for newer ones: all that arrived but were not pulled, less
        the one it may still hold (exact once the stream has ended)."""
        if not self.spec.live:
            return  # the appsink waits for the reader: nothing is dropped
        lost = self._arrived - self._pulled - 1
        if self.stats is not None and lost > self._dropped:
            self.stats.dropped += lost - self._dropped
            self.stats.dropped_by_cause["behind"] += lost - self._dropped  # the appsink kept the newest
            self._dropped = lost

    def grab(self) -> bool:
        sample, self._pending = self._pending, None
        if sample is None:
            sample = self._pull(self.read_timeout_ms)
        self._sample = sample
        self._account_drops()
        if sample is None and self.error and self.spec.live:
            log.warning("%s: %s", self.spec.name, self.error)
        return sample is not None

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        if self._sample is None:
            return False, None
        return True, sample_to_bgr(self._sample)

    def get(self, prop: int) -> float:
        import cv2

        return float(self.fps or 0.0) if prop == cv2.CAP_PROP_FPS else 0.0

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoCapture's name
        return True

    def release(self) -> None:
        self.pipeline.set_state(load_gst().State.NULL)
