"""`dualkd-edge export` and `dualkd-edge quantize`: run, then report what was written and measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualkd_edge.errors import UserError


def run_export(run_dir: Path, out: Path, opts) -> None:
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
                  + (f", {session.smoothed} LayerNorm->linear groups smoothed" if session.smoothed else ""))
            passed = _quantize_with_gate(req, session, candidate) if req.val else _quantize_ungated(req, session,
                                                                                                  candidate)
        if req.target == "tensorrt":
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
    print(comparison.format())
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
    d = g["decisions"]
    speed = f"; {step.speedup_vs_fp32:.2f}x FP32 speed" if step.speedup_vs_fp32 else ""
    kept = ", ".join(step.kept_float) if step.kept_float else "none"
    print(f"  step {n} ({step.phase}): {step.method}, float: {kept} | AUROC {drops} | OK/NG differ {d['disagree']} "
          f"({100 * d['disagree_share']:.1f}%){speed} | {'PASSED' if step.passed else 'failed'}", flush=True)


def print_gate(gate: dict) -> None:
    for metric, drop in gate["drop_points"].items():
        print(f"  {metric:<12} fp32 {gate['fp32'][metric]:.4f}  int8 {gate['int8'][metric]:.4f}  "
              f"drop {drop:+.2f} points (max {gate['max_drop']})")
    d = gate["decisions"]
    print(f"  OK/NG at the deployed threshold: same on {d['agree']}, different on {d['disagree']} "
          f"({100 * d['disagree_share']:.1f}%, max {100 * d['max_disagree']:.1f}%)")


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
