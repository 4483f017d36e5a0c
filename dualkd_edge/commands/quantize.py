"""`dualkd-edge quantize`: static INT8 with accuracy-driven mixed precision, gated against FP32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from dualkd_edge.commands.options import Choice, FloatOption, FloatPrecision, value
from dualkd_edge.errors import UserError


class Method(Choice):
    """`--method`: compile/int8/quantize.METHODS, and auto (the gate picks; QuantizeRequest.methods)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    AUTO = "auto"


class Target(Choice):
    """`--target`: compile/int8/quantize.TARGETS."""

    TENSORRT = "tensorrt"
    CPU = "cpu"


def command(
    model: Path = typer.Argument(..., help="FP32 ONNX file from `dualkd-edge export`"),
    calib: Path = typer.Option(Path("calib_data"), "--calib", help="folder of normal calibration images"),
    out: Path = typer.Option(..., "--out", help="INT8 (Q/DQ) ONNX file to write"),
    method: Method = typer.Option("minmax", "--method", help="minmax | percentile | entropy (KL over 2048-bin histograms, "
                                  "minutes) | auto (with --val: the gate picks between minmax and percentile)"),
    samples: int = typer.Option(256, "--samples", help="calibration images to use"),
    target: Target = typer.Option("tensorrt", "--target", help="tensorrt: symmetric INT8, FP16 in between (TensorRT) | "
                                  "cpu: UINT8 activations, FP32 in between (ONNX Runtime CPU fast path)"),
    val: Optional[Path] = typer.Option(None, "--val", help="labelled data (MVTec layout) for the accuracy gate and "
                                       "the mixed-precision search"),
    max_drop: float = FloatOption(0.5, "--max-drop", help="largest allowed AUROC drop in points: the 95% upper bound "
                                  "of the image AUROC drop (paired bootstrap), the pixel AUROC drop itself"),
    max_disagree: Optional[float] = FloatOption(None, "--max-disagree", help="largest share of images whose OK/NG "
                                                 "decision may change: its 95% upper bound (default 0.03)"),
    keep_float: Optional[str] = typer.Option(None, "--keep-float", help="auto (default with --val: return the most "
                                             "sensitive layer groups to float until the gate passes) | none | "
                                             "group names, e.g. teacher.blocks.0,ee_student"),
    smooth: Optional[float] = FloatOption(None, "--smooth", help="SmoothQuant alpha (e.g. 0.5): move activation "
                                           "outliers into the weights, folded into the LayerNorms"),
    high_precision: Optional[FloatPrecision] = typer.Option(None, "--high-precision", help="what the unquantized layers run in: "
                                                            "fp16 (default for --target tensorrt) | fp32 (default for cpu)"),
) -> None:
    """Static INT8 (Q/DQ, per-channel) with accuracy-driven mixed precision and a gate against FP32."""
    raise typer.Exit(run_quantize(QuantizeRequest(
        model=model, calib=calib, out=out, method=value(method), samples=samples, target=value(target),
        high_precision=value(high_precision), val=val, max_drop=max_drop, max_disagree=max_disagree,
        keep_float=keep_float, smooth=smooth)))


@dataclass
class QuantizeRequest:
    """`dualkd-edge quantize` as the user asked for it."""

    model: Path
    calib: Path
    out: Path
    method: str = "minmax"  # or "auto": the gate picks among minmax and percentile
    samples: int = 256
    target: str = "tensorrt"
    high_precision: str | None = None
    val: Path | None = None
    max_drop: float = 0.5
    max_disagree: float | None = None
    keep_float: str | None = None  # auto | none | comma-separated group names; default auto with --val
    smooth: float | None = None

    def validate(self) -> None:
        if self.out.suffix.lower() != ".onnx":
            raise UserError(f"--out: expected a .onnx file name, got {self.out}")
        if self.max_drop < 0:
            raise UserError(f"--max-drop: must be >= 0 points, got {self.max_drop}")
        if self.max_disagree is not None and not 0 <= self.max_disagree <= 1:
            raise UserError(f"--max-disagree: expected a share in [0, 1], got {self.max_disagree}")
        if self.val is None and (self.method == "auto" or self.keep_float == "auto"):
            raise UserError("--method auto / --keep-float auto choose by accuracy: give labelled data with --val DATA")
        from dualkd_edge.output_paths import check_outputs

        # A rejected candidate goes beside --out: neither may land on an input.
        check_outputs(files={"--out": self.out, "--out (a rejected candidate)": self.rejected},
                      inputs={"the FP32 input": self.model, "--calib": self.calib, "--val": self.val})

    @property
    def rejected(self) -> Path:
        return self.out.with_name(self.out.stem + ".rejected.onnx")

    @property
    def methods(self) -> list[str]:
        return ["minmax", "percentile"] if self.method == "auto" else [self.method]

    @property
    def keep_float_mode(self) -> str:
        return self.keep_float or ("auto" if self.val is not None else "none")


def run_quantize(req: QuantizeRequest) -> int:
    """Returns the exit code: 0, or 1 when the accuracy gate fails. The candidate is written beside
    `out` under a temporary name; only a model that passes replaces `out`, a rejected one goes to
    `<stem>.rejected.onnx` and whatever was at `out` stays as it was."""
    import tempfile

    from dualkd_edge.compile.int8.quantize import QuantizationSession, QuantizeOptions
    from dualkd_edge.fileio import staging_path

    req.validate()
    out = req.out
    candidate = staging_path(out, "candidate")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            session = QuantizationSession(req.model, QuantizeOptions(req.calib, req.methods[0], req.samples, req.target,
                                                                     req.high_precision, req.smooth), Path(tmp))
            print(f"quantizing {req.model} for {req.target} ({session.opts.float_precision} between INT8 layers): "
                  f"{len(session.groups)} layer groups, {len(session.images)} calibration images"
                  + (f", {session.smoothed} LayerNorm->linear groups smoothed" if session.smoothed else "")
                  + (f", {session.fused_attention} attentions fused (ONNX Runtime MultiHeadAttention)"
                     if session.fused_attention else ""))
            passed = _quantize_with_gate(req, session, candidate) if req.val else _quantize_ungated(req, session,
                                                                                                  candidate)
            if session.integer_projections:
                print(f"{session.integer_projections} projections as integer matmuls (ONNX Runtime MatMulIntegerToFloat)")
        if req.target == "tensorrt":
            from dualkd_edge.commands.export import report_tensorrt_check

            report_tensorrt_check(candidate, out)
        if passed:
            candidate.replace(out)
            print(f"written to {out}")
            return 0
        rejected = req.rejected
        candidate.replace(rejected)
        kept = f"; {out} was left as it was" if out.exists() else ""
        print(f"accuracy gate: FAILED; the candidate was moved to {rejected}{kept}")
        return 1
    finally:
        candidate.unlink(missing_ok=True)


def _quantize_ungated(req: QuantizeRequest, session, candidate: Path) -> bool:
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.output_paths import writing
    from dualkd_edge.compile.int8.accuracy_gate import agreement_on_images
    from dualkd_edge.compile.int8.layer_groups import resolve_group_names

    mode = req.keep_float_mode
    kept = set() if mode == "none" else resolve_group_names(session.pre_proto, mode.split(","))
    with writing("--out", req.out):
        save_onnx_atomic(session.candidate(req.methods[0], kept), candidate)
    comparison = agreement_on_images(req.model, candidate, session.images[:64], str(req.out))
    print("FP32 vs INT8 on calibration images (no --val given, so not gated; pass --val DATA to gate):")
    lines = comparison.format().splitlines()[:-1]  # its PASSED/FAILED line is the comparator's, not a gate's
    print("\n".join(lines + [f"  beyond the INT8 tolerance: {f}" for f in comparison.failures()]))
    print("accuracy gate: not gated (no --val DATA given)")
    return True


def _quantize_with_gate(req: QuantizeRequest, session, candidate: Path) -> bool:
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.output_paths import writing
    from dualkd_edge.evaluation.comparison import INT8_MAX_DISAGREE
    from dualkd_edge.compile.int8.layer_groups import resolve_group_names
    from dualkd_edge.compile.int8.mixed_precision import MixedPrecisionSearch
    from dualkd_edge.data.discovery import discover_all

    max_disagree = INT8_MAX_DISAGREE if req.max_disagree is None else req.max_disagree
    search = MixedPrecisionSearch(session, discover_all([req.val]), req.max_drop, max_disagree,
                                  time_latency=req.target == "cpu")
    print(f"FP32 on {req.val}: image AUROC {search.fp32.mean['image_auroc']:.4f}"
          + (f", pixel AUROC {search.fp32.mean['pixel_auroc']:.4f}" if search.fp32.mean.get("pixel_auroc") else ""))
    mode = req.keep_float_mode
    if mode not in ("auto", "none"):
        step = search.step(req.methods[0], sorted(resolve_group_names(session.pre_proto, mode.split(","))))
        print_step(1, step)
        chosen, result = step, None
    else:
        counter = iter(range(1, 10**6))
        result = search.run(req.methods, mode == "auto", report=lambda step: print_step(next(counter), step))
        chosen = result.chosen or result.steps[-1]
        if result.sensitivity:
            print("sensitivity (error in calibration sigmas with only that group in INT8): " + ", ".join(
                f"{name} {err:.3f}" for name, err in result.sensitivity))
    with writing("--out", req.out):
        save_onnx_atomic(session.candidate(chosen.method, set(chosen.kept_float)), candidate)
    print_gate(chosen.gate)
    kept = ", ".join(chosen.kept_float) or "none"
    print(f"chosen: {chosen.method}, kept in {session.opts.float_precision}: {kept} "
          f"({len(session.groups) - len(chosen.kept_float)} of {len(session.groups)} groups INT8)")
    if chosen.passed:
        print("accuracy gate: PASSED")
    return chosen.passed


def print_step(n: int, step) -> None:
    g = step.gate
    drops = ", ".join(f"{k.replace('_auroc', '')} {g['int8'][k]:.4f} ({-v:+.2f})" for k, v in g["drop_points"].items())
    d, bound = g["decisions"], g["image_auroc_bound"]["upper"]
    speed = f"; {step.speedup_vs_fp32:.2f}x FP32 speed" if step.speedup_vs_fp32 else ""
    kept = ", ".join(step.kept_float) if step.kept_float else "none"
    print(f"  step {n} ({step.phase}): {step.method}, float: {kept} | AUROC {drops}, drop bound {bound:.2f} | OK/NG "
          f"differ {d['disagree']} ({100 * d['disagree_share']:.1f}%, bound {100 * d['upper']:.1f}%){speed} | "
          f"{'PASSED' if step.passed else 'failed'}", flush=True)


def print_gate(gate: dict) -> None:
    from dualkd_edge.compile.int8.accuracy_gate import gate_lines

    print("  " + ", ".join(f"{metric.replace('_', ' ')} fp32 {gate['fp32'][metric]:.4f} int8 {gate['int8'][metric]:.4f}"
                           for metric in gate["drop_points"]))
    for line in gate_lines(gate):  # the upper bounds decide (compile/int8/accuracy_gate.py)
        print(f"  {line}")
