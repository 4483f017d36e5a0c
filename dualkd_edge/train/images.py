"""Training images held in memory as the model sees them (uint8, resized and cropped as the input
spec says), split into train and calibration sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge.data.discovery import discover_all
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import read_image
from dualkd_edge.metadata import InputSpec
from dualkd_edge.preprocess import to_model_view

log = logging.getLogger("dualkd_edge")


@dataclass
class TrainImages:
    train: np.ndarray  # (N, H, W, 3) uint8 BGR, the model's view
    holdout: np.ndarray  # held-out normal images for calibration
    summary: dict = field(default_factory=dict)


def load_images(paths: list[Path], spec: InputSpec) -> tuple[list[np.ndarray], list[Path]]:
    images, skipped = [], []
    for p in paths:
        img = read_image(p)
        if img is None:
            skipped.append(p)
            log.warning("skipping unreadable image: %s", p)
            continue
        images.append(to_model_view(img, spec))
    return images, skipped


def load_training_images(roots: list[Path], spec: InputSpec, holdout_fraction: float, seed: int) -> TrainImages:
    """Read the good images of every category; hold out a share of each category for calibration."""
    cats = discover_all(roots)
    rng = np.random.default_rng(seed)
    train, holdout, per_cat, skipped_all, holdout_names = [], [], {}, [], []
    for cat in cats:
        images, skipped = load_images(cat.train, spec)
        skipped_all += skipped
        kept = [p for p in cat.train if p not in set(skipped)]
        order = rng.permutation(len(images))
        n_hold = int(round(len(images) * holdout_fraction)) if len(images) >= 10 else 0
        hold_idx, train_idx = set(order[:n_hold].tolist()), order[n_hold:]
        train += [images[i] for i in train_idx]
        holdout += [images[i] for i in sorted(hold_idx)]
        holdout_names += [str(kept[i]) for i in sorted(hold_idx)]
        per_cat[cat.name] = {"root": str(cat.root), "train": len(train_idx), "holdout": n_hold}
    if skipped_all:
        log.warning("skipped %d unreadable file(s) of %d", len(skipped_all),
                    sum(len(c.train) for c in cats))
    if not train:
        raise UserError(f"DATA: no usable training image in {', '.join(map(str, roots))} "
                        f"({len(skipped_all)} unreadable)")
    summary = {
        "roots": [str(r) for r in roots],
        "categories": per_cat,
        "n_train": len(train),
        "n_holdout": len(holdout),
        "n_skipped": len(skipped_all),
        "holdout_files": holdout_names,
    }
    empty = np.zeros((0, spec.height, spec.width, 3), np.uint8)
    return TrainImages(np.stack(train), np.stack(holdout) if holdout else empty, summary)
