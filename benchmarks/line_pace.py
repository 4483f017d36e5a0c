"""Does the line keep pace? `infer` with and without file outputs, side by side in one run:

    python benchmarks/line_pace.py MODEL.onnx [--frames 200] [--live-frames 1000] [--no-live]

1. video file: `infer` alone vs `infer --save-video --save-images anomalies`, in alternating pairs;
   target: FPS with outputs >= 0.95x FPS without. Three settings: frames at the model's size with the
   default threads (every core for the model, or every core but one when painting and encoding an
   overlay cost more than that core gives the model: stream/outputs/core_share.py), the same with one thread
   both ways (the model's share of the CPU held equal, one core free: what the output thread itself
   costs), and 1280x720 frames (a camera's size: the resize is on the capture thread).
2. live RTSP camera at 25 FPS (ffmpeg, the tests' loopback server): e2e p50 (frame decoded ->
   decision) against the inference p50, with and without the file outputs; target <= 1.1x.
3. the same camera for `--live-frames` frames (the pipeline at <= 50% of its capacity for the tiny
   model): dropped frames by cause; target 0.
Prints a Markdown report (and writes it with --report)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

OUTPUTS = ["--save-video", "--save-images", "anomalies"]


def infer(model: Path, source: str, out: Path, max_frames: int, outputs: bool, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), source, "--out", str(out),
           "--max-frames", str(max_frames), *(OUTPUTS if outputs else []), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def video_pairs(model: Path, video: Path, frames: int, tmp: Path, extra: tuple[str, ...] = (),
                pairs: int = 3) -> list[tuple[float, float]]:
    """(FPS without outputs, FPS with) per alternating pair; the order flips each pair."""
    result = []
    for k in range(pairs):
        runs = {}
        for outputs in ((False, True) if k % 2 == 0 else (True, False)):
            runs[outputs] = infer(model, str(video), tmp / f"file{k}{int(outputs)}", frames, outputs, extra)["fps"]
        result.append((runs[False], runs[True]))
    return result


def live_runs(model: Path, video: Path, frames: int, live_frames: int, tmp: Path) -> dict[str, dict]:
    from support.stream_servers import RtspServer

    server = RtspServer(video, max_seconds=(2 * frames + live_frames) / 25 + 60, tmp=tmp).start()
    try:
        return {"without outputs": infer(model, server.url, tmp / "live0", frames, False),
                "with outputs": infer(model, server.url, tmp / "live1", frames, True),
                "long run": infer(model, server.url, tmp / "live2", live_frames, False)}
    finally:
        server.stop()


def report(settings: dict[str, list[tuple[float, float]]], live: dict[str, dict], frames: int) -> str:
    lines = [f"## Video file ({frames} frames, H.264)", "", "| setting | pair | FPS without outputs | FPS with outputs "
             "| ratio |", "|---|---|---|---|---|"]
    medians = []
    for name, pairs in settings.items():
        lines += [f"| {name} | {k + 1} | {wo:.1f} | {w:.1f} | {w / wo:.2f}x |" for k, (wo, w) in enumerate(pairs)]
        medians.append(f"{name}: **{statistics.median(w / wo for wo, w in pairs):.2f}x**")
    lines += ["", "median ratio (target >= 0.95x): " + "; ".join(medians)]
    if not live:
        return "\n".join(lines)
    lines += ["", "## Live RTSP camera, 25 FPS", "", "| run | frames | e2e p50 ms | inference p50 ms | e2e / inference | "
              "resize / preprocess / postprocess p50 ms | dropped | by cause |", "|---|---|---|---|---|---|---|---|"]
    for name, s in live.items():
        lat = s["latency_ms"]
        host = " / ".join(f"{lat[k]['p50']:.2f}" for k in ("resize_ms", "preprocess_ms", "postprocess_ms"))
        lines.append(f"| {name} | {s['frames']} | {lat['e2e_ms']['p50']:.2f} | {lat['inference_ms']['p50']:.2f} | "
                     f"{lat['e2e_ms']['p50'] / lat['inference_ms']['p50']:.2f}x | {host} | {s['dropped']} | "
                     f"{s['dropped_by_cause']} |")
    lines += ["", "targets: e2e p50 <= 1.1x inference p50; 0 drops over the long run"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--live-frames", type=int, default=1000)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--no-live", action="store_true",
                    help="video files only (a model slower than the camera's 25 FPS cannot keep its pace)")
    args = ap.parse_args()
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.data.synth import write_line_video

    size = read_metadata(args.model).input.height
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_line_video(tmp / "line.mp4", n=args.frames, size=size, fps=25.0)
        h264, h264_720p = tmp / "line_h264.mp4", tmp / "line_720p.mp4"  # a camera's codec: H.264
        for target, scale in ((h264, []), (h264_720p, ["-vf", "scale=1280:720"])):
            subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(video), *scale, "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", str(target)], check=True)
        settings = {f"{size} px, default threads": video_pairs(args.model, h264, args.frames, tmp),
                    f"{size} px, --threads 1 both": video_pairs(args.model, h264, args.frames, tmp, ("--threads", "1")),
                    "1280x720, default threads": video_pairs(args.model, h264_720p, args.frames, tmp)}
        live = {} if args.no_live else live_runs(args.model, h264, args.frames, args.live_frames, tmp)
    text = (f"# Line pace: {args.model.name}\n\nmachine: {platform.processor() or platform.machine()}, "
            f"{platform.platform()}\n\n" + report(settings, live, args.frames) + "\n")
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
