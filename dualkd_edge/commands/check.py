"""`dualkd-edge check`: TensorRT's rules on an ONNX file, without TensorRT or a GPU."""

from __future__ import annotations

from pathlib import Path

import typer

from dualkd_edge.errors import UserError


def command(
    model: Path = typer.Argument(..., help="ONNX file to check"),
    tensorrt: str = typer.Option("all", "--tensorrt", help="10.3 | 10.13 | 11 | all, or a version like 10.3.0.30"),
    dla: bool = typer.Option(False, "--dla", help="also DLA's rules (static shapes, FP16/INT8, TensorRT <= 10.7)"),
) -> None:
    """TensorRT's ONNX-parser and builder rules, offline: one line per violation (exit 1), silence when clean."""
    raise typer.Exit(run_check(model, tensorrt, dla))


def versions_to_check(tensorrt: str) -> list[str]:
    from dualkd_edge.compile.tensorrt.rules import PROFILES, profile_for_version

    if tensorrt == "all":
        return list(PROFILES)
    if tensorrt in PROFILES:
        return [tensorrt]
    if tensorrt.replace(".", "").isdigit():  # a full version string, e.g. the one a Jetson reports
        try:
            return [profile_for_version(tensorrt).name]
        except UserError as exc:
            raise UserError(f"--tensorrt: {exc}") from None
    raise UserError(f"--tensorrt: expected {', '.join(PROFILES)}, all, or a version like 10.3.0.30; got {tensorrt!r}")


def run_check(model: Path, tensorrt: str, dla: bool) -> int:
    """Prints one line per violation and returns 1; prints nothing and returns 0 when clean."""
    from dualkd_edge.artifacts.onnx_files import load_onnx_model
    from dualkd_edge.compile.tensorrt.rules import check_versions

    versions = versions_to_check(tensorrt)
    if not model.is_file():
        raise UserError(f"MODEL: not found: {model}")
    if model.suffix.lower() != ".onnx":
        raise UserError(f"MODEL: {model} is not an .onnx file")
    lines = check_versions(load_onnx_model(model), versions, dla)
    for line in lines:
        print(line)
    return 1 if lines else 0
