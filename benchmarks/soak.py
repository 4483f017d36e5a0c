"""Soak: `infer` on a live RTSP camera with the dashboard (a viewer, a scraper, a slow viewer), MQTT,
Modbus and webhook outputs, while faults are injected on a schedule; reports frames processed vs
sent, decisions delivered vs made, and the process's RSS, open file descriptors and threads over time.

  python benchmarks/soak.py MODEL.onnx --minutes 30 --out benchmarks/results/soak-cpu-2core.json

Faults, each in its own window of the run (a fault every `period` seconds, in turn):
camera server killed and restarted 10 s later, broker killed and restarted 10 s later, the webhook
receiver hanging (answers after 20 s) for 30 s, a viewer that opens the video and never reads.
Targets (issue "Hardening the network surfaces"): RSS growth <= 5% after warm-up, file descriptors and
threads back to their baseline after each fault, every decision accounted for.
Needs: gst-rtsp-server + PyGObject (the camera), mosquitto, pymodbus, paho-mqtt. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.gst_rtsp import GstRtspCamera
from support.line_servers import ModbusServer, MosquittoBroker
from support.stream_servers import LoopbackHttpServer, free_port

FPS = 25


class HangableWebhook(LoopbackHttpServer):
    """A webhook receiver that counts what it got; while `hang` is set it answers only after 20 s."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.hang = threading.Event()
        self.httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> "HangableWebhook":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hang.is_set():
                    time.sleep(20)
                receiver.received += 1
                self.send_response(204)
                self.end_headers()

        self.serve(Handler)
        return self


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"t": round(time.monotonic(), 1), "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Clients:
    """A dashboard viewer that reads the video, a scraper of /metrics, and (as a fault) a slow viewer."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.scrapes = self.scrape_errors = self.video_bytes = 0

    def start(self) -> "Clients":
        threading.Thread(target=self._viewer, daemon=True).start()
        threading.Thread(target=self._scraper, daemon=True).start()
        return self

    def _viewer(self) -> None:
        while not self.stop.is_set():
            try:
                req = urllib.request.Request(f"{self.base}/stream.mjpg", headers=self.headers)
                with urllib.request.urlopen(req, timeout=10) as reply:
                    while not self.stop.is_set():
                        chunk = reply.read(65536)
                        if not chunk:
                            break
                        self.video_bytes += len(chunk)
            except OSError:
                time.sleep(1)

    def _scraper(self) -> None:
        while not self.stop.wait(5):
            try:
                req = urllib.request.Request(f"{self.base}/metrics", headers=self.headers)
                urllib.request.urlopen(req, timeout=10).read()
                self.scrapes += 1
            except OSError:
                self.scrape_errors += 1

    def slow_viewer(self, seconds: float) -> None:
        """Opens the video, sends the request, never reads: the server must drop it, not stall."""
        sock = socket.create_connection(("127.0.0.1", int(self.base.rsplit(":", 1)[1])))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {self.headers['Authorization']}"
                     "\r\n\r\n".encode())
        time.sleep(seconds)
        sock.close()


def run(model: Path, minutes: float, out: Path, period: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dualkd-soak-"))
    token = "soak-token-0123456789abcdef"
    (work / "token").write_text(token + "\n")
    (work / "token").chmod(0o600)
    camera = GstRtspCamera(fps=FPS).start()
    broker = MosquittoBroker(work).start()
    plc = ModbusServer(work / "modbus.jsonl").start()
    hook = HangableWebhook().start()
    try:
        return _soak(model, minutes, out, period, work, token, camera, broker, plc, hook)
    finally:
        for server in (camera, broker, plc):
            server.stop(kill=True)
        hook.stop()


def _soak(model, minutes, out, period, work, token, camera, broker, plc, hook) -> dict:  # noqa: PLR0913
    http_port = free_port()
    cmd = [sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), camera.url, "--jsonl", str(work / "d.jsonl"), "--out", str(work / "o"),
           "--mqtt", f"mqtt://127.0.0.1:{broker.port}/soak/cam", "--modbus", f"127.0.0.1:{plc.port}/1",
           "--webhook", hook.url, "--http", f"127.0.0.1:{http_port}", "--http-token-file", str(work / "token"),
           "--retries", "1000", "--read-timeout", "3"]
    infer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(work / "infer.err", "w"), text=True)
    time.sleep(15)
    clients = Clients(http_port, token).start()
    samples, faults = [proc_sample(infer.pid)], []
    camera_down_s = 0.0
    t_start = time.monotonic()
    t_end = t_start + minutes * 60
    schedule = ["camera", "broker", "webhook", "slow_viewer"]
    next_fault, k = t_start + period, 0
    while time.monotonic() < t_end and infer.poll() is None:
        time.sleep(2)
        samples.append(proc_sample(infer.pid))
        if time.monotonic() < next_fault or time.monotonic() > t_end - 60:
            continue
        kind = schedule[k % len(schedule)]
        k += 1
        before = samples[-1]
        t0 = time.monotonic()
        if kind == "camera":
            camera.stop(kill=True)
            time.sleep(10)
            camera.start()
            camera_down_s += time.monotonic() - t0
        elif kind == "broker":
            broker.stop(kill=True)
            time.sleep(10)
            broker.start()
        elif kind == "webhook":
            hook.hang.set()
            time.sleep(30)
            hook.hang.clear()
        else:
            clients.slow_viewer(30)
        time.sleep(20)  # let it settle, then see whether the process is back where it was
        after = proc_sample(infer.pid)
        faults.append({"fault": kind, "at_s": round(t0 - t_start), "before": before, "after": after})
        next_fault = time.monotonic() + period
    infer.send_signal(signal.SIGINT)
    infer.communicate(timeout=120)
    clients.stop.set()
    summary = json.loads((work / "o" / "summary.json").read_text())
    run_s = time.monotonic() - t_start + 15
    warm = [s for s in samples if s["t"] - samples[0]["t"] > 60] or samples
    report = {
        "minutes": minutes, "model": str(model), "fps": FPS,
        "frames_processed": summary["frames"], "frames_sent_estimate": round((run_s - camera_down_s) * FPS),
        "dropped": summary["dropped"], "reconnects": summary["reconnects"],
        "decisions": summary["frames"], "deliveries": summary["deliveries"],
        "rss_mib": {"start": warm[0]["rss_mib"], "middle": warm[len(warm) // 2]["rss_mib"], "end": warm[-1]["rss_mib"],
                    "growth_after_warmup": round(warm[-1]["rss_mib"] / warm[0]["rss_mib"] - 1, 4)},
        "fds": {"start": warm[0]["fds"], "middle": warm[len(warm) // 2]["fds"], "end": warm[-1]["fds"],
                "max": max(s["fds"] for s in samples)},
        "threads": {"start": warm[0]["threads"], "middle": warm[len(warm) // 2]["threads"], "end": warm[-1]["threads"],
                    "max": max(s["threads"] for s in samples)},
        "faults": faults, "scrapes": clients.scrapes, "scrape_errors": clients.scrape_errors,
        "video_bytes": clients.video_bytes, "webhook_received": hook.received, "exit": infer.returncode,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=120.0, help="seconds between faults")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    args = parser.parse_args()
    report = run(args.model, args.minutes, args.out, args.period)
    print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=2))
    for f in report["faults"]:
        print(f"{f['fault']:12s} at {f['at_s']:5d} s: fds {f['before']['fds']} -> {f['after']['fds']}, "
              f"threads {f['before']['threads']} -> {f['after']['threads']}, RSS {f['before']['rss_mib']} -> "
              f"{f['after']['rss_mib']} MiB")


if __name__ == "__main__":
    sys.exit(main())
