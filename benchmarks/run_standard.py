"""The standard comparison on this machine: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8
(vs TensorRT FP16/INT8 where TensorRT and a GPU are present) for the tiny and edge-s224 presets.

    python benchmarks/run_standard.py --out benchmarks/results/cpu-2core.md

Random-init teachers (no pretrained weights needed for speed); each preset is trained briefly on
the generated demo data so that the INT8 accuracy drop is measured on a model that works.
Every number in one report comes from one run, side by side."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {
    "ort_fp32_vs_pytorch": 1.3,
    "int8_vs_fp32": 1.7,
    "int8_auroc_drop_points": 0.5,
    "e2e_vs_model_only": 0.9,
    "p99_over_p50": 1.3,
    "fp32_share_of_matmul_gflops": 0.5,
}


def prepare(preset: str, steps: int, work: Path, data: Path, video: Path) -> dict[str, Path]:
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    run = work / f"{preset}-run"
    if not (run / "run.json").is_file():
        train(TrainConfig(data=[data], out=run, preset=preset, weights="none", steps=steps,
                          batch_size=16 if preset == "tiny" else 8, checkpoint_every=10**9))
    fp32 = work / f"{preset}.onnx"
    if not fp32.is_file():
        export_onnx(run, fp32, ExportOptions(batch="dynamic"))
    calib = work / "calib"
    if not calib.is_dir():
        sample_calibration_set([data], 64, calib)
    int8 = work / f"{preset}.int8.onnx"
    if not int8.is_file():
        quantize_int8(fp32, calib, int8, "minmax", 64, target="cpu")
    models = {"pytorch": run, "ort_fp32": fp32, "ort_int8": int8}
    try:  # TensorRT rows where it exists
        import tensorrt  # noqa: F401

        from dualkd_edge.compile.tensorrt.plan import BuildOptions
        from dualkd_edge.compile.tensorrt.build import build_engine

        int8_trt = quantize_int8(fp32, calib, work / f"{preset}.int8-trt.onnx", "minmax", 64).path
        for precision, src in (("fp16", fp32), ("int8", int8_trt)):
            engine = work / f"{preset}.{precision}.engine"
            build_engine(src, engine, BuildOptions(precision=precision, batch="1:4:8", calib=calib))
            models[f"trt_{precision}"] = engine
    except ImportError:
        logging.getLogger("dualkd_edge").info("TensorRT not installed: no TensorRT rows")
    return models


def bench_in_fresh_process(models: list[Path], iters: int, video: Path, data: Path, json_out: Path) -> dict:
    """`dualkd-edge bench` in its own process: the training and export above leave PyTorch's and
    ONNX Runtime's thread pools behind in this one, which would slow whatever is timed next."""
    cmd = [sys.executable, "-m", "dualkd_edge.cli", "bench", *map(str, models), "--batch", "1,4", "--iters", str(iters),
           "--source", str(video), "--val", str(data), "--json", str(json_out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_out.read_text())


def target_table(report: dict, models: dict[str, Path]) -> list[tuple[str, str, str, bool]]:
    from dualkd_edge.bench.report import speedup

    rows = {(Path(r["model"]).name, r["batch"]): r for r in report["rows"] if r["latency_ms"]}

    def faster(base: str, other: str) -> float:  # paired over the alternating timing rounds
        return speedup(rows[(Path(models[base]).name, 1)], rows[(Path(models[other]).name, 1)])

    out = []
    r = faster("pytorch", "ort_fp32")
    out.append(("ONNX Runtime FP32 vs PyTorch eager (batch 1)", f"{r:.2f}x", f">= {TARGETS['ort_fp32_vs_pytorch']}x",
                r >= TARGETS["ort_fp32_vs_pytorch"]))
    r = faster("ort_fp32", "ort_int8")
    out.append(("ONNX Runtime INT8 vs FP32 (batch 1)", f"{r:.2f}x", f">= {TARGETS['int8_vs_fp32']}x",
                r >= TARGETS["int8_vs_fp32"]))
    acc = report["accuracy"]
    drop = 100 * (acc[str(models["ort_fp32"])]["image_auroc"] - acc[str(models["ort_int8"])]["image_auroc"])
    out.append(("INT8 image AUROC drop on the demo data", f"{drop:+.2f} points", "<= 0.5 points",
                drop <= TARGETS["int8_auroc_drop_points"]))
    e2e = report["end_to_end"][str(models["ort_fp32"])]
    out.append(("end-to-end FPS / model-only FPS, video file (FP32)", f"{e2e['ratio']:.2f}", ">= 0.9",
                e2e["ratio"] >= TARGETS["e2e_vs_model_only"]))
    tail = rows[(Path(models["ort_fp32"]).name, 1)]["latency_ms"]["p99_over_p50"]
    out.append(("p99 / p50 (ONNX Runtime FP32, batch 1)", f"{tail:.2f}", "<= 1.3", tail <= TARGETS["p99_over_p50"]))
    ref = report["machine"]["reference_matmul_gflops"]
    share = rows[(Path(models["ort_fp32"]).name, 1)]["achieved_gflops"] / ref
    out.append(("ONNX Runtime FP32 GFLOP/s vs a large matmul (batch 1)", f"{100 * share:.0f}% of {ref:.0f}", ">= 50%",
                share >= TARGETS["fp32_share_of_matmul_gflops"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.md"))
    ap.add_argument("--work", type=Path, default=Path("bench_work"))
    ap.add_argument("--presets", default="tiny,edge-s224")
    ap.add_argument("--tiny-steps", type=int, default=300)
    ap.add_argument("--edge-steps", type=int, default=40)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("dualkd_edge").setLevel(logging.INFO)

    from dualkd_edge.bench.report import to_markdown, to_text
    from dualkd_edge.data.synth import generate_dataset, write_line_video
    from dualkd_edge.console.tables import markdown_table

    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    if not data.is_dir():
        generate_dataset(data)
    video = write_line_video(args.work / "line.mp4", size=224)
    sections = [f"# Standard benchmark\n\nCommand: `python benchmarks/run_standard.py {' '.join(sys.argv[1:])}`\n"]
    for preset in args.presets.split(","):
        steps = args.tiny_steps if preset == "tiny" else args.edge_steps
        models = prepare(preset, steps, args.work, data, video)
        report = bench_in_fresh_process(list(models.values()), args.iters, video, data, args.work / f"{preset}.json")
        print(f"== {preset}\n{to_text(report)}")
        targets = target_table(report, models)
        for name, value, target, ok in targets:
            print(f"  {name}: {value} (target {target}) {'met' if ok else 'MISSED'}")
        sections.append(f"# Preset `{preset}` (random-init teacher, trained {steps} steps on the demo data)\n")
        sections.append(to_markdown(report))
        sections.append("### Targets\n\n" + markdown_table(["measure", "value", "target", "met"],
                                                          [[n, v, t, "yes" if ok else "NO"] for n, v, t, ok in targets]))
    sections.append(f"\nTotal wall time {time.perf_counter() - t0:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
