"""The usual road from images to deployable files, in the library so the demo and the benchmark
scripts take the same one: train (unless the run exists), export, sample calibration images,
quantize."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Deployment:
    run: Path
    onnx: Path
    calib: Path
    int8: Path
    export_differences: list  # comparison.OutputDiff of the ONNX file against PyTorch


def train_once(data: list[Path], run: Path, **config: object):
    """Train into `run` unless it already holds a finished run; the TrainResult, or None when reused."""
    from dualkd_edge.artifacts.run_dirs import is_run_dir
    from dualkd_edge.train.loop import TrainConfig, train

    if is_run_dir(run):
        return None
    return train(TrainConfig(data=list(data), out=run, **config))


def deploy(run: Path, data: Path, work: Path, target: str = "cpu", calib_images: int = 64,
           export_options=None, name: str = "model", quantize: bool = True) -> Deployment:
    """Export `run` to `work/<name>.onnx`, sample `calib_images` normal images of `data` into
    `work/calib_data`, quantize (all-INT8, minmax) to `work/<name>.int8.onnx` for `target` (cpu: ONNX
    Runtime's fast path). `quantize=False` leaves the INT8 file to the caller (e.g. the gated
    `quantize --val` path of the demo)."""
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    exported = export_onnx(run, work / f"{name}.onnx", export_options or ExportOptions())
    calib = work / "calib_data"
    sample_calibration_set([data], calib_images, calib)
    int8 = work / f"{name}.int8.onnx"
    if quantize:
        quantize_int8(exported.path, calib, int8, "minmax", calib_images, target=target)
    return Deployment(run, exported.path, calib, int8, exported.differences)
