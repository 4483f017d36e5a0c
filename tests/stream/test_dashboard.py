"""The live dashboard of `infer --http`: its endpoints while a real stream runs, and the operator page
in a real browser (headless Chromium over the DevTools protocol): the live image and the counters
must change while the stream goes on, and the OK/NG word must be big."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import scrape

from support.browser import HeadlessChromium, chromium_binary
from support.line_servers import ModbusServer, wait_for_port
from support.stream_servers import MjpegServer, free_port

needs_chromium = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (.ci/run installs it)")


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _frames_counted(metrics: str) -> int:
    found = [value for (name, _), value in scrape(metrics).items() if name == "dualkd_frames_total"]
    assert len(found) == 1, metrics
    return int(found[0])


def _until(predicate, seconds: float, poll: float = 0.2):
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"not within {seconds} s")


@pytest.mark.servers
@needs_chromium
def test_operator_page_updates_live_in_a_browser(dynamic_onnx, tmp_path):
    pytest.importorskip("pymodbus")
    camera = MjpegServer(fps=10, max_seconds=120).start()
    plc = ModbusServer(tmp_path / "plc.jsonl").start()  # so the page has deliveries to show
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(dynamic_onnx), camera.url,
                            "--http", f"127.0.0.1:{port}", "--modbus", f"127.0.0.1:{plc.port}",
                            "--out", str(tmp_path / "o")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, seconds=60, proc=run)
        _until(lambda: json.loads(_get(f"{base}/api/summary")[2])["frames"] > 0, 60)

        status, ctype, metrics = _get(f"{base}/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert "# TYPE dualkd_frames_total counter" in metrics
        assert "# TYPE dualkd_stage_latency_seconds histogram" in metrics
        e2e = [value for (name, labels), value in scrape(metrics).items()
               if name == "dualkd_stage_latency_seconds_bucket" and ("stage", "e2e") in labels and ("le", "+Inf") in labels]
        assert len(e2e) == 1 and e2e[0] >= 1
        first = _frames_counted(metrics)
        assert _get(f"{base}/healthz")[:1] == (200,) and json.loads(_get(f"{base}/healthz")[2])["status"] == "ok"

        with HeadlessChromium(width=1600, height=1000) as browser:
            browser.navigate(f"{base}/")
            browser.wait_for("document.getElementById('live-0') && document.getElementById('live-0').naturalWidth > 0")
            counted = "(+document.getElementById('ok-0').textContent) + (+document.getElementById('ng-0').textContent)"
            before = browser.evaluate(counted)
            box = browser.evaluate("(() => { const r = document.getElementById('live-0').getBoundingClientRect();"
                                   " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
            shot = browser.screenshot(clip=box)
            # The MJPEG server cycles through 30 different parts: a live image changes within seconds.
            _until(lambda: browser.screenshot(clip=box) != shot, 20, poll=0.5)
            _until(lambda: browser.evaluate(counted) > before, 20)
            assert browser.evaluate("document.getElementById('word-0').textContent") in ("OK", "NG")
            # Readable across the room: the decision word is at least 80 px tall on a 1600x1000 screen.
            size = browser.evaluate("parseFloat(getComputedStyle(document.getElementById('word-0')).fontSize)")
            assert size >= 80, size
            assert browser.evaluate("document.getElementById('conn').textContent") == "live"
            deliveries = browser.wait_for("document.getElementById('deliveries').textContent")
            assert deliveries.startswith(f"modbus 127.0.0.1:{plc.port}/1"), deliveries
            png = browser.screenshot(tmp_path / "dashboard.png")
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000

        metrics = _get(f"{base}/metrics")[2]
        assert _frames_counted(metrics) > first
        delivered = scrape(metrics)[("dualkd_sink_delivered_total",
                                     (("sink", "modbus"), ("target", f"127.0.0.1:{plc.port}/1")))]
        assert delivered >= 1, metrics
        summary = json.loads(_get(f"{base}/api/summary")[2])
        assert summary["model"] and summary["sources"][0]["name"] == camera.url
        assert summary["sources"][0]["e2e_ms"]["p50"] > 0
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C: finish the frames in flight, print the summary
        try:
            out, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
            camera.stop()
            plc.stop(kill=True)
    assert run.returncode == 0, err
    assert "frames" in out


@pytest.mark.servers
def test_healthz_turns_503_when_the_camera_stalls(dynamic_onnx):
    """/healthz: `starting` before the first frame, 200 while frames arrive, 503 once none came for
    `stale_after` seconds (a camera that went away), for a load balancer or a watchdog."""
    import threading

    from dualkd_edge import Detector
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.dashboard.server import Dashboard
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    camera = MjpegServer(fps=10, max_seconds=60)  # started once the run waits for it
    dashboard = Dashboard("127.0.0.1:0", stale_after=1.0)
    health = f"{dashboard.url}healthz"
    assert _get(health)[0] == 200 and json.loads(_get(health)[2])["status"] == "starting"
    with Detector.load(dynamic_onnx) as det:
        runner = StreamRunner(det, parse_source(camera.url), StreamOptions(retry=RetryPolicy(
            max_retries=50, first_delay=0.2, max_delay=0.5)), sinks=[dashboard])
        dashboard.bind(runner)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            # The camera is not up yet: the pages answer, with zero counts, while the run retries.
            _until(lambda: runner.workers, 10)
            time.sleep(0.5)  # a first connection attempt has failed
            status, _, metrics = _get(f"{dashboard.url}metrics")
            assert status == 200 and _frames_counted(metrics) == 0, metrics
            assert json.loads(_get(health)[2])["status"] == "starting"
            camera.start()
            _until(lambda: json.loads(_get(health)[2])["status"] == "ok", 60)
            camera.stop()
            _until(lambda: _get(health)[0] == 503, 30)
            assert json.loads(_get(health)[2])["status"] == "stalled"
            assert json.loads(_get(f"{dashboard.url}api/summary")[2])["sources"][0]["frames"] > 0
        finally:
            runner.request_stop()
            camera.stop()
            thread.join(30)
    assert not thread.is_alive()
