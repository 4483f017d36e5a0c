"""A built engine replaces `--out` only after it agrees with its ONNX on real images.

TensorRT picks kernels, fuses layers and (for FP16/INT8) rounds differently from ONNX Runtime; an
engine that disagrees with the graph it came from must not reach the line silently. The engine
is written beside `--out` under a temporary name, compared with the ONNX file on ONNX Runtime's
CPU provider (the comparator of `dualkd-edge compare`), and the result goes into the sidecar: a
passing engine is renamed onto `--out`, a failing one to `<stem>.rejected<suffix>`; whatever was at
`--out` stays as it was."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dualkd_edge.fileio import staging_path, write_bytes_atomic

log = logging.getLogger("dualkd_edge")

GATE_IMAGES = 32


def gate_images(calib: Path | None) -> tuple[list[np.ndarray], str]:
    """The calibration images when given (or ./calib_data when it has images), else generated parts."""
    from dualkd_edge.compile.int8.calibration_images import (
        list_calibration_files,
        load_calibration_images,
    )
    from dualkd_edge.errors import UserError

    for folder in (calib, Path("calib_data")):
        if folder is None or not Path(folder).is_dir():
            continue
        try:
            list_calibration_files(folder)
        except UserError:
            continue
        return load_calibration_images(folder, GATE_IMAGES), str(folder)
    from dualkd_edge.data.synth import render_part

    parts = [render_part("washer" if i % 2 else "bracket", 5000 + i, defect="spot" if i % 4 == 3 else None)[0]
             for i in range(GATE_IMAGES // 2)]
    return parts, "generated parts (pass --calib DIR to compare on your own images)"


def install_engine(serialized: bytes, engine_path: Path, sidecar: dict, onnx_path: Path, opts) -> tuple[dict, Path]:
    """Stage, compare, then install or reject. Returns the comparison and where the engine went."""
    from dualkd_edge.artifacts.engines import sidecar_path, write_sidecar
    from dualkd_edge.evaluation.comparison import Tolerance, compare_detectors
    from dualkd_edge.detector import Detector
    from dualkd_edge.runtime.onnx_backend import OnnxRuntimeBackend
    from dualkd_edge.runtime.tensorrt_backend import TensorRTBackend

    staging = staging_path(engine_path, "unverified")
    write_bytes_atomic(staging, serialized)
    write_sidecar(staging, sidecar)
    try:
        images, source = gate_images(opts.calib)
        onnx_precision = sidecar["metadata"]["export"].get("precision", "fp32")
        tolerance = Tolerance.for_precisions([sidecar["precision"], onnx_precision])
        with Detector(OnnxRuntimeBackend(onnx_path, providers=["cpu"])) as ref, \
                Detector(TensorRTBackend(staging, cuda_graph=opts.cuda_graph)) as cand:
            comparison = compare_detectors(ref, [cand], images, tolerances=[tolerance])[0]
        comparison.notes.append(f"images: {source}")
        print(comparison.format())
        record = comparison.to_dict()
        write_sidecar(staging, {**sidecar, "comparison": record})
        final = engine_path if comparison.passed else engine_path.with_name(
            f"{engine_path.stem}.rejected{engine_path.suffix}")
        os.replace(sidecar_path(staging), sidecar_path(final))
        os.replace(staging, final)
        if not comparison.passed:
            log.error("the engine disagrees with %s; it was moved to %s%s", onnx_path.name, final,
                      f" and {engine_path} was left as it was" if engine_path.exists() else "")
        return record, final
    finally:
        staging.unlink(missing_ok=True)
        sidecar_path(staging).unlink(missing_ok=True)
