"""`--http HOST:PORT`: the operator page and the monitoring endpoints of a running `infer`.

  /                 the operator page (dashboard.html): per source the last decision in large letters,
                    OK/NG counters, FPS, p50/p99 latency, the live overlay video, the last NG frames
  /stream.mjpg?source=N   live overlay video (MJPEG, at most `video_fps` frames per second)
  /frame.jpg?source=N     the newest overlay as one JPEG
  /ng/ID.jpg        one of the last NG frames with its heat map
  /metrics          Prometheus text format
  /api/summary      the page's data as JSON
  /healthz          200 while frames arrive, 503 when none came for `stale_after` seconds or a source
                    never opened (no token needed: for load balancers and watchdogs)

The sink part (`write`) only updates counters in the inference thread; overlays are drawn and
encoded in the server's threads, once per frame whoever watches. The standard library's threaded
HTTP server, hardened in http_guard.py (connection cap, time-outs, Host check, security headers,
token), is enough for a handful of operator screens and a Prometheus scraper. Bound beyond loopback
it requires a token (`--http-token-file`, or one generated and printed once); see docs/security.md."""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from dualkd_edge.errors import UserError
from dualkd_edge.stream.dashboard.http_guard import (
    TOKEN_COOKIE,
    GuardedHTTPServer,
    Tokens,
    content_security_policy,
    generated_token,
    host_allowed,
    is_loopback,
    parse_bind,
    security_headers,
)
from dualkd_edge.stream.dashboard.live_metrics import LiveMetrics
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.outputs.sinks import Sink

log = logging.getLogger("dualkd_edge")

MAX_VIDEO_CLIENTS = 8  # each MJPEG viewer holds a thread; encoding is shared
SLOW_VIEWER_S = 5.0  # a video viewer whose socket takes no data this long is dropped
VIDEO_SEND_BUFFER = 256 * 1024
START_GRACE_S = 10.0  # /healthz says "starting" this long before a source that has not opened is a failure
_SOURCE = re.compile(r"[0-9]{1,4}")
_NG_PATH = re.compile(r"/ng/([0-9]{1,12})\.jpg")


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
                 stale_after: float = 10.0, tokens: Tokens | None = None) -> None:
        self.host, self.port = parse_bind(bind)
        self.model = model
        self.threshold = threshold
        self.video_fps = video_fps
        self.stale_after = stale_after
        self.metrics = LiveMetrics()
        self.video = JpegCache(max_width=960)
        self.thumbs = JpegCache(max_width=480, max_entries=16)
        self.runner = None
        self.review = None  # review.api.ReviewApi with `infer --review`
        self.answer_tokens = Tokens()
        self.running = True
        self.video_clients = threading.Semaphore(MAX_VIDEO_CLIENTS)
        self.slow_viewers_dropped = 0
        self.page = resources.files("dualkd_edge.stream.dashboard").joinpath("dashboard.html").read_bytes()
        self.headers = security_headers(content_security_policy(self.page.decode()))
        # Beyond loopback a token is required: the one given, or one made now and shown once.
        self.tokens = tokens if tokens is not None else (Tokens() if is_loopback(self.host) else generated_token())
        try:
            self.httpd = GuardedHTTPServer((self.host, self.port), self._handler())
        except OSError as exc:
            raise UserError(f"--http {bind}: cannot listen there ({exc.strerror or exc})") from None
        self.port = self.httpd.server_address[1]  # the real one when 0 was asked for
        threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True).start()
        log.info("dashboard on %s%s", self.url, " (token required)" if self.tokens.required else "")
        if tokens is None and self.tokens.required:
            token = next(iter(self.tokens.by_token))
            # print, not log: the log's redaction would hide it, and it is shown this once only
            print(f"dashboard token (shown once; give --http-token-file F to choose it): {token}\n"
                  f"  open {self.url}?token={token}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def bind(self, runner) -> "Dashboard":
        self.runner = runner
        review = next((s for s in runner.sinks if getattr(s, "store", None) is not None), None)
        if review is not None:
            from dualkd_edge.review.api import ReviewApi

            self.review = ReviewApi(review.store, review.stats)
            if not self.tokens.required:  # answering always needs a token, on loopback too
                self.answer_tokens = generated_token()
                token = next(iter(self.answer_tokens.by_token))
                print(f"review answers need this token (shown once; give --http-token-file F to choose it): {token}\n"
                      f"  open {self.url}review?token={token}", file=sys.stderr, flush=True)
        return self

    def answer_token(self, req: BaseHTTPRequestHandler) -> str | None:
        """Who answers a review item: the name of a valid token (route tokens, else the answer token)."""
        tokens = self.tokens if self.tokens.required else self.answer_tokens
        return self.who(req, tokens)

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
        """ok / stalled (no frame for `stale_after`) / starting (before the first frame, within the
        first START_GRACE_S) / source_failed (a source still not opened after that: its camera is
        down, nothing is inspected) / no_frames (all opened, none delivered)."""
        age = self.metrics.last_frame_age()
        never_opened = [s for s in self._source_stats() if not s.opened and (s.errors or s.open_failures)]
        uptime = time.time() - self.metrics.started
        if never_opened and uptime > START_GRACE_S:
            state = "source_failed"
        elif age is None:
            state = "starting" if uptime <= START_GRACE_S else "no_frames"
        else:
            state = "ok" if age <= self.stale_after else "stalled"
        code = HTTPStatus.OK if state in ("ok", "starting") else HTTPStatus.SERVICE_UNAVAILABLE
        body = {"status": state, "last_frame_age_s": None if age is None else round(age, 3)}
        if never_opened:
            body["sources_not_open"] = [s.name for s in never_opened]
        return code, body

    def _handler(self):
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version, sys_version = "dualkd-edge", ""  # no software versions to the network

            def log_message(self, *args) -> None:  # requests are not worth a log line each
                pass

            def parse_request(self) -> bool:
                complete = super().parse_request()  # reads the headers
                dashboard.httpd.mark(self.connection, busy=True)  # the head arrived within its deadline
                return complete

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                finally:  # waiting for the next request on this connection: a new head deadline
                    dashboard.httpd.mark(self.connection, busy=False)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                try:
                    dashboard._guarded(self)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True  # the viewer went away or stopped reading
                except Exception as exc:  # noqa: BLE001 - a bad request must not print a traceback
                    dashboard._internal_error(self, exc)

        return Handler

    def _internal_error(self, req: BaseHTTPRequestHandler, exc: Exception) -> None:
        log.warning("dashboard: %s %r failed (%s: %s)", req.command, req.path[:80], type(exc).__name__, exc)
        req.close_connection = True
        try:
            self.send(req, HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n")
        except OSError:
            pass

    def _guarded(self, req: BaseHTTPRequestHandler) -> None:
        """Host check, token check (every route but /healthz), then the route."""
        if not host_allowed(req.headers.get("Host"), self.host, self.port):
            self.send(req, HTTPStatus.MISDIRECTED_REQUEST, "text/plain", b"unknown Host\n")
            return
        url = urlsplit(req.path)
        query_token = parse_qs(url.query).get("token", [None])[0]
        if query_token and url.path in ("/", "/review") and (self.tokens.who(query_token) or
                                                            self.answer_tokens.who(query_token)):
            # the operator opened the link with ?token=: keep it in a cookie, out of the address bar
            req.send_response(HTTPStatus.SEE_OTHER)
            req.send_header("Location", url.path)
            req.send_header("Set-Cookie", f"{TOKEN_COOKIE}={query_token}; HttpOnly; SameSite=Strict; Path=/")
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        if url.path != "/healthz" and self.tokens.required and self.who(req) is None:
            self.send(req, HTTPStatus.UNAUTHORIZED, "text/plain", b"token required\n",
                      [("WWW-Authenticate", 'Bearer realm="dualkd-edge"')])
            return
        if self.review is not None and self.review.handles(url.path):
            (self.review.post if req.command == "POST" else self.review.get)(self, req, url.path)
        elif req.command == "POST":
            self.send(req, HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET only here\n", [("Allow", "GET")])
        else:
            self._route(req, url)

    def who(self, req: BaseHTTPRequestHandler, tokens: Tokens | None = None) -> str | None:
        """The name of the token a request carries (Bearer header or the page's cookie)."""
        tokens = tokens or self.tokens
        auth = req.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            return tokens.who(auth[7:].strip())
        for part in (req.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return tokens.who(value)
        return None

    def _route(self, req: BaseHTTPRequestHandler, url) -> None:
        query = parse_qs(url.query)
        raw_source = query.get("source", ["0"])[0]
        if not _SOURCE.fullmatch(raw_source):
            self.send(req, HTTPStatus.BAD_REQUEST, "text/plain", b"source: expected a number\n")
            return
        source = int(raw_source)
        ng = _NG_PATH.fullmatch(url.path)
        if url.path == "/":
            self.send(req, HTTPStatus.OK, "text/html; charset=utf-8", self.page)
        elif url.path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

            text = self.metrics.prometheus(self._source_stats(), self._deliveries(), self.current_threshold)
            self.send(req, HTTPStatus.OK, CONTENT_TYPE_PLAIN_0_0_4, text.encode())
        elif url.path == "/api/summary":
            self.send(req, HTTPStatus.OK, "application/json", json.dumps(self.summary()).encode())
        elif url.path == "/healthz":
            code, body = self.health()
            self.send(req, code, "application/json", json.dumps(body).encode())
        elif url.path == "/frame.jpg":
            version, result = self.metrics.latest(source)
            if result is None:
                self.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"no frame yet\n")
            else:
                self.send(req, HTTPStatus.OK, "image/jpeg", self.video.get(source, version, result))
        elif url.path == "/stream.mjpg":
            self._stream(req, source)
        elif ng is not None:
            result = self.metrics.ng_result(int(ng.group(1)))
            if result is None:
                self.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"no longer kept\n")
            else:
                self.send(req, HTTPStatus.OK, "image/jpeg", self.thumbs.get(url.path, 0, result))
        else:
            self.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    def send(self, req: BaseHTTPRequestHandler, code: int, ctype: str, body: bytes,
             extra: list[tuple[str, str]] = (), page: bytes | None = None) -> None:
        """One whole response with the security headers (`page`: an HTML page whose own inline
        script and style the Content-Security-Policy allows)."""
        headers = self.headers if page is None or page is self.page else security_headers(
            content_security_policy(page.decode()))
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        for name, value in [*headers, *extra]:
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(body)

    def _stream(self, req: BaseHTTPRequestHandler, source: int) -> None:
        """multipart/x-mixed-replace: a new JPEG part whenever the source has a new frame. A viewer
        that stops reading (its socket not writable for SLOW_VIEWER_S) is dropped, freeing its slot."""
        if not self.video_clients.acquire(blocking=False):
            self.send(req, HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many video viewers\n")
            return
        try:
            # a small send buffer: a viewer that does not read is noticed in seconds, not megabytes
            req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIDEO_SEND_BUFFER)
            req.send_response(HTTPStatus.OK)
            req.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            req.send_header("Cache-Control", "no-store")
            req.send_header("Connection", "close")
            for name, value in self.headers:
                req.send_header(name, value)
            req.end_headers()
            sent, writable_at = -1, time.monotonic()
            while self.running:
                t0 = time.monotonic()
                version, result = self.metrics.latest(source)
                if result is not None and version != sent:
                    if not select.select([], [req.connection], [], 0)[1]:
                        if t0 - writable_at > SLOW_VIEWER_S:
                            self.slow_viewers_dropped += 1
                            return  # this viewer, not the frames of the others or the run
                    else:
                        writable_at = t0
                        jpg = self.video.get(source, version, result)
                        req.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                        + f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        req.wfile.flush()
                        sent = version
                time.sleep(max(0.0, 1.0 / self.video_fps - (time.monotonic() - t0)))
        finally:
            req.close_connection = True
            self.video_clients.release()
