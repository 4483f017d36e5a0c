"""Calibration images for INT8: load a folder, or copy a spread sample of a dataset into one."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path, is_image_file, read_image

log = logging.getLogger("dualkd_edge")


def list_calibration_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--calib: not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not files:
        raise UserError(f"--calib: no images in {folder}; fill it with `dualkd-edge calib-sample DATA --out {folder}`")
    return files


def load_calibration_images(folder: Path, n: int | None = None) -> list[np.ndarray]:
    files = list_calibration_files(folder)
    if n is not None and len(files) > n:
        files = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    images = []
    for f in files:
        img = read_image(f)
        if img is None:
            log.warning("skipping unreadable calibration image: %s", f)
            continue
        images.append(img)
    if not images:
        raise UserError(f"--calib: none of the {len(files)} files in {folder} could be decoded")
    return images


def spread_sample(paths: list[Path], n: int) -> list[Path]:
    """`n` files spread over the brightness range (lighting variation), evenly spaced."""
    if len(paths) <= n:
        return list(paths)
    brightness = []
    for p in paths:
        img = read_image(p)
        brightness.append(float(img.mean()) if img is not None else -1.0)
    order = [paths[i] for i in np.argsort(brightness, kind="stable") if brightness[i] >= 0]
    idx = np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)
    return [order[i] for i in idx]


def sample_calibration_set(data: list[Path], n: int, out: Path) -> list[Path]:
    """Copy about `n` normal training images, proportionally from every category, into `out`."""
    from dualkd_edge.data.discovery import discover_all

    if n < 1:
        raise UserError(f"--n: must be >= 1, got {n}")
    cats = discover_all(data)
    total = sum(len(c.train) for c in cats)
    if total == 0:
        raise UserError(f"DATA: no training images (train/good) in {', '.join(map(str, data))}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for cat in cats:
        share = max(1, round(n * len(cat.train) / total))
        for src in spread_sample(cat.train, share):
            dst = out / f"{cat.name}__{src.name}"
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            written.append(dst)
    return written
