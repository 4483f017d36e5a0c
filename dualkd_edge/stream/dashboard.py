"""`--http HOST:PORT`: the operator page and the monitoring endpoints of a running `infer`.

  /                 the operator page (dashboard.html): per source the last decision in large letters,
                    OK/NG counters, FPS, p50/p99 latency, the live overlay video, the last NG frames
  /stream.mjpg?source=N   live overlay video (MJPEG, at most `video_fps` frames per second)
  /frame.jpg?source=N     the newest overlay as one JPEG
  /ng/ID.jpg        one of the last NG frames with its heat map
  /metrics          Prometheus text format
  /api/summary      the page's data as JSON
  /healthz          200 while frames arrive, 503 when none came for `stale_after` seconds

The sink part (`write`) only updates counters in the inference thread; overlays are drawn and
encoded in the server's threads, once per frame whoever watches. The standard library's threaded
HTTP server is enough for a handful of operator screens and a Prometheus scraper. There is no
authentication: bind to 127.0.0.1 (the default) and put a reverse proxy in front, or bind to a
trusted line network on purpose (`--http 0.0.0.0:8080`)."""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from dualkd_edge.errors import UserError
from dualkd_edge.stream.live_metrics import LiveMetrics
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.sinks import Sink

log = logging.getLogger("dualkd_edge")

MAX_VIDEO_CLIENTS = 8  # each MJPEG viewer holds a thread; encoding is shared


def parse_bind(text: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT (then 127.0.0.1); [::1]:PORT for IPv6; port 0: any free one (logged)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--http: expected HOST:PORT or PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def encode_jpeg(image, max_width: int, quality: int = 80) -> bytes:
    import cv2

    if image.shape[1] > max_width:
        image = cv2.resize(image, (max_width, round(image.shape[0] * max_width / image.shape[1])),
                           interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


class JpegCache:
    """Overlays as JPEG, drawn and encoded once per frame whoever asks; the oldest entries go when
    more than `max_entries` are kept."""

    def __init__(self, max_width: int, max_entries: int = 64) -> None:
        self.max_width = max_width
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.cache: dict[object, tuple[int, bytes]] = {}

    def get(self, key: object, version: int, result: FrameResult) -> bytes:
        with self.lock:
            hit = self.cache.get(key)
            if hit and hit[0] == version:
                return hit[1]
        jpg = encode_jpeg(result.overlay(), self.max_width)
        with self.lock:
            self.cache.pop(key, None)
            self.cache[key] = (version, jpg)
            while len(self.cache) > self.max_entries:
                self.cache.pop(next(iter(self.cache)))
        return jpg


class Dashboard(Sink):
    """A sink that serves what it sees. `bind(runner)` lets it show the capture threads' drops and
    reconnects and the other sinks' deliveries (`infer --http` does it)."""

    shows_pictures = True  # the runner then makes the overlay painter; drawing happens on request

    def __init__(self, bind: str, model: str = "", threshold: float = 0.5, video_fps: float = 10.0,
                 stale_after: float = 10.0) -> None:
        self.host, self.port = parse_bind(bind)
        self.model = model
        self.threshold = threshold
        self.video_fps = video_fps
        self.stale_after = stale_after
        self.metrics = LiveMetrics()
        self.video = JpegCache(max_width=960)
        self.thumbs = JpegCache(max_width=480, max_entries=16)
        self.runner = None
        self.running = True
        self.video_clients = threading.Semaphore(MAX_VIDEO_CLIENTS)
        try:
            self.httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        except OSError as exc:
            raise UserError(f"--http {bind}: cannot listen there ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]  # the real one when 0 was asked for
        threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True).start()
        log.info("dashboard on %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def bind(self, runner) -> "Dashboard":
        self.runner = runner
        return self

    # -- the sink --------------------------------------------------------------------------------
    def write(self, result: FrameResult) -> None:
        self.metrics.observe(result)

    def close(self) -> list[str]:
        self.running = False
        self.httpd.shutdown()
        self.httpd.server_close()
        return []

    # -- what the pages show ---------------------------------------------------------------------
    def _source_stats(self) -> list:
        return self.runner.source_stats() if self.runner is not None else []

    def _deliveries(self) -> list:
        sinks = self.runner.sinks if self.runner is not None else []
        return [s.delivery for s in sinks if getattr(s, "delivery", None) is not None]

    @property
    def current_threshold(self) -> float:
        """The threshold deciding now (a hot swap or a new calibration may have changed it)."""
        return self.runner.det.threshold if self.runner is not None else self.threshold

    def summary(self) -> dict:
        decided = ({"model_id": self.runner.model_id, "calibration": self.runner.det.calibration.name}
                   if self.runner is not None else {})
        return {"model": self.model, "threshold": self.current_threshold, "running": self.running, **decided,
                **self.metrics.summary(self._source_stats(), self._deliveries())}

    def health(self) -> tuple[int, dict]:
        age = self.metrics.last_frame_age()
        if age is None:
            state = "starting"
        else:
            state = "ok" if age <= self.stale_after else "stalled"
        code = HTTPStatus.OK if state in ("ok", "starting") else HTTPStatus.SERVICE_UNAVAILABLE
        return code, {"status": state, "last_frame_age_s": None if age is None else round(age, 3)}

    def _handler(self):
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # requests are not worth a log line each
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                try:
                    dashboard._route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer went away

        return Handler

    def _route(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        source = int(query.get("source", ["0"])[0]) if query.get("source", ["0"])[0].isdigit() else 0
        if url.path == "/":
            page = resources.files("dualkd_edge.stream").joinpath("dashboard.html").read_bytes()
            self._send(req, HTTPStatus.OK, "text/html; charset=utf-8", page)
        elif url.path == "/metrics":
            text = self.metrics.prometheus(self._source_stats(), self._deliveries(), self.current_threshold)
            self._send(req, HTTPStatus.OK, "text/plain; version=0.0.4; charset=utf-8", text.encode())
        elif url.path == "/api/summary":
            self._send(req, HTTPStatus.OK, "application/json", json.dumps(self.summary()).encode())
        elif url.path == "/healthz":
            code, body = self.health()
            self._send(req, code, "application/json", json.dumps(body).encode())
        elif url.path == "/frame.jpg":
            version, result = self.metrics.latest(source)
            if result is None:
                self._send(req, HTTPStatus.NOT_FOUND, "text/plain", b"no frame yet\n")
            else:
                self._send(req, HTTPStatus.OK, "image/jpeg", self.video.get(source, version, result))
        elif url.path == "/stream.mjpg":
            self._stream(req, source)
        elif url.path.startswith("/ng/") and url.path.endswith(".jpg") and url.path[4:-4].isdigit():
            result = self.metrics.ng_result(int(url.path[4:-4]))
            if result is None:
                self._send(req, HTTPStatus.NOT_FOUND, "text/plain", b"no longer kept\n")
            else:
                self._send(req, HTTPStatus.OK, "image/jpeg", self.thumbs.get(url.path, 0, result))
        else:
            self._send(req, HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, ctype: str, body: bytes) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)

    def _stream(self, req: BaseHTTPRequestHandler, source: int) -> None:
        """multipart/x-mixed-replace: a new JPEG part whenever the source has a new frame."""
        if not self.video_clients.acquire(blocking=False):
            self._send(req, HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many video viewers\n")
            return
        try:
            req.send_response(HTTPStatus.OK)
            req.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            req.send_header("Cache-Control", "no-store")
            req.send_header("Connection", "close")
            req.end_headers()
            sent = -1
            while self.running:
                t0 = time.monotonic()
                version, result = self.metrics.latest(source)
                if result is not None and version != sent:
                    jpg = self.video.get(source, version, result)
                    req.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                    + f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                    req.wfile.flush()
                    sent = version
                time.sleep(max(0.0, 1.0 / self.video_fps - (time.monotonic() - t0)))
        finally:
            req.close_connection = True
            self.video_clients.release()
