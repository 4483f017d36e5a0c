"""Calibration images for INT8: load a folder, or copy a spread sample of a dataset into one."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import (
    is_image_file,
    read_image,
    staging_path,
    sweep_stale_staging,
    write_json_atomic,
)

log = logging.getLogger("dualkd_edge")

CALIB_MANIFEST = ".dualkd-edge-calib.json"  # what calib-sample wrote: replaced by the next sample


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
    """Copy about `n` normal training images, proportionally from every category, into `out`.

    All or nothing: the set is assembled in a hidden staging folder beside `out` that takes its
    place only once complete, so a full disk or an interruption never leaves a partial set that
    `quantize` would calibrate on. What an earlier calib-sample wrote to `out` (listed in its
    manifest) is replaced; anything else there (a README, your own images) is kept."""
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.output_paths import check_outputs, os_reason

    if n < 1:
        raise UserError(f"--n: must be >= 1, got {n}")
    out = Path(out)
    check_outputs(folders={"--out": out}, inputs={"DATA": data})
    for root in data:  # the set replaces `out` as a whole, and must not become training data
        real_root, real_out = Path(os.path.realpath(root)), Path(os.path.realpath(out))
        if real_root.is_relative_to(real_out) or real_out.is_relative_to(real_root):
            raise UserError(f"--out: {out} and DATA ({root}) overlap; choose a folder outside the dataset")
    cats = discover_all(data)
    total = sum(len(c.train) for c in cats)
    if total == 0:
        raise UserError(f"DATA: no training images (train/good) in {', '.join(map(str, data))}")
    picks = [(cat.name, src) for cat in cats for src in spread_sample(cat.train, max(1, round(n * len(cat.train) / total)))]
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(out.parent)
    staging = staging_path(out, "staging")
    try:
        _carry_over(out, staging)
        names = []
        for category, src in picks:
            dst = staging / f"{category}__{src.name}"
            dst.unlink(missing_ok=True)  # a carried-over hard link: never write through it into the old set
            shutil.copyfile(src, dst)
            names.append(dst.name)
        write_json_atomic(staging / CALIB_MANIFEST, {"written_by": "dualkd-edge calib-sample", "files": names})
        _replace_folder(staging, out)
    except OSError as exc:
        raise UserError(f"--out: could not write the calibration set to {out} ({os_reason(exc)}); "
                        f"{out} was left as it was") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]


def _carry_over(out: Path, staging: Path) -> None:
    """Start the staging folder with what `out` holds besides an earlier sample (hard links where
    the filesystem has them: nothing is copied twice)."""
    if not out.is_dir():
        staging.mkdir()
        return
    try:
        previous = set(json.loads((out / CALIB_MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        previous = set()

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(out, staging, symlinks=True, copy_function=link_or_copy,
                    ignore=lambda folder, names: [m for m in names if Path(folder) == out and
                                                  (m in previous or m == CALIB_MANIFEST)])


def _replace_folder(staging: Path, out: Path) -> None:
    """Two renames: `out` is the old set or the new one, never a mixture."""
    if not out.exists():
        os.rename(staging, out)
        return
    retired = staging_path(out, "retired")
    os.rename(out, retired)
    os.rename(staging, out)
    shutil.rmtree(retired, ignore_errors=True)
