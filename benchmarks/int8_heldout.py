"""INT8 on parts the quantizer never saw: accuracy of every quantization recipe on a held-out split.

    python benchmarks/int8_heldout.py --preset tiny --out benchmarks/results/int8-heldout-tiny.md

Three generated splits of the same part kinds: `train` (training and the calibration images),
`val` (the gate and the mixed-precision search of `dualkd-edge quantize --val`) and `heldout`
(touched by nothing but this report). For each target (TensorRT: symmetric INT8, FP16 in between;
CPU: UINT8 activations, FP32 in between) it measures all-INT8 with each calibration method, with
SmoothQuant smoothing, with 4x more calibration images, and the product path (`quantize --val`:
the gate picks the method, then the most sensitive layer groups return to float until it passes).
Targets (issue 13): image AUROC drop <= 0.5 points and the same OK/NG decision as FP32 on >= 97% of
the held-out images. Random-init teachers: a pipeline measurement, not the paper's accuracy.

`--gate-study` (issue 27) asks whether the gate's verdicts hold on parts it never saw:

    python benchmarks/int8_heldout.py --gate-study --preset tiny --seed 27 \
        --out benchmarks/results/int8-gate-heldout-cpu-2core.md

On a new seed it makes a ladder of INT8 candidates, good and bad (both targets; minmax, percentile,
SmoothQuant; calibrated on 64 images, on 4, and on darkened images: the lighting of the calibration
shots differs from the line's, so the ranges clip), evaluates each once on a validation pool and
on a large held-out split, then draws several small stratified validation sets from the pool (the
same draws for every candidate) and records, per (candidate, draw), the old gate's verdict (point
estimates within budget) and the new one's (one-sided 95% upper bounds within budget), against
whether the candidate breaks the budget on the held-out split. Per-image scores are subsampled
(an image's score does not depend on which other images are evaluated), so the draws judge the
image-level criteria (image AUROC, OK/NG); the pixel AUROC is reported, not judged, here."""

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
    ap.add_argument("--gate-study", action="store_true", help="old (point estimate) vs new (upper bound) gate "
                    "verdicts on small validation draws, checked on a large held-out split (issue 27)")
    ap.add_argument("--seed", type=int, default=27, help="--gate-study: data seed (a new one: 0/101/202 are the "
                    "held-out study's)")
    ap.add_argument("--draws", type=int, default=6, help="--gate-study: validation draws per candidate")
    ap.add_argument("--draw-size", action="append", help="--gate-study: good,defective images per draw, "
                    "repeatable (default: 90,30 and 180,60)")
    ap.add_argument("--max-drop", type=float, default=MAX_DROP)
    ap.add_argument("--max-disagree", type=float, default=1 - MIN_AGREE)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.gate_study:
        args.draw_size = args.draw_size or ["90,30", "180,60"]
        return gate_study(args)

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


# -- issue 27: the gate's verdicts against held-out parts ---------------------------------------------------

# key, label, target, calibration set, QuantizeOptions overrides
STUDY_CANDIDATES = [(f"{t}-{key}", f"{t}: {label}", t, calib, overrides)
                    for t in ("cpu", "tensorrt")
                    for key, label, calib, overrides in (
                        ("minmax", "minmax, 64 images", "calib64", {"method": "minmax"}),
                        ("percentile", "percentile 99.99, 64 images", "calib64", {"method": "percentile"}),
                        ("smooth", "minmax + SmoothQuant 0.5", "calib64", {"method": "minmax", "smooth": 0.5}),
                        ("few", "minmax, 4 images", "calib4", {"method": "minmax"}),
                        ("dark90", "minmax, calibration shots at 90% brightness", "dark90", {"method": "minmax"}),
                        ("dark80", "minmax, calibration shots at 80% brightness", "dark80", {"method": "minmax"}))]


def prepare_study(preset: str, steps: int, work: Path, seed: int) -> dict[str, Path]:
    import cv2

    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.data.synth import generate_dataset
    from dualkd_edge.fileio import read_image
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.train.loop import TrainConfig, train

    size = 128 if preset == "tiny" else 224
    # val: the pool the small validation draws come from; heldout: large, seen by nothing but the verdicts.
    spec = {"train": (80, 4, 2), "val": (4, 200, 30), "heldout": (4, 250, 40)}  # n_train, good, per defect kind
    paths = {}
    for i, (name, (n_train, good, defect)) in enumerate(spec.items()):
        paths[name] = work / (f"{name}-{good}-{defect}" if name == "val" else name)
        if not paths[name].is_dir():
            generate_dataset(paths[name], n_train=n_train, n_test_good=good, n_test_defect=defect,
                             seed=seed * 1000 + i, size=size)
    run = work / f"{preset}-run"
    if not (run / "run.json").is_file():
        train(TrainConfig(data=[paths["train"]], out=run, preset=preset, weights="none", steps=steps,
                          batch_size=16 if preset == "tiny" else 8, checkpoint_every=10**9, seed=seed,
                          progress=False))
    paths["fp32"] = work / f"{preset}.onnx"
    if not paths["fp32"].is_file():
        export_onnx(run, paths["fp32"], ExportOptions())
    for n in (64, 4):
        paths[f"calib{n}"] = work / f"calib{n}"
        if not paths[f"calib{n}"].is_dir():
            sample_calibration_set([paths["train"]], n, paths[f"calib{n}"])
    for pct in (90, 80):
        folder = paths[f"dark{pct}"] = work / f"dark{pct}"
        if not folder.is_dir():
            folder.mkdir()
            for f in sorted(p for p in paths["calib64"].iterdir() if p.suffix == ".png"):
                img = read_image(f)
                cv2.imwrite(str(folder / f.name), (img.astype("float32") * pct / 100).round().astype("uint8"))
    return paths


def stratified_draws(row, n_good: int, n_defect: int, draws: int, seed: int) -> list:
    """`draws` validation sets of n_good + n_defect images from the pool, each category in its share."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cats = sorted(set(row.categories.tolist()))
    out = []
    for _ in range(draws):
        pick = []
        for label, total in ((0, n_good), (1, n_defect)):
            for j, cat in enumerate(cats):
                pool = np.flatnonzero((row.categories == cat) & (row.labels == label))
                k = total // len(cats) + (1 if j < total % len(cats) else 0)
                pick.append(rng.choice(pool, size=min(k, pool.size), replace=False))
        out.append(np.sort(np.concatenate(pick)))
    return out


def gate_study(args) -> int:
    from dualkd_edge.compile.int8.accuracy_gate import evaluate_for_gate
    from dualkd_edge.data.discovery import discover_all

    t0 = time.perf_counter()
    work = args.work / f"gate-study-{args.preset}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare_study(args.preset, args.steps, work, args.seed)
    prepared = time.perf_counter() - t0  # data, training, export: reused from --work when there
    print(f"prepared in {prepared:.0f} s", flush=True)
    splits = {"val": discover_all([paths["val"]]), "heldout": discover_all([paths["heldout"]])}
    fp32 = {name: evaluate_for_gate(paths["fp32"], cats) for name, cats in splits.items()}
    sizes = [tuple(int(v) for v in size.split(",")) for size in args.draw_size]
    draws = {g + d: stratified_draws(fp32["val"], g, d, args.draws, args.seed + i) for i, (g, d) in enumerate(sizes)}
    only = None if args.recipes == "all" else set(args.recipes.split(","))
    rows = [study_candidate(candidate, paths, work, splits, fp32, draws, args) for candidate in STUDY_CANDIDATES
            if only is None or candidate[0] in only]
    facts = {"wall": time.perf_counter() - t0, "prepared": prepared, "work": work, "sizes": sizes,
             "n_val": len(fp32["val"].scores), "n_heldout": len(fp32["heldout"].scores),
             "fp32_heldout_auroc": fp32["heldout"].mean["image_auroc"],
             "command": f"python benchmarks/int8_heldout.py {' '.join(sys.argv[1:])}"}
    write_study(args, rows, list(draws), facts)
    return 0


def study_candidate(candidate: tuple, paths: dict, work: Path, splits: dict, fp32: dict, draws: dict, args) -> dict:
    """Quantize one candidate (reused from --work when there), evaluate it once on the pool and the
    held-out split, and judge it on every draw with both gates."""
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.compile.int8.accuracy_gate import evaluate_for_gate, judge
    from dualkd_edge.compile.int8.quantize import QuantizationSession, QuantizeOptions

    key, label, target, calib, overrides = candidate
    t1 = time.perf_counter()
    out = work / f"{key}.onnx"
    if not out.is_file():
        opts = QuantizeOptions(calib=paths[calib], samples=64, target=target, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            session = QuantizationSession(paths["fp32"], opts, Path(tmp))
            save_onnx_atomic(session.candidate(opts.method), out)
    cand_val, cand_held = evaluate_for_gate(out, splits["val"]), evaluate_for_gate(out, splits["heldout"])
    held, _ = judge(fp32["heldout"], cand_held, args.max_drop, args.max_disagree)
    drop, share = held["drop_points"]["image_auroc"], held["decisions"]["disagree_share"]
    broke = drop > args.max_drop or share > args.max_disagree
    verdicts = []
    for size, size_draws in draws.items():
        for i, index in enumerate(size_draws):
            gate, new = judge(fp32["val"].subset(index), cand_val.subset(index), args.max_drop, args.max_disagree)
            b, d = gate["image_auroc_bound"], gate["decisions"]
            verdicts.append({"size": size, "draw": i, "old": gate["point_estimate_passed"], "new": new,
                             "drop": b["point"], "drop_upper": b["upper"], "disagree": d["disagree"], "n": d["n"],
                             "disagree_upper": d["upper"]})
    row = {"key": key, "label": label, "heldout_image_drop": drop,
           "heldout_pixel_drop": held["drop_points"].get("pixel_auroc"), "heldout_disagree_share": share,
           "heldout_n": held["decisions"]["n"], "broke": broke, "draws": verdicts, "seconds": time.perf_counter() - t1}
    print(f"{key}: held-out drop {drop:+.2f}, OK/NG differ {100 * share:.1f}%, broke {broke}; " + "; ".join(
        f"{size} images: old accepts {sum(v['old'] for v in verdicts if v['size'] == size)}/{args.draws}, new "
        f"{sum(v['new'] for v in verdicts if v['size'] == size)}/{args.draws}" for size in draws)
          + f" ({row['seconds']:.0f} s)", flush=True)
    return row


def study_tallies(rows: list[dict], sizes: list[int]) -> dict:
    """Per gate and draw size (and all sizes): decisions, accepted, accepted but broke on held-out."""
    decisions = [{"broke": r["broke"], **v} for r in rows for v in r["draws"]]

    def tally(gate: str, size: int | None) -> dict:
        mine = [d for d in decisions if size is None or d["size"] == size]
        accepted = [d for d in mine if d[gate]]
        return {"decisions": len(mine), "accepted": len(accepted), "accepted_broke": sum(d["broke"] for d in accepted),
                "within_budget": sum(1 for d in mine if not d["broke"]),
                "rejected_ok": sum(1 for d in mine if not d[gate] and not d["broke"])}

    return {f"{gate}@{size or 'all'}": tally(gate, size) for size in [*sizes, None] for gate in ("old", "new")}


def write_study(args, rows: list[dict], sizes: list[int], facts: dict) -> None:
    import numpy as np

    from dualkd_edge.console.tables import markdown_table

    tallies = study_tallies(rows, sizes)
    names = {"old": "old: point estimates within budget", "new": "new: 95% upper bounds within budget"}
    summary = [[names[gate], "all sizes" if size is None else f"{size}", t["decisions"], t["accepted"],
                t["accepted_broke"], f"{t['rejected_ok']} of {t['within_budget']}"]
               for size in [*sizes, None] for gate in ("old", "new") for t in [tallies[f"{gate}@{size or 'all'}"]]]

    def med(r: dict, size: int, key: str, scale: float = 1.0) -> float:
        return float(np.median([scale * v[key] for v in r["draws"] if v["size"] == size]))

    def accepts(r: dict, size: int, gate: str) -> str:
        return f"{sum(v[gate] for v in r['draws'] if v['size'] == size)}/{args.draws}"

    per_candidate = [[r["label"], f"{r['heldout_image_drop']:+.2f}", f"{(r['heldout_pixel_drop'] or 0):+.2f}",
                      f"{100 * r['heldout_disagree_share']:.1f}%", "yes" if r["broke"] else "no"]
                     + [cell for size in sizes for cell in (
                         f"{med(r, size, 'drop'):+.2f} / {med(r, size, 'drop_upper'):.2f}",
                         f"{med(r, size, 'disagree_upper', 100):.1f}%",
                         f"{accepts(r, size, 'old')} / {accepts(r, size, 'new')}")] for r in rows]
    size_columns = [c for size in sizes for c in (f"{size}: drop / 95% bound", f"{size}: OK/NG bound",
                                                    f"{size}: accepts old / new")]
    n_decisions = tallies["old@all"]["decisions"]
    text = "\n\n".join([
        f"# INT8 gate verdicts vs held-out parts: `{args.preset}`, seed {args.seed} (issue 27)",
        f"Command: `{facts['command']}`  \nMachine: 2-core Intel Xeon VM, 24 GiB, CPU only (ONNX Runtime CPU "
        f"provider). Wall time {facts['wall']:.0f} s, of which {facts['prepared']:.0f} s preparing the data and the "
        f"{args.steps}-step model (reused from {facts['work']} when an earlier run made them).",
        f"{len(rows)} INT8 candidates x {args.draws * len(sizes)} validation draws = {n_decisions} gate decisions. "
        f"{args.draws} draws of each size: " + ", ".join(f"{g + d} images ({g} good + {d} defective)"
                                                         for g, d in facts["sizes"])
        + f", both part kinds, stratified, from a validation pool of {facts['n_val']}; the same draws for every "
        f"candidate. Held-out split: {facts['n_heldout']} images never used by calibration or any gate; FP32 image "
        f"AUROC there {facts['fp32_heldout_auroc']:.4f}. Budget: image AUROC drop <= {args.max_drop} points and "
        f"OK/NG disagreement <= {100 * args.max_disagree:g}% (quantize's defaults). A candidate *broke the budget* "
        f"when its held-out drop or disagreement exceeds it.",
        "## Accepted models that broke the budget on held-out parts\n\n" + markdown_table(
            ["gate", "draw size", "decisions", "accepted", "accepted but broke the budget on held-out parts",
             "within-budget candidates rejected"], summary),
        "## Per candidate (medians over the draws of each size)\n\n" + markdown_table(
            ["candidate", "held-out drop", "held-out pixel drop", "held-out OK/NG differ", "broke budget"]
            + size_columns, per_candidate),
        "Random-init teacher, tiny preset: a measurement of the gate, not of the method's accuracy. The "
        "draws judge image-level criteria on per-image scores subsampled from one evaluation of the pool."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": facts["command"], "summary": tallies,
                                                         "candidates": rows}, indent=2, default=str) + "\n")
    print(markdown_table(["gate", "draw size", "decisions", "accepted", "accepted, broke on held-out",
                          "within-budget rejected"], summary))
    print(f"wrote {args.out} ({facts['wall']:.0f} s)")

if __name__ == "__main__":
    raise SystemExit(main())
