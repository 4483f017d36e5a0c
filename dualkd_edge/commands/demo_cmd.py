"""`dualkd-edge demo`: the whole product on generated data in a few minutes on a CPU."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import NOT_PRETRAINED_LABEL
from dualkd_edge.tables import text_table

log = logging.getLogger("dualkd_edge")

MARKER = ".dualkd-edge-demo"


def prepare_out(out: Path) -> None:
    """The demo owns its folder: reuse one it made before, refuse to clobber anything else."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out: {out} exists and was not made by `dualkd-edge demo`; choose an empty folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by dualkd-edge demo; safe to delete\n")


def run(out: Path, max_time: float, steps: int, seed: int) -> dict:
    from dualkd_edge.data.synth import generate_dataset
    from dualkd_edge.detector import Detector
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.evaluation import evaluate
    from dualkd_edge.train.loop import TrainConfig, train

    t_start = time.perf_counter()
    prepare_out(out)
    print(f"[1/3] generating a two-part-kind production-line dataset in {out / 'data'}")
    data = generate_dataset(out / "data", seed=seed)
    print(f"[2/3] training the 'tiny' preset for at most {max_time:.0f} s ({NOT_PRETRAINED_LABEL})")
    result = train(TrainConfig(data=[data], out=out / "run", preset="tiny", weights="none", steps=steps,
                               max_time=max_time, seed=seed, checkpoint_every=10**9))
    print(f"      {result.steps} steps in {result.seconds:.0f} s; final losses "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items()))
    print("[3/3] evaluating on the test split (good parts, scratches, spots, missing pieces, wrong part kind)")
    with Detector.load(out / "run", device="cpu") as det:
        report = evaluate(det, discover_all([data]))
    rows = [[cat, r["n_images"], r["image_auroc"], r["local_auroc"], r["semantic_auroc"], r["pixel_auroc"],
             r["pixel_aupro"]] for cat, r in report.rows.items()]
    mean = report.mean_row()
    rows.append(["MEAN", len(report.records), mean["image_auroc"], mean["local_auroc"], mean["semantic_auroc"],
                 mean["pixel_auroc"], mean["pixel_aupro"]])
    print(text_table(["category", "n", "image AUROC (Noisy-OR)", "local", "semantic", "pixel AUROC",
                      "AUPRO"], rows))
    wall = time.perf_counter() - t_start
    print(f"\nrandom-teacher pipeline figures, not the paper's (pretrained DINOv2 weights are needed for those)")
    print(f"done in {wall:.0f} s. Written to {out}:")
    print(f"  data/  generated dataset (MVTec-AD layout)\n  run/   trained model (model.safetensors, run.json)")
    return {"report": report, "wall_seconds": wall, "train": result}
