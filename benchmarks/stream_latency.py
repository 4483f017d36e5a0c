"""Sustained FPS and per-stage latency of `dualkd-edge infer` on a 30 FPS RTSP stream and on a video
file, against the model-only FPS, with one model:

    python benchmarks/stream_latency.py demo_out/model.onnx --seconds 20

The RTSP stream is the tests' server (tests/support/stream_servers.py): ffmpeg encodes a generated line video
to H.264 at 30 FPS and packetizes it as RTP; a small RTSP server on 127.0.0.1 relays it over TCP."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def infer(model: Path, source: str, out: Path, max_frames: int) -> dict:
    subprocess.run([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), source, "--out", str(out),
                    "--max-frames", str(max_frames)], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the RTSP measurement")
    args = ap.parse_args()

    from dualkd_edge.artifacts import open_backend
    from dualkd_edge.bench.timing import time_backend
    from dualkd_edge.data.synth import write_line_video
    from support.stream_servers import RtspServer

    with open_backend(args.model) as backend:
        model_only, _ = time_backend(backend, 1, warmup=10, iters=100)
    size = backend.meta.input.height
    print(f"model only, batch 1: {1000 / model_only.mean_ms:.1f} FPS (p50 {model_only.p50_ms:.2f} ms)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_line_video(tmp / "line.mp4", n=300, size=size)
        results = {"video file": infer(args.model, str(video), tmp / "file", 300)}
        server = RtspServer(video, max_seconds=args.seconds + 30, tmp=tmp).start()
        try:
            results["RTSP 30 FPS"] = infer(args.model, server.url, tmp / "rtsp", int(30 * args.seconds))
        finally:
            server.stop()
    for name, s in results.items():
        lat = s["latency_ms"]
        stages = ", ".join(f"{k.replace('_ms', '')} p50 {v['p50']:.2f} / p99 {v['p99']:.2f}" for k, v in lat.items())
        print(f"{name}: {s['frames']} frames, {s['fps']:.1f} FPS "
              f"({s['fps'] * model_only.mean_ms / 1000:.2f}x model-only), dropped {s['dropped']}; ms: {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
