"""Decisions on a line, measured (issue "Decisions that hold on a real line"; run by line_decisions.sh).

  python benchmarks/line_decisions.py make WORK      parts (stills) -> train -> m.onnx, and H.264 videos:
                                                     commission.mp4 (good), line.mp4 (1 in 5 defective,
                                                     labels in line_labels.json), shifted.mp4 (the line,
                                                     lamp dimmed and slightly out of focus), long.mp4
  python benchmarks/line_decisions.py line WORK      false alarms / catch rate of line.jsonl
  python benchmarks/line_decisions.py drift WORK     false drift alarms per day on long normal runs
                                                     (resampled) and the delay after a lamp dims
  python benchmarks/line_decisions.py swap WORK      calibrate and a corrupt model under a long infer on m.onnx

Random-init teacher: the figures show the decision machinery works, not the paper's accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FPS = 25.0  # the cameras' frame rate the rates per day are given at
DAY_FRAMES = int(24 * 3600 * FPS)


def make(work: Path, steps: int = 300) -> None:
    from dualkd_edge.data.synth import camera_frames, generate_dataset, write_h264
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    work.mkdir(parents=True, exist_ok=True)
    data = generate_dataset(work / "data", seed=5)
    train(TrainConfig(data=[data], out=work / "run", steps=steps, progress=False, seed=0))
    export_onnx(work / "run", work / "m.onnx", ExportOptions())
    write_h264(work / "commission.mp4", [f for f, _ in camera_frames(300, 11)], FPS)
    line = camera_frames(600, 12, defect_every=5)
    write_h264(work / "line.mp4", [f for f, _ in line], FPS)
    (work / "line_labels.json").write_text(json.dumps([d for _, d in line]))
    write_h264(work / "shifted.mp4", [f for f, _ in camera_frames(600, 12, defect_every=5, lamp=0.6, blur=1.0)], FPS)
    write_h264(work / "long.mp4", [f for f, _ in camera_frames(3000, 13, defect_every=5)], FPS)
    for lamp in (0.9, 0.8, 0.7):
        write_h264(work / f"lamp{lamp}.mp4", [f for f, _ in camera_frames(600, 14, defect_every=5, lamp=lamp)], FPS)
    print(f"made {work}: m.onnx, commission.mp4 (300 good), line.mp4 (600, labelled), shifted.mp4, long.mp4 (3000), "
          "lamp0.9/0.8/0.7.mp4")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def line_report(work: Path) -> dict:
    labels = json.loads((work / "line_labels.json").read_text())
    recs = records(work / "line.jsonl")
    good = np.array([r["is_anomaly"] for r in recs if labels[r["frame"]] is None])
    bad = np.array([r["is_anomaly"] for r in recs if labels[r["frame"]] is not None])
    out = {"frames": len(recs), "good": int(good.size), "false_alarms": int(good.sum()),
           "false_alarm_rate": float(good.mean()), "defects": int(bad.size), "caught": int(bad.sum()),
           "catch_rate": float(bad.mean()), "threshold": sorted({r["threshold"] for r in recs}),
           "calibration": sorted({r["calibration"] for r in recs})}
    print(f"line: {out['false_alarms']} of {out['good']} good frames rejected ({out['false_alarm_rate']:.2%}), "
          f"{out['caught']} of {out['defects']} defective caught ({out['catch_rate']:.1%}), "
          f"calibration {out['calibration']} threshold {out['threshold']}")
    return out


def _score(model: Path, video: Path, jsonl: Path) -> list[dict]:
    if jsonl.exists():
        jsonl.unlink()
    subprocess.run(["dualkd-edge", "infer", str(model), str(video), "--jsonl", str(jsonl), "--no-watch",
                    "--calibration", "commission"],
                   check=True, capture_output=True)
    return records(jsonl)


def _monitor_run(quantiles, rows, calibration) -> "object":
    from dualkd_edge.decision.drift import DriftMonitor

    monitor = DriftMonitor("cam", "station", quantiles)
    for i, (logit, zl, zs) in enumerate(rows):
        monitor.update(i, logit, (zl, zs))
    return monitor.state


def drift_report(work: Path, days: float = 2.0, block: int = 25, seed: int = 0) -> dict:
    """False alarms: long.mp4's frames (3000, 1 in 5 defective) scored once, then resampled in blocks
    of `block` consecutive frames (keeping short-range structure) into `days` of frames at FPS.
    Delay: line frames, then a dimmed lamp from frame 500 on."""
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.decision.calibrations import select_calibration

    model = work / "m.onnx"
    cal = select_calibration(read_metadata(model), "commission")
    z = lambda r: cal.branch_z(r["local_score"], r["semantic_score"])  # noqa: E731
    rows = lambda recs: [(r["score_logit"], *z(r)) for r in recs]  # noqa: E731
    long_rows = np.array(rows(_score(model, work / "long.mp4", work / "long.jsonl")))
    rng = np.random.default_rng(seed)
    n = int(days * DAY_FRAMES)
    starts = rng.integers(0, len(long_rows) - block, n // block + 1)
    stream = np.concatenate([long_rows[s:s + block] for s in starts])[:n]
    t0 = time.perf_counter()
    state = _monitor_run(cal.calibration.score_quantiles, stream, cal.name)
    alarms = sum(1 for e in state.events if e["event"] == "alarm")
    out = {"calibration": cal.name, "normal_frames": n, "days_at_fps": days, "fps": FPS, "false_alarms": alarms,
           "false_alarms_per_day": alarms / days, "seconds": round(time.perf_counter() - t0, 1), "delays": {}}
    print(f"drift: {alarms} false alarm(s) in {n} resampled frames of a healthy line with 1 in 5 defective "
          f"({days:g} days at {FPS:g} FPS): {alarms / days:.2f} per day")
    line_rows = rows(_score(model, work / "line.mp4", work / "line_scores.jsonl"))[:500]
    for name in ("lamp0.9", "lamp0.8", "lamp0.7", "shifted"):
        dim_rows = rows(_score(model, work / f"{name}.mp4", work / f"{name}.jsonl"))
        state = _monitor_run(cal.calibration.score_quantiles, line_rows + dim_rows, cal.name)
        delay = None if state.first_frame is None else state.first_frame - 500
        out["delays"][name] = delay
        print(f"  lamp dims at frame 500 ({name}): " + (f"alarm after {delay} frames" if delay is not None
                                                        else "no alarm within 600 frames"))
    return out


def swap_report(work: Path) -> dict:
    """A long infer on m.onnx; `calibrate` on the same file mid-run; then a corrupt file renamed over
    it (the calibrated model is put back once the run has ended, for `info`)."""
    import shutil

    model = work / "m.onnx"
    keep = work / "m.keep.onnx"
    jsonl = work / "swap.jsonl"
    if jsonl.exists():
        jsonl.unlink()
    proc = subprocess.Popen(["dualkd-edge", "infer", str(model), str(work / "long.mp4"), "--jsonl", str(jsonl),
                             "--fps-limit", "100", "--out", str(work / "swap")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not jsonl.exists() or len(records(jsonl)) < 200:
        time.sleep(0.2)
    before = records(jsonl)[-1]["calibration"]
    subprocess.run(["dualkd-edge", "calibrate", str(model), str(work / "long.mp4"), "--frames", "300",
                    "--max-fpr", "0.01", "--name", "mid-run"], check=True, capture_output=True)
    t_written = time.monotonic()
    while records(jsonl)[-1]["calibration"] != "mid-run":
        time.sleep(0.05)
    pickup = time.monotonic() - t_written
    shutil.copyfile(model, keep)
    (work / "corrupt.onnx").write_bytes(b"\x08\x07not a model" * 64)
    os.replace(work / "corrupt.onnx", model)
    _, err = proc.communicate()
    os.replace(keep, model)
    recs = records(jsonl)
    names = [r["calibration"] for r in recs]
    switch = names.index("mid-run")
    out = {"frames": len(recs), "video_frames": 3000, "in_order": [r["frame"] for r in recs] == list(range(len(recs))),
           "calibration_before": before, "switch_frame": switch, "threshold_before": recs[switch - 1]["threshold"],
           "threshold_after": recs[-1]["threshold"], "pickup_seconds": round(pickup, 2), "exit": proc.returncode,
           "refused": [line for line in err.splitlines() if "replacement refused" in line]}
    print(f"swap: {out['frames']} of 3000 frames, in order: {out['in_order']}; calibration '{before}' -> 'mid-run', "
          f"threshold {out['threshold_before']:.4g} -> {out['threshold_after']:.4g} from frame {switch}, {pickup:.2f} s "
          f"after calibrate wrote it; corrupt model renamed over it: {len(out['refused'])} refusal line(s), "
          f"exit {proc.returncode}")
    return out


if __name__ == "__main__":
    what, work = sys.argv[1], Path(sys.argv[2])
    if what == "make":
        make(work, int(sys.argv[3]) if len(sys.argv) > 3 else 300)
    else:
        result = {"line": line_report, "drift": drift_report, "swap": swap_report}[what](work)
        (work / f"{what}.json").write_text(json.dumps(result, indent=2))
