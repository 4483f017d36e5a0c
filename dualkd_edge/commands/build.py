"""`dualkd-edge build`: checks that need no TensorRT first, then the build."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualkd_edge.commands.options import Choice, CudaGraph, FloatOption, value
from dualkd_edge.errors import UserError

# Without TensorRT, --print-trtexec shows both paths: before and from 10.12 (weak typing deprecated).
REPRESENTATIVE_VERSIONS = {"TensorRT < 10.12 (JetPack 6: 10.3)": "10.3.0", "TensorRT >= 10.12 and 11": "10.13.0"}


class Precision(Choice):
    """`--precision`: compile/tensorrt/plan.PRECISIONS."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BEST = "best"


def command(
    model: Path = typer.Argument(..., help="ONNX file from `dualkd-edge export` or `quantize`"),
    out: Path = typer.Option(..., "--out", help="engine file to write (.engine / .plan); a .json sidecar goes beside it"),
    precision: Precision = typer.Option("fp16", "--precision", help="fp32 | fp16 | int8 | best"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="calibration images for INT8 (when the model has no Q/DQ)"),
    batch: Optional[str] = typer.Option(None, "--batch", help="MIN:OPT:MAX batch profile for dynamic-batch models"),
    workspace: float = FloatOption(4.0, "--workspace", help="builder workspace limit in GiB"),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="timing cache file, read and updated"),
    dla: Optional[int] = typer.Option(None, "--dla", help="DLA core (Jetson Orin/Xavier), with GPU fallback"),
    opt_level: int = typer.Option(3, "--opt-level", help="builder optimization level 0..5"),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="INT8 calibration cache to read/write "
                                               "(default: beside the engine, named after the model's content)"),
    no_check: bool = typer.Option(False, "--no-check", help="skip the offline TensorRT rules (`dualkd-edge check`)"),
    cuda_graph: CudaGraph = False,
    print_trtexec: bool = typer.Option(False, "--print-trtexec", help="print the equivalent trtexec command"),
) -> None:
    """Build a TensorRT engine (strongly typed; implicit INT8 calibration only before TensorRT 10.12),
    then compare it with its ONNX on real images before it replaces --out."""
    from dualkd_edge.compile.tensorrt.plan import BuildOptions

    opts = BuildOptions(precision=value(precision), calib=calib, batch=batch, workspace_gib=workspace,
                        timing_cache=timing_cache, dla_core=dla, optimization_level=opt_level, calib_cache=calib_cache,
                        check=not no_check, cuda_graph=cuda_graph)
    raise typer.Exit(run_build(model, out, opts, print_trtexec))


def run_build(model: Path, out: Path, opts, print_trtexec: bool) -> int:
    """Exit code: 0, or 1 when the engine disagreed with its ONNX (it is then set aside)."""
    from dualkd_edge.artifacts import ENGINE_SUFFIXES
    from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata
    from dualkd_edge.compile.tensorrt.build import build_engine

    opts.validate()
    if not model.is_file():
        raise UserError(f"MODEL: not found: {model}")
    if model.suffix.lower() != ".onnx":
        raise UserError(f"MODEL: {model} is not an .onnx file (export one with `dualkd-edge export`)")
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"--out: expected an engine file name ending in {', '.join(ENGINE_SUFFIXES)}, got {out}")
    if opts.calib is not None and not opts.calib.is_dir():
        raise UserError(f"--calib: not a folder: {opts.calib}")
    from dualkd_edge.artifacts.engines import sidecar_path
    from dualkd_edge.output_paths import check_outputs

    rejected = out.with_name(f"{out.stem}.rejected{out.suffix}")
    # The timing and calibration caches are read and written: they may not be the model either.
    check_outputs(files={"--out": out, "--out (its sidecar)": sidecar_path(out), "--out (a rejected engine)": rejected,
                         "--timing-cache": opts.timing_cache, "--calib-cache": opts.calib_cache},
                  inputs={"MODEL": model, "--calib": opts.calib})
    proto = load_onnx_model(model)
    meta = onnx_metadata(proto, model)
    if print_trtexec:
        try:
            import tensorrt

            versions = {f"TensorRT {tensorrt.__version__}": tensorrt.__version__}
        except ImportError:
            versions = REPRESENTATIVE_VERSIONS
        for label, version in versions.items():
            print(f"# {label}")
            print(trtexec_lines(model, out, opts, proto, meta, version))
        if versions is REPRESENTATIVE_VERSIONS:
            return 0
    result = build_engine(model, out, opts)
    verdict = "agrees with" if result["comparison"]["passed"] else "DISAGREES with"
    print(f"built {result['engine']} with TensorRT {result['tensorrt_version']} ({result['path_taken']}) "
          f"in {result['seconds']:.0f} s; the engine {verdict} {model.name}")
    return 0 if result["comparison"]["passed"] else 1


def trtexec_lines(model: Path, out: Path, opts, proto, meta, version: str) -> str:
    """The trtexec command for this TensorRT version, with what trtexec cannot do said next to it."""
    import copy

    from dualkd_edge.compile.tensorrt.plan import (
        calibration_cache_path,
        input_shapes,
        pinned_fp32_nodes,
        plan_build,
        trtexec_command,
    )
    from dualkd_edge.compile.tensorrt.build import static_batch_of

    opts = copy.copy(opts)
    try:
        plan = plan_build(meta, opts, version, static_batch_of(proto), model)
    except UserError as exc:
        return f"# not possible: {exc}"
    notes = []
    if plan.graph == "to-fp16":
        notes.append(f"# trtexec builds what the graph says: export with --precision fp16 and pass that file "
                     f"instead of {model.name} (dualkd-edge build converts it itself)")
    if plan.graph == "quantize":
        notes.append(f"# trtexec builds what the graph says: pass the Q/DQ model of `dualkd-edge quantize "
                     f"{model.name} --calib ...` (dualkd-edge build quantizes itself)")
    if plan.calibrator:
        opts.calib_cache = opts.calib_cache or calibration_cache_path(model, opts.calib, out)
        if not Path(opts.calib_cache).is_file():
            notes.append(f"# trtexec cannot calibrate from images: `dualkd-edge build --calib` writes "
                         f"{opts.calib_cache} on the first build")
    shapes = input_shapes(meta, opts, static_batch_of(proto))
    command = trtexec_command(model, out, opts, shapes, plan, proto.graph.input[0].name, pinned_fp32_nodes(proto))
    return "\n".join([*notes, command])
