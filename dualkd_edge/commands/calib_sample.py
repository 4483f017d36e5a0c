"""`dualkd-edge calib-sample`: a spread sample of normal images for INT8 calibration."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer


def command(
    data: List[Path] = typer.Argument(..., help="dataset root(s): normal training images are sampled"),
    n: int = typer.Option(256, "--n", help="how many images to copy"),
    out: Path = typer.Option(Path("calib_data"), "--out", help="folder to copy them into"),
) -> None:
    """Copy a spread sample (every category, the whole brightness range) of normal images for INT8 calibration."""
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set

    files = sample_calibration_set(list(data), n, out)
    print(f"copied {len(files)} calibration images to {out}")
