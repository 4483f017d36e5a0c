"""`dualkd-edge export`: teacher + both students + Noisy-OR scoring as ONE ONNX graph."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.version import __version__
from dualkd_edge.artifacts.contract import OUTPUT_NAMES
from dualkd_edge.artifacts.onnx_files import save_onnx_atomic, set_onnx_metadata
from dualkd_edge.evaluation.comparison import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    OutputDiff,
    compare_outputs,
    format_differences,
)
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import staging_path
from dualkd_edge.metadata import ArtifactMetadata

log = logging.getLogger("dualkd_edge")

INPUT_NAME = "images"
OPSETS = range(17, 21)


@dataclass
class ExportOptions:
    img_size: int | None = None
    batch: str = "1"  # "N" or "dynamic"
    input_dtype: str = "float"  # float | uint8
    opset: int = 17
    precision: str = "fp32"  # fp32 | fp16
    verify: bool = True

    def validate(self) -> None:
        if self.opset not in OPSETS:
            raise UserError(f"--opset: expected 17..20 (LayerNormalization needs 17), got {self.opset}")
        if self.input_dtype not in ("float", "uint8"):
            raise UserError(f"--input: expected float or uint8, got {self.input_dtype!r}")
        if self.precision not in ("fp32", "fp16"):
            raise UserError(f"--precision: expected fp32 or fp16, got {self.precision!r}")
        if self.batch != "dynamic" and not (self.batch.isdigit() and int(self.batch) >= 1):
            raise UserError(f"--batch: expected a positive number or 'dynamic', got {self.batch!r}")

    @property
    def static_batch(self) -> int | None:
        return None if self.batch == "dynamic" else int(self.batch)


@dataclass
class ExportResult:
    path: Path
    differences: list[OutputDiff]
    seconds: float
    verified: bool
    note: str = ""


def verification_images(meta: ArtifactMetadata, n: int = 4) -> list[np.ndarray]:
    """Held-out training images when still on disk, else generated parts."""
    from dualkd_edge.fileio import read_image

    images = []
    for name in meta.training.get("data", {}).get("holdout_files", [])[:n]:
        img = read_image(name)
        if img is not None:
            images.append(img)
    if len(images) < n:
        from dualkd_edge.data.synth import render_part

        images += [render_part("washer" if i % 2 else "bracket", 9000 + i, defect="spot" if i % 3 == 2 else None)[0]
                   for i in range(n - len(images))]
    return images


def _torch_export(module, dummy, path: Path, opts: ExportOptions) -> None:
    import torch

    dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    # The TorchScript-based exporter: stable node names (/scoring/...) that the FP16 and INT8 passes
    # use to keep the scoring head in FP32.
    torch.onnx.export(module, (dummy,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                      opset_version=opts.opset, do_constant_folding=True,
                      dynamic_axes=dynamic if opts.static_batch is None else None, dynamo=False)


def simplify(proto):
    """Lossless clean-up with ONNX Runtime's *basic* level, whose rewrites keep standard ONNX ops
    (constant folding, identity/redundant node removal): about 40% fewer nodes for TensorRT's parser
    and for people reading the graph. The parity check afterwards covers it."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(proto, str(src))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        simplified = onnx.load(str(dst))
    onnx.checker.check_model(simplified)
    if any(n.domain not in ("", "ai.onnx") for n in simplified.graph.node):
        log.info("simplification introduced non-standard ops; keeping the traced graph")
        return proto
    from dualkd_edge.compile.int8.qdq_fp16 import drop_unused_domains

    drop_unused_domains(simplified)
    for key in ("producer_name", "producer_version", "doc_string"):
        setattr(simplified, key, getattr(proto, key))
    return simplified


def _export_metadata(meta: ArtifactMetadata, run_dir: Path, opts: ExportOptions, gmacs: float) -> ArtifactMetadata:
    """The run's metadata, with the input spec and export record of this file."""
    new = copy.deepcopy(meta)
    new.input.dtype = opts.input_dtype
    new.input.layout = "NHWC" if opts.input_dtype == "uint8" else "NCHW"
    new.input.color = "BGR" if opts.input_dtype == "uint8" else "RGB"
    new.input.batch = opts.static_batch or "dynamic"
    new.export = {"format": "onnx", "opset": opts.opset, "precision": opts.precision,
                  "source": str(Path(run_dir).resolve()), "tool_version": __version__,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outputs": list(OUTPUT_NAMES),
                  "gmacs": round(gmacs, 4), "simplified": True}
    return new


def _traced_graph(module, meta: ArtifactMetadata, opts: ExportOptions):
    """Trace, check, simplify; the mixed FP16 form when asked for."""
    import warnings

    import onnx
    import torch

    size = meta.input.height
    b = opts.static_batch or 1
    dummy = (torch.zeros(b, size, size, 3, dtype=torch.uint8) if opts.input_dtype == "uint8"
             else torch.zeros(b, 3, size, size))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _torch_export(module, dummy, raw, opts)
        proto = onnx.load(str(raw))
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(simplify(proto))
    if opts.precision == "fp16":
        from dualkd_edge.compile.fp16 import to_mixed_fp16

        proto = to_mixed_fp16(proto)
    return proto


def export_onnx(run_dir: Path, out: Path, opts: ExportOptions) -> ExportResult:
    from dualkd_edge.model.checkpoint import inference_model, load_run
    from dualkd_edge.model.complexity import count_model

    opts.validate()
    t0 = time.perf_counter()
    model, meta = load_run(Path(run_dir))
    if not meta.training.get("finished", True):
        log.warning("%s: training did not finish; the calibration is a placeholder", run_dir)
    size = meta.input.height
    if opts.img_size is not None and opts.img_size != size:
        raise UserError(f"--img-size: the model was trained and calibrated at {size} px (position embeddings "
                        f"and score statistics); export it at {size} or train at {opts.img_size}")
    module = inference_model(model, meta, opts.input_dtype)
    new_meta = _export_metadata(meta, run_dir, opts, count_model(model.preset)["gmacs"])
    proto = _traced_graph(module, meta, opts)
    proto.producer_name = "dualkd-edge"
    proto.producer_version = __version__
    proto.doc_string = f"dualkd-edge {new_meta.preset.get('name')} ({new_meta.teacher_weights.label})"
    set_onnx_metadata(proto, new_meta)

    # Written under a staging name and renamed only once verified: a file at `out` is always good.
    out = Path(out)
    staging = staging_path(out, "unverified")
    save_onnx_atomic(proto, staging)
    try:
        diffs, verified, note = [], False, ""
        if opts.verify:
            float_module = module if opts.input_dtype == "float" else inference_model(model, meta)
            diffs, verified, note = _verify(float_module, staging, new_meta, opts)
            failed = [d for d in diffs if not d.ok]
            if failed:
                raise UserError(f"export verification failed for {out}: " + "; ".join(
                    f"{d.name} differs by {d.max_abs:.2e} > {d.tolerance:.0e}" for d in failed)
                    + " (pass --no-verify to keep the file anyway)")
        staging.replace(out)
    finally:
        staging.unlink(missing_ok=True)
    return ExportResult(out, diffs, time.perf_counter() - t0, verified, note)


def _verify(float_module, path: Path, meta: ArtifactMetadata, opts: ExportOptions) -> tuple[list[OutputDiff], bool, str]:
    """Run the file with ONNX Runtime (CPU) and PyTorch on the same images and compare."""
    import torch

    from dualkd_edge.detector import Detector
    from dualkd_edge.preprocess import prepare_batch
    from dualkd_edge.runtime.onnx_backend import OnnxRuntimeBackend

    images = verification_images(meta, 4)
    float_spec = copy.deepcopy(meta.input)
    float_spec.dtype = "float"
    with torch.inference_mode():
        ref_out = float_module(torch.from_numpy(prepare_batch(images, float_spec)))
    reference = {n: t.numpy() for n, t in zip(OUTPUT_NAMES, ref_out)}
    try:
        backend = OnnxRuntimeBackend(path, providers=["cpu"])
    except UserError as exc:
        if opts.precision == "fp16":
            note = f"ONNX Runtime CPU cannot run this FP16 graph ({exc}); verify it on a GPU provider"
            log.warning(note)
            return [], False, note
        raise
    with backend:
        candidate = Detector(backend).infer_raw(images)
    tolerance = FP16_TOLERANCE if opts.precision == "fp16" else FP32_TOLERANCE
    return compare_outputs(reference, candidate, tolerance), True, ""


__all__ = ["ExportOptions", "ExportResult", "export_onnx", "format_differences"]
