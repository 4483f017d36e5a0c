"""Four live cameras through one model: batched (`infer cams.txt --batch 4`: the newest frame of
each camera in one inference call) against one by one (`--batch 1`, round-robin), on this machine.

    python benchmarks/live_batching.py --out benchmarks/results/live-batching-cpu-2core.md

The cameras are the tests' MJPEG servers on 127.0.0.1 (30 FPS each, 256 px generated parts).
Models: `tiny` and `edge-s224`, random-init and trained for 2 steps (speed does not depend on the
weights), exported with a dynamic batch. Each setting runs in alternating rounds (batch 1, batch 4,
batch 1, ...) so that both see the same mix of the shared machine's fast and slow phases; the
first seconds of each round (connecting, warming up) are not counted. Reported per setting:
aggregate FPS over the four cameras (median of the rounds) and the p99 of the end-to-end latency
(frame decoded -> result recorded) over all counted frames."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import sys

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CAMERAS = 4
CAMERA_FPS = 30.0


class CountingSink:
    """Records when each result arrives and its end-to-end latency (the Sink protocol)."""

    shows_pictures = False
    stop_requested = False

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, int]] = []

    def write(self, result) -> None:
        self.marks.append((time.perf_counter(), result.latency_ms["e2e_ms"], result.frame.source))

    def close(self) -> list[str]:
        return []


def make_model(preset: str, work: Path, data: Path) -> Path:
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    run, onnx = work / f"{preset}-run", work / f"{preset}.onnx"
    if not onnx.is_file():
        train(TrainConfig(data=[data], out=run, preset=preset, weights="none", steps=2, batch_size=2,
                          progress=False, holdout_fraction=0.2))
        export_onnx(run, onnx, ExportOptions(batch="dynamic", verify=False))
    return onnx


def one_round(det, urls: list[str], batch: int, seconds: float, warmup: float) -> dict:
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    sink = CountingSink()
    specs = [s for url in urls for s in parse_source(url)]
    runner = StreamRunner(det, specs, StreamOptions(batch=batch), sinks=[sink])
    timer = threading.Timer(warmup + seconds, runner.request_stop)
    timer.start()
    t0 = time.perf_counter()
    summary = runner.run()
    timer.cancel()
    counted = [(t, e2e) for t, e2e, _ in sink.marks if t >= t0 + warmup]
    span = counted[-1][0] - counted[0][0] if len(counted) > 1 else float("nan")
    return {"fps": (len(counted) - 1) / span if len(counted) > 1 else 0.0, "e2e_ms": [e for _, e in counted],
            "batch_sizes": summary.batch_sizes, "dropped": summary.to_dict()["dropped"]}


def measure(model: Path, urls: list[str], rounds: int, seconds: float, warmup: float) -> dict:
    from dualkd_edge import Detector

    results: dict[int, list[dict]] = {1: [], 4: []}
    with Detector.load(model) as det:
        det.predict([np.zeros((256, 256, 3), np.uint8)] * 4)  # load and warm the session once
        for _ in range(rounds):
            for batch in (1, 4):
                results[batch].append(one_round(det, urls, batch, seconds, warmup))
                print(f"  {model.name} batch {batch}: {results[batch][-1]['fps']:.1f} FPS", flush=True)
    out = {}
    for batch, runs in results.items():
        e2e = np.concatenate([r["e2e_ms"] for r in runs])
        sizes: dict[int, int] = {}
        for r in runs:
            for k, v in r["batch_sizes"].items():
                sizes[k] = sizes.get(k, 0) + v
        out[batch] = {"fps": float(np.median([r["fps"] for r in runs])), "fps_rounds": [r["fps"] for r in runs],
                      "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p99_ms": float(np.percentile(e2e, 99)),
                      "frames": int(e2e.size), "batch_sizes": dict(sorted(sizes.items()))}
    paired = [b4["fps"] / b1["fps"] for b1, b4 in zip(results[1], results[4])]
    out["speedup"] = float(np.median(paired))
    out["speedup_rounds"] = paired
    return out


def markdown(report: dict) -> str:
    lines = ["# Live batching: 4 cameras, batched vs one by one", "",
             f"- machine: {report['machine']}", f"- command: `{report['command']}`",
             f"- {CAMERAS} MJPEG cameras on 127.0.0.1 at {CAMERA_FPS:.0f} FPS each; {report['rounds']} alternating "
             f"rounds of {report['seconds']:.0f} s per setting (first {report['warmup']:.0f} s of each not counted)",
             "- aggregate FPS: frames scored per second over all cameras (median of the rounds); e2e: frame "
             "decoded -> result recorded, all counted frames", "",
             "| model | --batch | aggregate FPS | speed-up (paired) | e2e p50 ms | e2e p99 ms | inference calls by size |",
             "|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        for batch in (1, 4):
            row = r[str(batch)] if str(batch) in r else r[batch]
            sizes = ", ".join(f"{k}: {v}" for k, v in row["batch_sizes"].items())
            speed = f"{r['speedup']:.2f}x" if batch == 4 else "1.00x"
            lines.append(f"| {name} | {batch} | {row['fps']:.1f} | {speed} | {row['e2e_p50_ms']:.0f} | "
                         f"{row['e2e_p99_ms']:.0f} | {sizes} |")
    lines += ["", "Per-round speed-ups (batch 4 over the batch-1 round next to it): "
              + "; ".join(f"{n}: " + ", ".join(f"{s:.2f}" for s in r["speedup_rounds"])
                          for n, r in report["models"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/live-batching-cpu-2core.md"))
    ap.add_argument("--presets", default="tiny,edge-s224")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--work", type=Path, default=None, help="keep the models here (default: a temporary folder)")
    args = ap.parse_args()

    from dualkd_edge.bench.machine import describe_machine
    from dualkd_edge.data.synth import generate_dataset
    from support.stream_servers import MjpegServer

    machine = describe_machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        if not data.is_dir():
            generate_dataset(data, n_train=10, n_test_good=2, n_test_defect=1, seed=0)
        servers = [MjpegServer(fps=CAMERA_FPS, max_seconds=3600).start() for _ in range(CAMERAS)]
        try:
            models = {}
            for preset in args.presets.split(","):
                print(f"{preset}:", flush=True)
                models[preset] = measure(make_model(preset, work, data), [s.url for s in servers], args.rounds,
                                         args.seconds, args.warmup)
        finally:
            for s in servers:
                s.stop()
    report = {"machine": f"{machine.get('cpu')}, {machine.get('cpu_cores')} cores, {platform.system()}, "
                         f"onnxruntime {machine.get('onnxruntime')}",
              "command": "python benchmarks/live_batching.py " + " ".join(
                  f"--{k} {v}" for k, v in (("rounds", args.rounds), ("seconds", args.seconds))),
              "rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup, "models": models}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(report))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
