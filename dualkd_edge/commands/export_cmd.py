"""`dualkd-edge export` and `dualkd-edge quantize`: run, then report what was written and measured."""

from __future__ import annotations

import json
from pathlib import Path

from dualkd_edge.errors import UserError


def run_export(run_dir: Path, out: Path, opts) -> None:
    from dualkd_edge.export.onnx_export import export_onnx, format_differences

    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: expected a .onnx file name, got {out}")
    result = export_onnx(run_dir, out, opts)
    size_mb = out.stat().st_size / 1e6
    print(f"exported {out} ({size_mb:.1f} MB, {opts.precision}, input {opts.input_dtype}, batch {opts.batch}, "
          f"opset {opts.opset}) in {result.seconds:.1f} s")
    if result.verified:
        print("ONNX Runtime (CPU) vs PyTorch on 4 images:")
        print(format_differences(result.differences))
    elif result.note:
        print(f"not verified: {result.note}")


def run_quantize(model: Path, calib: Path, out: Path, method: str, samples: int, val: Path | None,
                 max_drop: float, target: str = "tensorrt") -> int:
    """Returns the exit code: 0, or 1 when the accuracy gate fails (the file is then set aside)."""
    from dualkd_edge.calibration_images import load_calibration_images
    from dualkd_edge.export.quantize import accuracy_gate, agreement_on_images, quantize_int8

    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: expected a .onnx file name, got {out}")
    if max_drop < 0:
        raise UserError(f"--max-drop: must be >= 0 points, got {max_drop}")
    result = quantize_int8(model, calib, out, method, samples, target)
    print(f"quantized {model} -> {out}: {result.quantized_nodes} tensors quantized, {result.n_calibration} "
          f"calibration images, {method}, target {target}, {result.seconds:.1f} s")
    if val is None:
        stats = agreement_on_images(model, out, load_calibration_images(calib, min(samples, 64)))
        print("FP32 vs INT8 on calibration images (no --val given): " + json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}))
        return 0
    gate, passed = accuracy_gate(model, out, val, max_drop)
    for metric, drop in gate["drop_points"].items():
        print(f"  {metric:<12} fp32 {gate['fp32'][metric]:.4f}  int8 {gate['int8'][metric]:.4f}  "
              f"drop {drop:+.2f} points (max {max_drop})")
    print(f"  images/s     fp32 {gate['fp32']['images_per_second']:.1f}  int8 {gate['int8']['images_per_second']:.1f}")
    if passed:
        print("accuracy gate: PASSED")
        return 0
    rejected = out.with_name(out.stem + ".rejected.onnx")
    out.replace(rejected)
    print(f"accuracy gate: FAILED (drop above {max_drop} points); the model was moved to {rejected}")
    return 1
