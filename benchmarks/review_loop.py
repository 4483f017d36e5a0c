"""The review loop, end to end (issue "The operator closes the loop"; docs/review.md):

  python benchmarks/review_loop.py WORK [--steps 150]

1. parts (stills) -> train -> m.onnx; H.264 videos: commissioning (good parts, no clamp), a line whose
   good parts show a new clamp in the frame every other part (the stills never do) with 1 in 5 parts
   defective, and a second line like it for measuring;
2. `calibrate`, then `infer --review review/ --http ... --http-token-file` on the line, the queue
   answered through the dashboard's API with the true labels while it runs;
3. `improve m.onnx --review review/ --data data/ --out m.new.onnx`;
4. old and new on the second line: false alarms on the clamp's good parts, catch rate on defects;
5. `infer` on the second line while m.new.onnx is renamed onto m.onnx: the hot swap.
Random-init teacher: the figures show the loop works, not the paper's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

# The loopback servers (RTSP, MJPEG, MQTT, Modbus, webhook) are the tests' own: tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TOKEN = "bench:review-bench-token-0123456789"
CLI = [sys.executable, "-m", "dualkd_edge.cli"]


def make(work: Path, steps: int) -> dict:
    from dualkd_edge.data.synth import camera_frames, generate_dataset, write_h264
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    work.mkdir(parents=True, exist_ok=True)
    data = generate_dataset(work / "data", seed=5)
    train(TrainConfig(data=[data], out=work / "run", steps=steps, progress=False, seed=0))
    export_onnx(work / "run", work / "m.onnx", ExportOptions())
    write_h264(work / "commission.mp4", [f for f, _ in camera_frames(200, 51)])
    labels = {}
    for name, seed, n in (("line", 52, 360), ("line2", 53, 600)):
        frames = camera_frames(n, seed, defect_every=5, fixture_every=2)
        write_h264(work / f"{name}.mp4", [f for f, _ in frames])
        labels[name] = [d for _, d in frames]
    (work / "labels.json").write_text(json.dumps(labels))
    (work / "tokens").write_text(TOKEN + "\n")
    return labels


def answer_while_running(work: Path, labels: list, port: int) -> dict:
    token = TOKEN.split(":", 1)[1]
    proc = subprocess.Popen([*CLI, "infer", "m.onnx", "line.mp4", "--review", "review", "--review-ok-rate", "0.2",
                             "--http", f"127.0.0.1:{port}", "--http-token-file", "tokens", "--fps-limit", "10",
                             "--out", "run-review"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    headers = {"Authorization": f"Bearer {token}"}
    answered = {"good": 0, "defect": 0}
    while proc.poll() is None:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/review", headers=headers)
            items = json.loads(urllib.request.urlopen(req, timeout=5).read())["items"]
        except OSError:
            time.sleep(0.5)
            continue
        for item in items:
            label = "good" if labels[item["frame"]] is None else "defect"
            body = json.dumps({"label": label}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/review/{item['id']}", data=body, method="POST",
                                         headers={**headers, "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=5).read()
                answered[label] += 1
            except OSError:
                pass
        time.sleep(0.3)
    proc.communicate()
    summary = json.loads((work / "run-review" / "summary.json").read_text())
    return {"answered": answered, "review_stats": summary.get("review")}


def line_rates(work: Path, model: str, labels: list, tag: str) -> dict:
    jsonl = work / f"{tag}.jsonl"
    if jsonl.exists():
        jsonl.unlink()
    subprocess.run([*CLI, "infer", model, "line2.mp4", "--jsonl", str(jsonl), "--no-watch"], cwd=work, check=True,
                   capture_output=True)
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    clamp_good = [r["is_anomaly"] for r in recs if labels[r["frame"]] is None and r["frame"] % 2 == 0]
    plain_good = [r["is_anomaly"] for r in recs if labels[r["frame"]] is None and r["frame"] % 2 == 1]
    defects = [r["is_anomaly"] for r in recs if labels[r["frame"]] is not None]
    return {"false_alarms_clamp": float(np.mean(clamp_good)), "false_alarms_plain": float(np.mean(plain_good)),
            "catch_rate": float(np.mean(defects)), "n_clamp_good": len(clamp_good), "n_defects": len(defects),
            "calibration": recs[0]["calibration"], "model_id": recs[0]["model_id"]}


def swap_while_running(work: Path) -> dict:
    jsonl = work / "swap.jsonl"
    if jsonl.exists():
        jsonl.unlink()
    proc = subprocess.Popen([*CLI, "infer", "m.onnx", "line2.mp4", "--jsonl", "swap.jsonl", "--fps-limit", "30"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not jsonl.exists() or len(jsonl.read_text().splitlines()) < 200:
        time.sleep(0.2)
    os.replace(work / "m.new.onnx", work / "m.onnx")  # promotion: a rename onto the watched model
    proc.communicate()
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    ids = [r["model_id"] for r in recs]
    return {"frames": len(recs), "in_order": [r["frame"] for r in recs] == list(range(len(recs))),
            "switch_frame": next((i for i, m in enumerate(ids) if m != ids[0]), None),
            "model_ids": sorted(set(ids)), "calibrations": sorted({r["calibration"] for r in recs})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--steps", type=int, default=300, help="training steps of the first model")
    ap.add_argument("--finetune-steps", type=int, default=150)
    args = ap.parse_args()
    from support.stream_servers import free_port

    work = args.work
    labels = make(work, args.steps)
    subprocess.run([*CLI, "calibrate", "m.onnx", "commission.mp4", "--frames", "200", "--name", "station"], cwd=work,
                   check=True)
    result = {"review": answer_while_running(work, labels["line"], free_port())}
    result["old"] = line_rates(work, "m.onnx", labels["line2"], "old")
    improve = subprocess.run([*CLI, "improve", "m.onnx", "--review", "review", "--data", "data", "--out", "m.new.onnx",
                              "--steps", str(args.finetune_steps)], cwd=work, capture_output=True, text=True)
    print(improve.stdout + improve.stderr)
    result["improve_exit"] = improve.returncode
    if improve.returncode == 0:
        result["new"] = line_rates(work, "m.new.onnx", labels["line2"], "new")
        result["swap"] = swap_while_running(work)
    (work / "review-loop.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if improve.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
