"""`dualkd-edge export`: one ONNX graph from a training run, then what was written and measured."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualkd_edge.commands.options import Choice, FloatPrecision, value
from dualkd_edge.errors import UserError


class InputDtype(Choice):
    """`--input`: what the graph takes (trace/onnx_export.ExportOptions.input_dtype)."""

    FLOAT = "float"
    UINT8 = "uint8"


def command(
    run_dir: Path = typer.Argument(..., help="training run directory"),
    out: Path = typer.Option(..., "--out", help="ONNX file to write"),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="input size (must be the trained size)"),
    batch: str = typer.Option("1", "--batch", help="static batch N, or 'dynamic'"),
    input_dtype: InputDtype = typer.Option("float", "--input", help="float: NCHW normalised RGB | uint8: NHWC BGR camera frames, scaled inside the graph"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset 17..20"),
    precision: FloatPrecision = typer.Option("fp32", "--precision", help="fp32 | fp16 (mixed: norms, softmax and scoring stay FP32)"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip the ONNX Runtime vs PyTorch parity check"),
) -> None:
    """Export teacher + both students + Noisy-OR scoring as ONE ONNX graph, verified against PyTorch."""
    from dualkd_edge.trace.onnx_export import ExportOptions

    run_export(run_dir, out, ExportOptions(img_size=img_size, batch=batch, input_dtype=value(input_dtype), opset=opset,
                                           precision=value(precision), verify=not no_verify))


def run_export(run_dir: Path, out: Path, opts) -> None:
    """`opts`: trace.onnx_export.ExportOptions."""
    from dualkd_edge.trace.onnx_export import export_onnx, format_differences
    from dualkd_edge.output_paths import check_outputs, writing

    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: expected a .onnx file name, got {out}")
    check_outputs(files={"--out": out}, inputs={"RUN": run_dir})
    with writing("--out", out):  # a disk that fills up during the export
        result = export_onnx(run_dir, out, opts)
    size_mb = out.stat().st_size / 1e6
    print(f"exported {out} ({size_mb:.1f} MB, {opts.precision}, input {opts.input_dtype}, batch {opts.batch}, "
          f"opset {opts.opset}) in {result.seconds:.1f} s")
    if result.verified:
        print("ONNX Runtime (CPU) vs PyTorch on 4 images:")
        print(format_differences(result.differences))
    elif result.note:
        print(f"not verified: {result.note}")
    report_tensorrt_check(out, out)


def report_tensorrt_check(path: Path, shown_as: Path) -> None:
    """Warn (not fail) when a graph meant for TensorRT breaks one of its rules: the file is still
    right for ONNX Runtime, and `build` refuses it with the same lines."""
    from dualkd_edge.artifacts.onnx_files import load_onnx_model
    from dualkd_edge.compile.tensorrt.rules import PROFILES, check_versions

    lines = check_versions(load_onnx_model(path), list(PROFILES))
    for line in lines:
        print(f"warning: {shown_as.name}: {line}")
    if not lines:
        print(f"TensorRT check ({', '.join(PROFILES)}): no rule violated")
