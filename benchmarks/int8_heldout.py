"""INT8 on parts the quantizer never saw: accuracy of every quantization recipe on a held-out split.

    python benchmarks/int8_heldout.py --preset tiny --out benchmarks/results/int8-heldout-tiny.md

Three generated splits of the same part kinds: `train` (training and the calibration images),
`val` (the gate and the mixed-precision search of `dualkd-edge quantize --val`) and `heldout`
(touched by nothing but this report). For each target (TensorRT: symmetric INT8, FP16 in between;
CPU: UINT8 activations, FP32 in between) it measures all-INT8 with each calibration method, with
SmoothQuant smoothing, with 4x more calibration images, and the product path (`quantize --val`:
the gate picks the method, then the most sensitive layer groups return to float until it passes).
Targets (issue 13): image AUROC drop <= 0.5 points and the same OK/NG decision as FP32 on >= 97% of
the held-out images. Random-init teachers: a pipeline measurement, not the paper's accuracy."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_DROP, MIN_AGREE = 0.5, 0.97


def prepare(preset: str, steps: int, work: Path) -> dict[str, Path]:
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.data.synth import generate_dataset
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    size = 128 if preset == "tiny" else 224
    paths = {"train": work / "train", "val": work / "val", "heldout": work / "heldout"}
    for (name, path), seed in zip(paths.items(), (0, 101, 202)):
        if not path.is_dir():
            generate_dataset(path, n_train=80 if name == "train" else 4, n_test_good=30, n_test_defect=10, seed=seed,
                             size=size)
    run = work / f"{preset}-run"
    if not (run / "run.json").is_file():
        train(TrainConfig(data=[paths["train"]], out=run, preset=preset, weights="none", steps=steps,
                          batch_size=16 if preset == "tiny" else 8, checkpoint_every=10**9))
    paths["fp32"] = work / f"{preset}.onnx"
    if not paths["fp32"].is_file():
        export_onnx(run, paths["fp32"], ExportOptions())
    for n in (64, 256):
        calib = work / f"calib{n}"
        if not calib.is_dir():
            sample_calibration_set([paths["train"]], n, calib)
        paths[f"calib{n}"] = calib
    return paths


def heldout_verdict(fp32_row, path: Path, heldout) -> dict:
    from dualkd_edge.compile.int8.accuracy_gate import evaluate_for_gate, judge

    gate, _ = judge(fp32_row, evaluate_for_gate(path, heldout), MAX_DROP, 1 - MIN_AGREE)
    agree = 1 - gate["decisions"]["disagree_share"]
    drop = gate["drop_points"]["image_auroc"]
    return {"image_auroc": gate["int8"]["image_auroc"], "image_drop": drop,
            "pixel_drop": gate["drop_points"].get("pixel_auroc"), "agreement": agree,
            "met": drop <= MAX_DROP and agree >= MIN_AGREE}


# key (for --recipes), label, QuantizeOptions overrides: the all-INT8 variants tried.
RECIPES = [("minmax", "minmax, 64 images", {"method": "minmax"}),
           ("percentile", "percentile 99.99, 64 images", {"method": "percentile"}),
           ("entropy", "entropy (KL, 2048 bins), 64 images", {"method": "entropy"}),
           ("smooth", "minmax + SmoothQuant alpha 0.5", {"method": "minmax", "smooth": 0.5}),
           ("calib256", "minmax, 256 images", {"method": "minmax", "calib": "calib256"})]


def run_target(target: str, paths: dict, fp32_row, heldout, work: Path, only: set[str] | None) -> list[dict]:
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.compile.int8.quantize import QuantizationSession, QuantizeOptions

    rows = []
    for key, label, overrides in RECIPES:
        if only is not None and key not in only:
            continue
        overrides = dict(overrides)
        calib = paths[overrides.pop("calib", "calib64")]
        opts = QuantizeOptions(calib=calib, samples=256, target=target, **overrides)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            session = QuantizationSession(paths["fp32"], opts, Path(tmp))
            out = work / f"{target}-{len(rows)}.onnx"
            save_onnx_atomic(session.candidate(opts.method), out)
        verdict = heldout_verdict(fp32_row, out, heldout)
        rows.append({"recipe": f"all INT8: {label}", **verdict, "seconds": time.perf_counter() - t0})
        print(target, rows[-1], flush=True)
    if only is not None and "product" not in only:
        return rows
    # The product path: what `dualkd-edge quantize --val` does by default, run as the user would.
    out = work / f"{target}-product.onnx"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "dualkd_edge.cli", "quantize", str(paths["fp32"]), "--calib", str(paths["calib64"]),
           "--out", str(out), "--val", str(paths["val"]), "--method", "auto", "--target", target]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout, proc.stderr[-2000:], flush=True)
    if out.is_file():
        meta = json.loads({p.key: p.value for p in __import__("onnx").load(str(out), load_external_data=False)
                           .metadata_props}["dualkd_edge"])
        kept = meta["export"]["quantization"]["kept_float"]
        verdict = heldout_verdict(fp32_row, out, heldout)
        rows.append({"recipe": f"`quantize --val --method auto` ({meta['export']['quantization']['method']}, "
                               f"{len(kept)} group(s) kept float: {', '.join(kept) or 'none'})",
                     **verdict, "seconds": time.perf_counter() - t0, "command": " ".join(cmd[2:])})
    else:
        rows.append({"recipe": "`quantize --val --method auto`: gate failed on val", "met": False,
                     "seconds": time.perf_counter() - t0})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--targets", default="tensorrt,cpu")
    ap.add_argument("--work", type=Path, default=Path("bench_work/int8"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8-heldout.md"))
    ap.add_argument("--recipes", default="all",
                    help="'all' or a comma list of minmax, percentile, entropy, smooth, calib256, product "
                         "(the larger presets are slow)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from dualkd_edge.compile.int8.accuracy_gate import evaluate_for_gate
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.console.tables import markdown_table

    t0 = time.perf_counter()
    work = args.work / args.preset
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.preset, args.steps, work)
    heldout = discover_all([paths["heldout"]])
    fp32_row = evaluate_for_gate(paths["fp32"], heldout)
    sections = [f"# INT8 on held-out parts: `{args.preset}` (random-init teacher, {args.steps} steps)\n",
                f"Command: `python benchmarks/int8_heldout.py {' '.join(sys.argv[1:])}`\n",
                f"FP32 on the held-out split ({len(fp32_row.scores)} images, never used by calibration or the "
                f"gate): image AUROC {fp32_row.mean['image_auroc']:.4f}, pixel AUROC "
                f"{fp32_row.mean.get('pixel_auroc') or float('nan'):.4f}. Targets: drop <= {MAX_DROP} points, "
                f"same OK/NG as FP32 on >= {100 * MIN_AGREE:.0f}% of images.\n"]
    results = {}
    for target in args.targets.split(","):
        only = None if args.recipes == "all" else set(args.recipes.split(","))
        rows = run_target(target, paths, fp32_row, heldout, work, only)
        results[target] = rows
        table = [[r["recipe"], f"{r.get('image_auroc', float('nan')):.4f}", f"{r.get('image_drop', float('nan')):+.2f}",
                  f"{r.get('pixel_drop') or 0:+.2f}", f"{100 * r.get('agreement', 0):.1f}%",
                  "yes" if r["met"] else "no", f"{r['seconds']:.0f}"] for r in rows]
        sections.append(f"## Target `{target}`\n\n" + markdown_table(
            ["recipe", "image AUROC", "drop (points)", "pixel drop", "same OK/NG", "targets met", "s"], table))
    sections.append(f"Total wall time {time.perf_counter() - t0:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(sections) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
