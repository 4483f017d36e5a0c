"""Real streams on 127.0.0.1 for tests and benchmarks: an HTTP MJPEG server and an RTSP server whose
RTP/H.264 packets are produced by ffmpeg. Both stop by themselves after a bounded time."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from support import started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackHttpServer:
    """A threaded HTTP server on 127.0.0.1:`port` that can be stopped and started again on the same
    port (a camera or receiver that goes away); subclasses give the handler class to `serve`."""

    port: int
    httpd: ThreadingHTTPServer | None = None

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        started(self)

    def stop(self) -> None:
        if self.httpd is not None:
            httpd, self.httpd = self.httpd, None
            httpd.shutdown()
            httpd.server_close()


def demo_frames(n: int = 30) -> list[bytes]:
    from dualkd_edge.data.synth import render_part

    frames = []
    for i in range(n):
        img = render_part("washer" if i % 2 else "bracket", 4000 + i, defect="spot" if i % 7 == 3 else None)[0]
        frames.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    return frames


class MjpegServer(LoopbackHttpServer):
    """multipart/x-mixed-replace JPEG stream at `fps`, as IP cameras serve it. With `stall_after`
    each connection stops sending after that many frames but stays open (until max_seconds), as a
    frozen camera or encoder does."""

    def __init__(self, port: int | None = None, fps: float = 30.0, max_seconds: float = 60.0,
                 stall_after: int | None = None) -> None:
        self.port = port or free_port()
        self.fps = fps
        self.max_seconds = max_seconds
        self.stall_after = stall_after
        self.frames = demo_frames()
        self.sent = 0
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                t_end = time.monotonic() + server.max_seconds
                i = 0
                try:
                    while time.monotonic() < t_end and server.httpd is not None:
                        if server.stall_after is not None and i >= server.stall_after:
                            time.sleep(0.05)  # frozen: connected, silent
                            continue
                        jpg = server.frames[i % len(server.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        server.sent += 1
                        i += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.serve(Handler)
        return self


class RtspServer:
    """RTSP (RTP over TCP, interleaved) on 127.0.0.1. ffmpeg encodes the video to H.264, as IP cameras
    send it, and packetizes it as RTP to a local UDP port; this server does the RTSP handshake and relays the
    packets to each playing client."""

    def __init__(self, video: Path, max_seconds: float = 60.0, tmp: Path | None = None) -> None:
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("ffmpeg not installed")
        self.port = free_port()
        self.udp_port = free_port()
        self.video = video
        self.max_seconds = max_seconds
        self.sdp_path = (tmp or video.parent) / "stream.sdp"
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.running = False

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> "RtspServer":
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.udp_port))
        self.udp.settimeout(0.5)
        self.ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.video),
             "-t", str(self.max_seconds), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
             "-g", "15", "-pix_fmt", "yuv420p",
             "-f", "rtp", "-sdp_file", str(self.sdp_path), f"rtp://127.0.0.1:{self.udp_port}?pkt_size=1200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started(self)
        t_end = time.monotonic() + 10
        while not (self.sdp_path.is_file() and self.sdp_path.stat().st_size > 0):
            if time.monotonic() > t_end or self.ffmpeg.poll() is not None:
                raise RuntimeError("ffmpeg did not start the RTP stream")
            time.sleep(0.05)
        time.sleep(0.1)
        sdp = self.sdp_path.read_text()
        sdp = re.sub(r"m=video \d+", "m=video 0", sdp)
        sdp = re.sub(r"c=IN IP4 [0-9.]+", "c=IN IP4 0.0.0.0", sdp)
        self.sdp = sdp.rstrip() + "\r\na=control:trackID=0\r\n"
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(4)
        self.tcp.settimeout(0.5)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._relay, daemon=True).start()
        return self

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(1.0)
        try:
            while self.running:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:  # the client hung up (reset): end of session
                    return
                if not data:
                    return
                buf += data
                while buf:
                    if buf[:1] == b"$":  # interleaved RTCP from the client: skip it
                        if len(buf) < 4:
                            break
                        size = int.from_bytes(buf[2:4], "big")
                        if len(buf) < 4 + size:
                            break
                        buf = buf[4 + size:]
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    request, buf = buf[:end].decode(errors="replace"), buf[end + 4:]
                    self._answer(conn, request)
        finally:
            with self.lock:
                if conn in self.clients:
                    self.clients.remove(conn)
            conn.close()

    def _answer(self, conn: socket.socket, request: str) -> None:
        lines = request.split("\r\n")
        method = lines[0].split(" ")[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        cseq = headers.get("cseq", "0")
        extra, body, status = "", "", "200 OK"
        if method == "OPTIONS":
            extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
        elif method == "DESCRIBE":
            body = self.sdp
            extra = f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\n"
        elif method == "SETUP":
            if "TCP" not in headers.get("transport", ""):
                status = "461 Unsupported Transport"
            else:
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n"
        elif method == "PLAY":
            extra = "Session: 12345678\r\nRange: npt=0.000-\r\n"
        reply = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
        conn.sendall(reply.encode())
        if method == "PLAY":
            with self.lock:
                self.clients.append(conn)

    def _relay(self) -> None:
        while self.running:
            try:
                packet = self.udp.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            frame = b"$\x00" + len(packet).to_bytes(2, "big") + packet
            with self.lock:
                clients = list(self.clients)
            for c in clients:
                try:
                    c.sendall(frame)
                except OSError:
                    with self.lock:
                        if c in self.clients:
                            self.clients.remove(c)

    def stop(self) -> None:
        self.running = False
        self.ffmpeg.kill()
        self.ffmpeg.wait()
        for s in (self.tcp, self.udp):
            s.close()
        with self.lock:
            for c in self.clients:
                c.close()
            self.clients.clear()


def write_video(path: Path, n: int = 60, fps: float = 30.0) -> Path:
    from dualkd_edge.data.synth import write_line_video

    return write_line_video(path, n=n, fps=fps)


__all__ = ["MjpegServer", "RtspServer", "write_video", "free_port", "np"]
