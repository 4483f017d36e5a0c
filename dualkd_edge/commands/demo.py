"""`dualkd-edge demo`: the whole product on generated data in a few minutes on a CPU."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import typer

from dualkd_edge.commands.options import FloatOption, Seed
from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")

MARKER = ".dualkd-edge-demo"
DEMO_MAX_DROP = 1.0  # points of image AUROC; looser than quantize's 0.5: the demo's test split is small (104 images)
DEMO_MAX_FPR = 0.01  # the false-alarm budget the station is commissioned for
COMMISSION_FRAMES = 320  # a 1% budget at 95% confidence needs 299 good frames after outliers (decision/budget.py)


def command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="folder for the generated data and everything made from it"),
    max_time: float = FloatOption(120.0, "--max-time", help="training time budget in seconds"),
    steps: int = typer.Option(600, "--steps", help="training steps (fewer if --max-time runs out first)"),
    seed: Seed = 0,
) -> None:
    """Generate a multi-class dataset, train the tiny preset and report image AUROC (CPU, minutes)."""
    run(out, max_time, steps, seed)


def prepare_out(out: Path) -> None:
    """The demo owns its folder: reuse one it made before, refuse to clobber anything else."""
    from dualkd_edge.output_paths import check_outputs

    check_outputs(folders={"--out": out})
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out: {out} exists and was not made by `dualkd-edge demo`; choose an empty folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by dualkd-edge demo; safe to delete\n")


def run(out: Path, max_time: float, steps: int, seed: int) -> dict:
    from dualkd_edge.console.tables import text_table
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.data.synth import generate_dataset
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.evaluate_splits import evaluate
    from dualkd_edge.metadata import NOT_PRETRAINED_LABEL
    from dualkd_edge.recipes import train_once

    t_start = time.perf_counter()
    prepare_out(out)
    print(f"[1/6] generating a two-part-kind production-line dataset in {out / 'data'}")
    data = generate_dataset(out / "data", seed=seed)
    print(f"[2/6] training the 'tiny' preset for at most {max_time:.0f} s ({NOT_PRETRAINED_LABEL})")
    result = train_once([data], out / "run", preset="tiny", weights="none", steps=steps, max_time=max_time,
                        seed=seed, checkpoint_every=10**9)
    print(f"      {result.steps} steps in {result.seconds:.0f} s; final losses "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items()))
    print("[3/6] evaluating on the test split (good parts, scratches, spots, missing pieces, wrong part kind)")
    with Detector.load(out / "run", device="cpu") as det:
        report = evaluate(det, discover_all([data]))
    rows = [[cat, r["n_images"], r["image_auroc"], r["local_auroc"], r["semantic_auroc"], r["pixel_auroc"],
             r["pixel_aupro"]] for cat, r in report.rows.items()]
    mean = report.mean_row()
    rows.append(["MEAN", len(report.records), mean["image_auroc"], mean["local_auroc"], mean["semantic_auroc"],
                 mean["pixel_auroc"], mean["pixel_aupro"]])
    print(text_table(["category", "n", "image AUROC (Noisy-OR)", "local", "semantic", "pixel AUROC",
                      "AUPRO"], rows))
    print("      (the OK/NG threshold comes from the line's own camera in step 6, not from these stills)")
    deploy = export_and_quantize(out, data)
    stream = commission_and_stream(out)
    wall = time.perf_counter() - t_start
    print("\nrandom-teacher pipeline figures, not the paper's (pretrained DINOv2 weights are needed for those)")
    print(f"done in {wall:.0f} s. Written to {out}:")
    print("  data/        generated dataset (MVTec-AD layout)\n  run/         trained model (model.safetensors, run.json)")
    print("  model.onnx   fused FP32 graph     model.int8.onnx   INT8 Q/DQ graph     calib_data/  calibration images")
    print("  commission.mp4  good parts filmed for the station's calibration ('line', stored in model.onnx:"
          " `dualkd-edge info model.onnx`)")
    print("  line.mp4     generated camera video; stream/ its overlay video, frames.jsonl and summary.json")
    return {"report": report, "wall_seconds": wall, "train": result, "stream": stream, **deploy}


def commission_and_stream(out: Path):
    """Commission the station on its own camera (a video of good parts: `dualkd-edge calibrate`), then
    run the line video through model.onnx like `dualkd-edge infer`, and say what the decisions cost."""
    from dualkd_edge.commands.calibrate import CalibrateRequest, run_calibrate
    from dualkd_edge.data.synth import line_video_defect, write_line_video
    from dualkd_edge.detector import Detector
    from dualkd_edge.fileio import write_json_atomic
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    commissioning = write_line_video(out / "commission.mp4", n=COMMISSION_FRAMES, seed=90_000, defects=False)
    print(f"[6/6] commissioning the station: `dualkd-edge calibrate model.onnx {commissioning.name} --frames "
          f"{COMMISSION_FRAMES} --max-fpr {DEMO_MAX_FPR}` (good parts filmed by the line's camera)")
    run_calibrate(CalibrateRequest(out / "model.onnx", str(commissioning), frames=COMMISSION_FRAMES,
                                   max_fpr=DEMO_MAX_FPR, name="line"))
    video = write_line_video(out / "line.mp4")
    print(f"      streaming {video.name} (120 frames, 30 % defective) through model.onnx like `dualkd-edge infer`")
    stream_dir = out / "stream"
    with Detector.load(out / "model.onnx") as det:
        runner = StreamRunner(det, parse_source(str(video)), StreamOptions(
            out=stream_dir, jsonl=stream_dir / "frames.jsonl", save_video=True))
        summary = runner.run()
    write_json_atomic(stream_dir / "summary.json", summary.to_dict())
    print("      " + summary.format().replace("\n", "\n      "))
    print("      " + line_decisions(stream_dir / "frames.jsonl", line_video_defect))
    return summary


def line_decisions(jsonl: Path, defect_of) -> str:
    """False alarms on the good parts and the catch rate on the defective ones of a labelled video."""
    import json

    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    good = [r["is_anomaly"] for r in records if defect_of(r["frame"]) is None]
    bad = [r["is_anomaly"] for r in records if defect_of(r["frame"]) is not None]
    return (f"on the line: {sum(good)} of {len(good)} good parts rejected ({sum(good) / max(1, len(good)):.1%}; "
            f"budget {DEMO_MAX_FPR:.0%}), {sum(bad)} of {len(bad)} defective parts caught "
            f"({sum(bad) / max(1, len(bad)):.0%})")


def export_and_quantize(out: Path, data: Path) -> dict:
    """Export, calibrate, quantize, and compare PyTorch / ONNX Runtime FP32 / INT8 side by side."""
    from contextlib import ExitStack

    from dualkd_edge.artifacts import open_backend
    from dualkd_edge.bench.timing import backend_contender, time_side_by_side
    from dualkd_edge.commands.quantize import QuantizeRequest, run_quantize
    from dualkd_edge.compile.int8.accuracy_gate import accuracy_gate
    from dualkd_edge.console.tables import text_table
    from dualkd_edge.recipes import deploy

    print("[4/6] exporting one fused ONNX graph, sampling calibration images, quantizing to INT8")
    # The demo runs on the CPU: UINT8 activations take ONNX Runtime's fast U8S8 kernels.
    deployment = deploy(out / "run", data, out, target="cpu", quantize=False)
    worst = max(d.max_abs for d in deployment.export_differences)
    print(f"      ONNX Runtime vs PyTorch: largest difference {worst:.1e} (all within tolerance)")
    # What `dualkd-edge quantize --val` does: all-INT8 first, then the most sensitive layer groups
    # back to float until the gate passes (on the test split here, as the threshold: said below).
    request = QuantizeRequest(deployment.onnx, deployment.calib, deployment.int8, samples=64, target="cpu",
                              val=data, max_drop=DEMO_MAX_DROP)
    int8 = deployment.int8 if run_quantize(request) == 0 else request.rejected
    gate, passed = accuracy_gate(deployment.onnx, int8, data, max_drop=DEMO_MAX_DROP)
    print("[5/6] FP32 vs INT8 accuracy, and latency at batch 1 measured side by side on this machine")
    models = {"PyTorch eager": out / "run", "ONNX Runtime FP32": deployment.onnx,
              "ONNX Runtime INT8": int8}
    with ExitStack() as stack:
        contenders = {label: backend_contender(stack.enter_context(open_backend(path, device="cpu")))
                      for label, path in models.items()}
        time_side_by_side(list(contenders.values()), warmup=5, iters=40)
    rows = []
    for label, contender in contenders.items():
        stats = contender.stats()[0]
        acc = gate["int8"] if "INT8" in label else gate["fp32"]
        rows.append([label, acc["image_auroc"], acc["pixel_auroc"], stats.p50_ms, stats.p99_ms, stats.throughput])
    base = rows[0][3]
    for r in rows:
        r.append(f"{base / r[3]:.2f}x")
    print(text_table(["model", "image AUROC", "pixel AUROC", "p50 ms", "p99 ms", "img/s", "speed-up"], rows))
    print(f"      INT8 accuracy gate (95% upper bounds: AUROC drop <= {DEMO_MAX_DROP:g} point, OK/NG changes <= 3%; "
          f"mixed precision chosen on the test split): {'PASSED' if passed else 'FAILED'}"
          + ("" if passed or gate.get("provable", True) else
             " (the demo's test split is too small to prove any model within budget: see `quantize --val`)"))
    return {"gate": gate, "latency_rows": rows}
