"""What the line-side outputs add to a frame's end-to-end latency, measured side by side in one run:

    python benchmarks/sink_latency.py MODEL.onnx --rounds 8 --frames 60 --out benchmarks/results/sinks-cpu-2core.md

Three set-ups, in alternating rounds (the order rotates each round, so a machine whose speed drifts
treats them alike), each round a fresh `StreamRunner` on the same live 10 FPS MJPEG camera
(127.0.0.1) with the same Detector:

- `none`: no sinks at all;
- `sinks`: the dashboard (`--http`), MQTT (`--mqtt`, a Mosquitto broker started here), Modbus TCP
  (`--modbus`, a pymodbus server) and the webhook (`--webhook`, an HTTP receiver; threshold 0 so every
  frame is an NG event), all receivers up; nobody looks at the dashboard;
- `sinks+viewers`: the same, with an operator screen pulling the MJPEG overlay video and a Prometheus
  scraper reading /metrics and /api/summary every second (the overlay drawing and JPEG encoding then
  run in the server's threads, on the same 2 cores).

`e2e` runs from the decoded frame's arrival to its last output; a live source keeps only its newest
frame, so e2e is the frame's own work plus at most the end of the previous one. The table gives e2e
p50/p99 per set-up, the difference of the p50s, the median over rounds of the per-round p50
difference (paired), and the wall and CPU time the inference thread spends in the sinks' `write`."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SETUPS = ("none", "sinks", "sinks+viewers")


class Viewers:
    """An MJPEG viewer and a scraper on a dashboard, in threads, until `stop`."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.running = True
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._watch, self._scrape)]
        for t in self.threads:
            t.start()

    def _watch(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.base}stream.mjpg?source=0", timeout=10) as reply:
                while self.running and reply.read(65536):
                    pass
        except OSError:
            pass

    def _scrape(self) -> None:
        while self.running:
            for path in ("metrics", "api/summary"):
                try:
                    urllib.request.urlopen(f"{self.base}{path}", timeout=5).read()
                except OSError:
                    pass
            time.sleep(1.0)

    def stop(self) -> None:
        self.running = False
        for t in self.threads:
            t.join(5)


def timed_writes(sinks: list, wall: list[float], cpu: list[float]) -> None:
    """Wrap each sink's `write` to record, per frame, the wall time and the inference thread's CPU
    time spent in all of them (the CPU time leaves out waiting for the scheduler)."""
    first, last = sinks[0], sinks[-1]
    clock = {}

    def wrap(sink):
        write = sink.write

        def timed(result):
            if sink is first:
                clock["wall"], clock["cpu"] = time.perf_counter(), time.thread_time()
            write(result)
            if sink is last:
                wall.append((time.perf_counter() - clock["wall"]) * 1e3)
                cpu.append((time.thread_time() - clock["cpu"]) * 1e3)
        sink.write = timed

    for sink in sinks:
        wrap(sink)


def one_round(det, camera_url: str, setup: str, frames: int, receivers: dict,
              writes: tuple[list, list]) -> tuple[dict, list]:
    """(per-stage latencies in ms per frame, DeliveryStats) of one StreamRunner."""
    from dualkd_edge.stream.outputs.line import LineOptions
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    sinks = []
    if setup != "none":
        sinks = LineOptions(mqtt=receivers["mqtt"], modbus=receivers["modbus"], webhook=receivers["webhook"],
                            http="127.0.0.1:0").open_sinks(det.name, det.threshold)
        timed_writes(sinks, *writes)
    runner = StreamRunner(det, parse_source(camera_url), StreamOptions(max_frames=frames), sinks=sinks)
    viewers = None
    if sinks:
        sinks[0].bind(runner)
        if setup == "sinks+viewers":
            viewers = Viewers(sinks[0].url)
    try:
        summary = runner.run()
    finally:
        if viewers is not None:
            viewers.stop()
    return {k: list(v.recent) for k, v in runner.latencies.items()}, summary.deliveries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--frames", type=int, default=60, help="frames per round and set-up")
    ap.add_argument("--out", type=Path, help="write the results as Markdown here")
    args = ap.parse_args()

    from dualkd_edge import Detector
    from dualkd_edge.bench.machine import describe_machine
    from support.line_servers import ModbusServer, MosquittoBroker, WebhookReceiver
    from support.stream_servers import MjpegServer

    stages = ("e2e_ms", "inference_ms", "output_ms")
    lat = {s: {k: [] for k in stages} for s in SETUPS}
    writes = {s: ([], []) for s in SETUPS}  # (wall ms, CPU ms) in the sinks' writes per frame
    paired: dict[str, list[float]] = {s: [] for s in SETUPS[1:]}
    deliveries = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = MosquittoBroker(tmp / "broker").start()
        plc = ModbusServer(tmp / "plc.jsonl").start()
        hook = WebhookReceiver().start()
        camera = MjpegServer(fps=10, max_seconds=3600).start()
        receivers = {"mqtt": f"mqtt://127.0.0.1:{broker.port}/line/bench", "modbus": f"127.0.0.1:{plc.port}",
                     "webhook": hook.url}
        try:
            with Detector.load(args.model, threshold=0.0) as det:  # threshold 0: every frame is NG (webhook)
                one_round(det, camera.url, "sinks", 10, receivers, ([], []))  # warm-up: sessions, imports, connections
                for r in range(args.rounds):
                    order = SETUPS[r % 3:] + SETUPS[:r % 3]
                    p50 = {}
                    for setup in order:
                        got, dels = one_round(det, camera.url, setup, args.frames, receivers, writes[setup])
                        for k in stages:
                            lat[setup][k] += got[k]
                        if setup != "none":
                            deliveries += dels
                        p50[setup] = float(np.median(got["e2e_ms"]))
                    for setup in SETUPS[1:]:
                        paired[setup].append(p50[setup] - p50["none"])
                    print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{s} e2e p50 {p50[s]:.2f} ms" for s in SETUPS),
                          flush=True)
        finally:
            camera.stop()
            hook.stop()
            plc.stop(kill=True)
            broker.stop()
        arrived = {"webhook": len(hook.events)}

    rows = []
    base = {k: float(np.median(lat["none"][k])) for k in stages}
    for s in SETUPS:
        e2e = lat[s]["e2e_ms"]
        p50, p99 = np.percentile(e2e, [50, 99])
        out = float(np.median(lat[s]["output_ms"]))
        added = "" if s == "none" else f"{p50 - base['e2e_ms']:+.2f}"
        pair = "" if s == "none" else f"{np.median(paired[s]):+.2f}"
        rows.append(f"| {s} | {len(e2e)} | {p50:.2f} | {p99:.2f} | {np.median(lat[s]['inference_ms']):.2f} | "
                    f"{out:.3f} | {out - base['output_ms']:+.3f} | {added} | {pair} |")
    accepted = sum(d.accepted for d in deliveries)
    delivered = sum(d.delivered for d in deliveries)
    lost = sum(d.dropped + d.failed + d.left for d in deliveries)
    machine = describe_machine()
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Line-side sinks: added end-to-end latency",
        "",
        f"`python benchmarks/sink_latency.py MODEL --rounds {args.rounds} --frames {args.frames}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model `{args.model.name}`; "
        f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['os']}; ONNX Runtime {machine['onnxruntime']}, "
        f"Python {platform.python_version()}. Load average {load:.1f} at the end on {os.cpu_count()} CPUs "
        f"({'other jobs shared the machine' if load > 0.75 * (os.cpu_count() or 1) else 'no other job'}).",
        "",
        "| set-up | frames | e2e p50 ms | e2e p99 ms | inference p50 ms | output p50 ms | output p50 added ms "
        "| e2e p50 added ms | e2e p50 added ms, paired (median over rounds) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Deliveries over all `sinks` rounds: {delivered} of {accepted} decisions acknowledged, {lost} dropped, "
        f"failed or left at the end of a round; {arrived['webhook']} webhook events arrived.",
        "",
        "Time in the sinks' `write` calls per frame (inference thread): "
        + "; ".join(f"{s}: wall p50 {np.median(writes[s][0]):.3f} ms, p90 {np.percentile(writes[s][0], 90):.3f} ms, "
                    f"CPU p50 {np.median(writes[s][1]):.3f} ms, p90 {np.percentile(writes[s][1], 90):.3f} ms"
                    for s in SETUPS[1:]) + ".",
        "",
        "`output` is the time the inference thread spends in the sinks' `write` (it adds to `e2e` one to one); "
        "the e2e columns also catch what the sinks' threads cost the other stages (CPU and GIL), within the noise "
        "of the machine's load.",
    ])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
