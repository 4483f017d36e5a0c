"""The network surfaces under attack, each finding of the security review reproduced against real
servers and clients on 127.0.0.1: a redirecting webhook receiver, half-sent and never-reading HTTP
clients, a hostile file name in a watched folder (headless Chromium), Mosquitto with TLS and a CA the
test makes, damaged artifacts, bad option and request bytes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import assert_one_line_error, needs_broker, run_cli

from support.line_servers import MosquittoBroker
from support.stream_servers import LoopbackHttpServer, free_port, write_video

needs_mosquitto = needs_broker
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (to make the test's CA)")


@pytest.fixture
def model(dynamic_onnx):
    return dynamic_onnx


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "v.mp4", n=30)


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _get(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- 1. webhook redirects --------------------------------------------------------------------------------


class Recorder(LoopbackHttpServer):
    """Records every request (method, Authorization); `redirect_to` answers 302 there instead."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, str | None]] = []
        self.redirect_to = redirect_to

    def start(self) -> "Recorder":
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((self.command, self.headers.get("Authorization")))
                if recorder.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", recorder.redirect_to)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _any  # noqa: N815

        self.serve(Handler)
        return self


@pytest.mark.servers
def test_a_redirecting_webhook_gets_no_credentials_and_counts_as_failed(model, video, tmp_path):
    other = Recorder().start()
    first = Recorder(redirect_to=f"http://localhost:{other.port}/collect?sig=s3cretsig").start()
    try:
        proc = run_cli("infer", model, video, "--threshold", "0", "--max-frames", "5", "--out", tmp_path / "o",
                       "--webhook", f"http://user:pw0rd@127.0.0.1:{first.port}/hook")
    finally:
        first.stop()
        other.stop()
    assert proc.returncode == 0, proc.stderr
    assert first.requests and all(auth and auth.startswith("Basic ") for _, auth in first.requests)
    assert other.requests == []  # the other host never heard of us, let alone our credentials
    [hook] = [d for d in _summary(tmp_path / "o")["deliveries"] if d["sink"] == "webhook"]
    assert hook["delivered"] == 0 and hook["failed"] == hook["accepted"] == 5
    assert "302" in hook["last_error"] and "not followed" in hook["last_error"]
    assert "s3cretsig" not in proc.stdout + proc.stderr + json.dumps(hook) and "pw0rd" not in proc.stderr


# -- 5. secrets outside user:pw@ --------------------------------------------------------------------------


@pytest.mark.servers
def test_webhook_paths_queries_and_other_secrets_are_never_shown(model, video, tmp_path):
    from dualkd_edge.stream.capture.sources import redact

    receiver = Recorder().start()
    secret_path = "/services/T0SECRET/B0SECRET/XYZSECRETKEY"
    try:
        proc = run_cli("infer", model, video, "--threshold", "0", "--max-frames", "3", "--out", tmp_path / "o",
                       "--webhook", f"http://127.0.0.1:{receiver.port}{secret_path}?code=codeSECRET&sig=sigSECRET")
    finally:
        receiver.stop()
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr + (tmp_path / "o" / "summary.json").read_text()
    for secret in ("T0SECRET", "XYZSECRETKEY", "codeSECRET", "sigSECRET"):
        assert secret not in shown
    assert f"http://127.0.0.1:{receiver.port}/***" in shown
    assert len(receiver.requests) == 3
    for text, secret in (("http://cam/cgi?loginuse=admin&loginpas=LOGINSECRET", "LOGINSECRET"),
                         ("header Authorization=Basic QmFzaWNTRUNSRVQ= next", "QmFzaWNTRUNSRVQ"),
                         ("rtmp://live.example.com/app/STREAMKEYSECRET", "STREAMKEYSECRET"),
                         ("https://blob.example.com/x?sv=1&sig=SIGSECRET", "SIGSECRET")):
        assert secret not in redact(text), text


# -- 4. passwords off the command line ---------------------------------------------------------------


@pytest.mark.servers
@needs_mosquitto
def test_mqtt_password_from_a_file_or_the_environment_never_from_argv(model, video, tmp_path):
    broker = MosquittoBroker(tmp_path / "broker", user=("line", "brokerPW123")).start()
    try:
        secret = tmp_path / "mqtt.pw"
        secret.write_text("brokerPW123\n")
        secret.chmod(0o600)
        url = f"mqtt://line@127.0.0.1:{broker.port}/line/cam"
        by_file = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "f", "--mqtt", url,
                          "--mqtt-password-file", secret)
        by_env = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "e", "--mqtt", url,
                         env={"DUALKD_MQTT_PASSWORD": "brokerPW123"})
        on_argv = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "a", "--mqtt",
                          f"mqtt://line:brokerPW123@127.0.0.1:{broker.port}/line/cam")
    finally:
        broker.stop()
    for proc, out in ((by_file, "f"), (by_env, "e"), (on_argv, "a")):
        assert proc.returncode == 0, proc.stderr
        [mqtt] = _summary(tmp_path / out)["deliveries"]
        assert mqtt["delivered"] == 5, (out, mqtt)
        assert "brokerPW123" not in proc.stdout + proc.stderr
    warnings = [line for line in on_argv.stderr.splitlines() if "on the command line" in line]
    assert len(warnings) == 1 and "--mqtt-password-file" in warnings[0]
    assert "on the command line" not in by_file.stderr + by_env.stderr


# -- 6. MQTT over TLS with a CA the test makes; failures that say so --------------------------------------


def _make_ca(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate."""
    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, cwd=folder)

    folder.mkdir(parents=True, exist_ok=True)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
       "-keyout", "ca.key", "-out", "ca.pem")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
           "-out", f"{name}.csr")
        sh("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-days", "2", "-out", f"{name}.pem", "-extfile", "san.ext")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class TlsBroker(MosquittoBroker):
    """Mosquitto with one TLS listener (client certificates required) and one plaintext listener."""

    def __init__(self, folder: Path, pki: dict[str, Path]) -> None:
        super().__init__(folder)
        self.plain_port = free_port()
        self.config.write_text(
            f"per_listener_settings false\nallow_anonymous true\nuser {os.environ.get('USER', 'root')}\nlog_dest none\n"
            f"listener {self.port} 127.0.0.1\ncafile {pki['ca.pem']}\ncertfile {pki['server.pem']}\n"
            f"keyfile {pki['server.key']}\nrequire_certificate true\n"
            f"listener {self.plain_port} 127.0.0.1\n")


@pytest.mark.servers
@needs_mosquitto
@needs_openssl
def test_mqtt_tls_with_the_test_ca_and_every_connect_failure_is_said(model, video, tmp_path):
    pki = _make_ca(tmp_path / "pki")
    broker = TlsBroker(tmp_path / "broker", pki).start()
    tls_url = f"mqtts://127.0.0.1:{broker.port}/line/cam"
    try:
        good = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "good", "--mqtt", tls_url,
                       "--mqtt-cafile", pki["ca.pem"], "--mqtt-cert", pki["client.pem"], "--mqtt-key", pki["client.key"])
        no_ca = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "noca", "--mqtt", tls_url)
        plaintext = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "plain", "--mqtt",
                            f"mqtts://127.0.0.1:{broker.plain_port}/line/cam", "--mqtt-cafile", pki["ca.pem"])
    finally:
        broker.stop()
    dead = run_cli("infer", model, video, "--max-frames", "5", "--out", tmp_path / "dead", "--mqtt",
                   f"mqtt://127.0.0.1:{free_port()}/line/cam")
    assert good.returncode == 0, good.stderr
    assert _summary(tmp_path / "good")["deliveries"][0]["delivered"] == 5
    for proc, out in ((no_ca, "noca"), (plaintext, "plain"), (dead, "dead")):
        assert proc.returncode == 0, proc.stderr
        [mqtt] = _summary(tmp_path / out)["deliveries"]
        assert mqtt["delivered"] == 0 and mqtt["last_error"], (out, mqtt)
        failures = [line for line in proc.stderr.splitlines() if line.startswith("WARNING: mqtt") and "connect" in line]
        assert 1 <= len(failures) <= 3, (out, proc.stderr)  # said, and rate-limited
    assert_one_line_error(run_cli("infer", model, video, "--mqtt", f"mqtt://127.0.0.1:{broker.port}/t",
                                  "--mqtt-cafile", pki["ca.pem"]), "--mqtt-cafile", "mqtts://")
    assert_one_line_error(run_cli("infer", model, video, "--mqtt", tls_url, "--mqtt-cert", pki["client.pem"]),
                          "--mqtt-cert", "--mqtt-key")


def test_triton_tls_options_are_checked(model, video, tmp_path):
    assert_one_line_error(run_cli("infer", model, video, "--triton-cafile", tmp_path / "ca.pem"), "--triton-cafile",
                          "--triton")
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install '.[triton]')")
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    assert_one_line_error(run_cli("infer", "--triton", "127.0.0.1:1/dualkd", video, "--triton-cafile", not_pem),
                          "--triton-cafile", "PEM")


# -- 2, 3, 10, 11. the dashboard -------------------------------------------------------------------------


@pytest.fixture
def dashboard_run(model, tmp_path):
    """A Dashboard bound to a real stream (a video looped at 20 FPS) in this process."""
    from dualkd_edge import Detector
    from dualkd_edge.stream.dashboard.server import Dashboard
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    clip = write_video(tmp_path / "clip.mp4", n=400)
    det = Detector.load(model)
    dashboard = Dashboard("127.0.0.1:0")
    runner = StreamRunner(det, parse_source(str(clip)), StreamOptions(fps_limit=20), sinks=[dashboard])
    dashboard.bind(runner)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield dashboard, runner
    runner.request_stop()
    thread.join(30)
    det.close()


def test_idle_half_sent_and_never_reading_clients_cannot_stop_the_dashboard_or_the_run(dashboard_run):
    from dualkd_edge.stream.dashboard.http_guard import MAX_CONNECTIONS

    dashboard, runner = dashboard_run
    base = dashboard.url
    half_sent = []
    for _ in range(MAX_CONNECTIONS + 40):  # more than the cap: the oldest idle ones make room
        s = socket.create_connection(("127.0.0.1", dashboard.port))
        s.sendall(b"GET /api/summary HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        half_sent.append(s)
    stuck_viewers = []
    for _ in range(8):  # every video slot, by viewers that never read
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(("127.0.0.1", dashboard.port))
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stuck_viewers.append(s)
    t0 = time.monotonic()
    status, _, body = _get(f"{base}healthz")
    assert status == 200 and time.monotonic() - t0 < 2.0, body  # still answering, at once
    assert dashboard.httpd.open_connections <= MAX_CONNECTIONS
    frames_before = runner.frames
    # the never-reading viewers are dropped (send time-out) and a real viewer gets video within ~15 s
    t_end, got_video = time.monotonic() + 30, False
    while time.monotonic() < t_end and not got_video:
        try:
            with urllib.request.urlopen(f"{base}stream.mjpg", timeout=5) as reply:
                got_video = b"--frame" in reply.read(4096)
        except (urllib.error.HTTPError, OSError):
            time.sleep(1)
    assert got_video
    # a half-sent request is closed by the server within 30 s of its connection
    for s in half_sent:
        s.settimeout(max(0.1, 30 - (time.monotonic() - t0)))
        try:
            assert s.recv(1024) in (b"",) or True
        except TimeoutError:
            pytest.fail("a half-sent request was still open after 30 s")
        finally:
            s.close()
    for s in stuck_viewers:
        s.close()
    assert runner.frames > frames_before and not runner.output_errors  # inspection went on throughout


def test_bad_request_bytes_host_headers_and_security_headers(dashboard_run):
    dashboard, _ = dashboard_run
    base = dashboard.url
    time.sleep(1)
    status, headers, _ = _get(f"{base}")
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert "Python" not in headers.get("Server", "")
    assert _get(f"{base}api/summary", {"Host": "attacker.example"})[0] == 421  # DNS rebinding
    assert _get(f"{base}api/summary", {"Host": f"localhost:{dashboard.port}"})[0] == 200
    assert _get(f"{base}frame.jpg?source=%C2%B2")[0] == 400
    with socket.create_connection(("127.0.0.1", dashboard.port)) as s:  # a raw non-ASCII byte in the path
        s.sendall(b"GET /ng/\xb2.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 404")


@pytest.mark.servers
def test_a_hostile_file_name_in_a_watched_folder_is_text_on_the_page(model, tmp_path):
    pytest.importorskip("cv2")
    from support.browser import HeadlessChromium, chromium_binary

    if chromium_binary() is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    import cv2

    from dualkd_edge.data.synth import render_part

    folder = tmp_path / "watched"
    folder.mkdir()
    hostile = "00<img src=x onerror=\"window.__xss=1\">.png"
    cv2.imwrite(str(folder / hostile), render_part("washer", 5)[0])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), str(folder), "--threshold",
                             "0", "--http", f"127.0.0.1:{port}", "--fps-limit", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            try:
                if json.loads(_get(f"http://127.0.0.1:{port}/api/summary")[2])["frames"] > 0:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        with HeadlessChromium(width=1200, height=800) as browser:
            browser.navigate(f"http://127.0.0.1:{port}/")
            browser.wait_for("document.querySelector('#ngs figure') !== null")
            assert browser.evaluate("window.__xss === undefined")
            assert browser.evaluate("document.querySelector('#ngs img[src=x]') === null")
            assert "onerror" in browser.evaluate("document.querySelector('#ngs figcaption span').textContent")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_a_token_guards_every_route_but_healthz(model, video, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), str(video), "--http",
                             f"0.0.0.0:{port}", "--fps-limit", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        token = None
        t_end = time.monotonic() + 30
        while token is None and time.monotonic() < t_end:
            line = proc.stderr.readline()
            if line.startswith("dashboard token"):
                token = line.rsplit(" ", 1)[1].strip()
        assert token and len(token) >= 24
        base = f"http://127.0.0.1:{port}/"
        for route in ("", "api/summary", "metrics", "frame.jpg", "stream.mjpg"):
            assert _get(base + route)[0] == 401, route
            assert _get(base + route, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401, route
        assert _get(base + "healthz")[0] in (200, 503)
        assert _get(base + "api/summary", {"Authorization": f"Bearer {token}"})[0] == 200
        # the page's way: ?token= once, then a cookie (HttpOnly, SameSite=Strict)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{base}?token={token}", timeout=5) as reply:
            assert reply.status == 200 and reply.url == base
        with opener.open(f"{base}api/summary", timeout=5) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert token not in err  # printed once, never logged again
    file_token = tmp_path / "tokens"
    file_token.write_text("# operators\nanna:anna-token-0123456789abcdef\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), str(video), "--http",
                             f"127.0.0.1:{port}", "--http-token-file", str(file_token), "--fps-limit", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            try:
                status = _get(f"http://127.0.0.1:{port}/api/summary")[0]
                break
            except OSError:
                time.sleep(0.2)
        assert status == 401  # on loopback too, once a token file is given
        assert _get(f"http://127.0.0.1:{port}/api/summary", {"Authorization": "Bearer anna-token-0123456789abcdef"})[0] == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_healthz_is_503_while_a_source_has_never_opened(model, tmp_path):
    port = free_port()
    dead = f"rtsp://127.0.0.1:{free_port()}/nothing"
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), dead, "--http",
                             f"127.0.0.1:{port}", "--retries", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        t_end, body = time.monotonic() + 40, None
        while time.monotonic() < t_end:
            try:
                status, _, raw = _get(f"http://127.0.0.1:{port}/healthz")
                body = json.loads(raw)
                if body["status"] == "source_failed":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 503 and body["status"] == "source_failed" and body["sources_not_open"], body
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_ipv6_loopback_binding_works_as_documented():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    from dualkd_edge.stream.dashboard.server import Dashboard

    dashboard = Dashboard("[::1]:0")
    try:
        status, _, body = _get(f"http://[::1]:{dashboard.port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "starting"
    finally:
        dashboard.close()


def test_bad_option_bytes_are_one_line_errors(model, video):
    assert_one_line_error(run_cli("infer", model, video, "--http", "¹²"), "--http")
    assert_one_line_error(run_cli("infer", model, video, "--modbus", "127.0.0.1:50²/1"), "--modbus")
    assert_one_line_error(run_cli("infer", model, video, "--modbus", "127.0.0.1:502/0"), "--modbus", "broadcast")


def test_a_modbus_peer_that_never_answers_is_not_connected(model, video, tmp_path):
    pytest.importorskip("pymodbus")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # accepts, reads nothing, answers nothing
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        proc = run_cli("infer", model, video, "--max-frames", "10", "--fps-limit", "5", "--out", tmp_path / "o",
                       "--modbus", f"127.0.0.1:{silent.getsockname()[1]}/1")
    finally:
        stop.set()
        silent.close()
    assert proc.returncode == 0, proc.stderr
    [plc] = _summary(tmp_path / "o")["deliveries"]
    assert plc["connected"] is False and plc["reconnects"] == 0 and plc["delivered"] == 0
    assert "reconnected" not in proc.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg to record the MPEG-TS")
def test_a_truncated_mpegts_recording_is_reported(model, tmp_path):
    src = write_video(tmp_path / "src.mp4", n=50)
    ts = tmp_path / "rec.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(src), "-c:v", "libx264", "-f", "mpegts", str(ts)], check=True)
    whole = run_cli("infer", model, ts, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    data = ts.read_bytes()
    ts.write_bytes(data[: int(len(data) * 0.45) + 7])  # cut mid-packet, as a recording that lost power
    cut = run_cli("infer", model, ts, "--out", tmp_path / "cut")
    assert cut.returncode == 1 and "Traceback" not in cut.stderr
    assert "truncated" in cut.stdout and "188-byte packet" in cut.stdout
    assert _summary(tmp_path / "cut")["errors"]


# -- 7, 8. artifacts are input --------------------------------------------------------------------------


def test_hostile_sizes_in_artifact_metadata_end_in_one_error_line(trained_run, model, video, tmp_path):
    import onnx

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["preset"]["teacher_dim"] = 98304
    (run / "run.json").write_text(json.dumps(meta))
    t0 = time.monotonic()
    assert_one_line_error(run_cli("infer", run, video, "--max-frames", "1"), "teacher_dim")
    meta["preset"]["teacher_dim"] = 384  # in bounds, but not what the weights hold
    meta["preset"]["teacher_heads"] = 6
    (run / "run.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("infer", run, video, "--max-frames", "1"), "run.json", "model.safetensors")
    assert time.monotonic() - t0 < 120
    for key, value, needle in (("resize", 60000, "input.resize"), ("height", 224, "the graph's input")):
        proto = onnx.load(str(model))
        entry = next(p for p in proto.metadata_props if p.key == "dualkd_edge")
        meta = json.loads(entry.value)
        meta["input"][key] = value
        if key == "height":
            meta["input"]["width"] = 224
        entry.value = json.dumps(meta)
        bad = tmp_path / f"bad-{key}.onnx"
        onnx.save(proto, str(bad))
        proc = run_cli("infer", bad, video, "--max-frames", "1")
        assert proc.returncode == 2
        assert_one_line_error(proc, needle)


def test_onnx_external_data_outside_the_model_folder_is_refused(model, video, tmp_path):
    import onnx
    from onnx import TensorProto

    proto = onnx.load(str(model))
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save(proto, str(folder / "m.onnx"))
    for args in (("infer", folder / "m.onnx", video), ("info", folder / "m.onnx"), ("check", folder / "m.onnx")):
        assert_one_line_error(run_cli(*args), "external data", "outside the model's folder")


def test_serve_beyond_loopback_warns_about_what_triton_leaves_open(caplog):
    from dualkd_edge.serving.triton_server import warn_if_exposed

    with caplog.at_level("WARNING", logger="dualkd_edge"):
        warn_if_exposed("127.0.0.1")
        assert not caplog.records
        warn_if_exposed("0.0.0.0")
    [record] = caplog.records
    assert "no authentication" in record.message and "CVE-2025-23319" in record.message and "25.07" in record.message
