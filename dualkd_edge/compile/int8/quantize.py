"""Static INT8 with Q/DQ nodes (`dualkd-edge quantize`), torch-free so it also runs on a Jetson.

Only MatMul / Gemm / Conv inputs are quantized, with per-channel symmetric INT8 weights; LayerNorm,
Softmax, residual adds and the scoring head stay in float. Activations depend on the target:
- `tensorrt`: symmetric INT8 (zero point 0), biases in float (TensorRT's parser takes no INT32 into
  DequantizeLinear), FP16 between the INT8 matmuls (`qdq_fp16.py`);
- `cpu`: asymmetric UINT8, which ONNX Runtime's x86/ARM kernels run about twice as fast as INT8 x
  INT8 (the U8S8 path), INT32 biases fused into its integer kernels, FP32 in between.

A `QuantizationSession` calibrates once per method and then writes any number of candidates, each
with some layer groups kept in float: what the accuracy-driven mixed precision
(`mixed_precision.py`) searches over."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dualkd_edge.version import __version__
from dualkd_edge.artifacts.onnx_files import (
    load_onnx_model,
    onnx_metadata,
    save_onnx_atomic,
    set_onnx_metadata,
)
from dualkd_edge.compile.int8.calibration_batches import CalibrationBatches
from dualkd_edge.compile.int8.layer_groups import QUANTIZED_OPS, activation_matmuls, float_nodes, layer_groups
from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("tensorrt", "cpu")
PERCENTILE = 99.99
# KL-divergence calibration as TensorRT does it: a fine histogram, searched for the clipping range
# whose 128-bin quantization loses least. quantize_static builds its entropy calibrator with 128 bins
# for 128 quantized bins, which leaves one candidate, the full range: the same scales as minmax.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


@dataclass
class QuantizeOptions:
    calib: Path
    method: str = "minmax"
    samples: int = 256
    target: str = "tensorrt"
    high_precision: str | None = None  # fp16 (TensorRT default) | fp32 (CPU default)
    smooth: float | None = None  # SmoothQuant alpha; None: off

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.samples < 1:
            raise UserError(f"--samples: must be >= 1, got {self.samples}")
        if self.target not in TARGETS:
            raise UserError(f"--target: expected one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.high_precision not in (None, "fp16", "fp32"):
            raise UserError(f"--high-precision: expected fp16 or fp32, got {self.high_precision!r}")
        if self.target == "cpu" and self.high_precision == "fp16":
            raise UserError("--high-precision fp16 is for --target tensorrt (ONNX Runtime's CPU kernels run FP16 slower)")
        if self.smooth is not None and not 0 < self.smooth < 1:
            raise UserError(f"--smooth: expected an alpha in (0, 1), e.g. 0.5, got {self.smooth}")

    @property
    def float_precision(self) -> str:
        return self.high_precision or ("fp16" if self.target == "tensorrt" else "fp32")


@dataclass
class QuantizeResult:
    path: Path
    n_calibration: int
    seconds: float
    quantized_nodes: int
    kept_float: list[str] = field(default_factory=list)


class QuantizationSession:
    """One FP32 export, its calibration ranges (computed once per method) and its Q/DQ candidates."""

    def __init__(self, model_path: Path, opts: QuantizeOptions, workdir: Path) -> None:
        from dualkd_edge.compile.int8.calibration_images import load_calibration_images

        opts.validate()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise UserError(f"MODEL: not found: {self.model_path}")
        self.opts = opts
        self.workdir = workdir
        self.proto = load_onnx_model(self.model_path, load_weights=True)
        self.meta = onnx_metadata(self.proto, self.model_path)
        if self.meta.export.get("precision", "fp32") != "fp32":
            raise UserError(f"{self.model_path}: quantize an FP32 export (this one is {self.meta.export.get('precision')})")
        self.images = load_calibration_images(opts.calib, opts.samples)
        input_tensor = self.proto.graph.input[0]
        batch_dim = input_tensor.type.tensor_type.shape.dim[0]
        batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else min(8, len(self.images))
        if len(self.images) < batch:
            raise UserError(f"--calib: {len(self.images)} image(s) is fewer than the model's batch of {batch}")
        self.batches = CalibrationBatches(self.images, self.meta.input, batch, input_tensor.name)
        self.smoothed = self._smooth() if opts.smooth else 0
        self.pre = workdir / "pre.onnx"
        _preprocess(self._source, self.pre)
        self.pre_proto = load_onnx_model(self.pre, load_weights=True)
        self.fused_attention = self._fuse_attention() if opts.target == "cpu" else 0
        self.integer_projections = 0  # set by each CPU-target candidate
        self._check_batch = None  # (feed, FP32 outputs) for the lowering check, made on first use
        self.groups = layer_groups(self.pre_proto)
        self._ranges: dict[str, Path] = {}

    @property
    def _source(self) -> Path:
        return self.workdir / "smoothed.onnx" if self.smoothed else self.model_path

    def _smooth(self) -> int:
        from dualkd_edge.compile.int8.smoothing import channel_absmax, find_targets, smooth

        targets = find_targets(self.proto)
        absmax = channel_absmax(str(self.model_path), [t.tensor for t in targets], self.batches)
        smoothed = copy.deepcopy(self.proto)
        n = smooth(smoothed, targets, absmax, self.opts.smooth)
        save_onnx_atomic(smoothed, self.workdir / "smoothed.onnx")
        log.info("smoothing: %d LayerNorm -> linear groups rescaled (alpha %.2f)", n, self.opts.smooth)
        return n

    def _fuse_attention(self) -> int:
        """CPU target: each attention as one MultiHeadAttention node, if the fused FP32 graph gives
        the same outputs as the traced one on a calibration batch; otherwise the traced graph."""
        from dualkd_edge.compile.int8.attention_fusion import fuse_attention
        from dualkd_edge.compile.int8.graph_checks import fp32_differences

        fused, n = fuse_attention(self.pre_proto)
        if not n:
            if any(node.op_type == "Softmax" for node in self.pre_proto.graph.node):
                log.info("attention kept as traced: no site in the fusable layout (a dynamic-batch export "
                         "computes its head split at run time; export with --batch 1 to fuse it)")
            return 0
        fused_path = self.workdir / "pre_fused.onnx"
        save_onnx_atomic(fused, fused_path)
        feed = self.batches.get_next()
        self.batches.rewind()
        differences = fp32_differences(self.pre, fused_path, feed)
        if differences:
            log.warning("attention fusion skipped: the fused graph's outputs differ (%s)", differences)
            return 0
        fused_path.replace(self.pre)
        self.pre_proto = fused
        log.info("attention: %d sites fused into MultiHeadAttention", n)
        return n

    def ranges(self, method: str) -> Path:
        """Calibrated activation ranges for `method`, computed on first use."""
        if method not in self._ranges:
            cache = self.workdir / f"ranges_{method}.json"
            symmetric = self.opts.target == "tensorrt"
            if method == "entropy":
                _entropy_ranges(self.pre, self.batches, self.workdir, symmetric, cache)
            else:
                _plain_ranges(self.pre, self.batches, self.workdir, method, symmetric, cache)
            self._ranges[method] = cache
        return self._ranges[method]

    def candidate(self, method: str, keep_float: set[str] = frozenset()):
        """A Q/DQ model with the groups in `keep_float` left in float (FP16 for TensorRT)."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        symmetric = self.opts.target == "tensorrt"
        out = self.workdir / "candidate.onnx"
        excluded = float_nodes(self.pre_proto, set(keep_float))
        if self.opts.target == "cpu":
            # ONNX Runtime's CPU kernels run attention's activation x activation MatMuls no faster in
            # integer (MatMulIntegerToFloat / QLinearMatMul at 257 tokens) and each needs both inputs
            # quantized on the fly plus its scale as a separate Mul (the float graph fuses it): kept in
            # float, edge-s224 INT8 drops 86 QuantizeLinear and 36 Mul (benchmarks/results/int8-profile-*).
            # Those left after attention fusion are the linear-attention ones of the ED student.
            excluded += activation_matmuls(self.pre_proto)
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(self.pre), str(out), None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=_calibration_method(method),
                nodes_to_exclude=excluded,
                calibration_cache_path=str(self.ranges(method)),
                # Output quantization off: a MatMul output feeding Softmax or a residual Add stays float.
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                               # TensorRT's parser takes no INT32 DequantizeLinear; ONNX Runtime's CPU
                               # kernels fuse INT32 biases, so the CPU target keeps them.
                               "QuantizeBias": not symmetric},
            )
        self.last_qdq = out  # the Q/DQ graph of this candidate, before any lowering; rewritten by the next
        qproto = load_onnx_model(out, load_weights=True)
        from dualkd_edge.compile.int8.qdq_fp16 import drop_unused_domains, lower_qdq_to_fp16

        drop_unused_domains(qproto)
        if self.opts.float_precision == "fp16":
            qproto = lower_qdq_to_fp16(qproto)
        elif self.opts.target == "cpu":
            qproto = self._lower_projections(qproto, out)
        self._set_metadata(qproto, method, sorted(keep_float))
        return qproto

    def _lower_projections(self, qproto, qdq_path: Path):
        """CPU target: each quantized projection as one MatMulIntegerToFloat, if the lowered graph
        agrees with the Q/DQ one on a calibration batch; otherwise the Q/DQ graph."""
        from dualkd_edge.compile.int8.graph_checks import lowering_differences
        from dualkd_edge.compile.int8.integer_matmul import lower_projections

        lowered, n = lower_projections(qproto)
        self.integer_projections = 0
        if not n:
            return qproto
        lowered_path = self.workdir / "lowered.onnx"
        save_onnx_atomic(lowered, lowered_path)
        feed, fp32_outputs = self._fp32_check_batch()
        differences = lowering_differences(fp32_outputs, qdq_path, lowered_path, feed)
        if differences:
            log.warning("projections kept as Q/DQ Gemm: the integer graph's outputs differ (%s)", differences)
            return qproto
        self.integer_projections = n
        return lowered

    def _fp32_check_batch(self):
        """The first calibration batch and the FP32 graph's outputs on it (or why it does not run):
        computed once, the same for every candidate the lowering is checked on."""
        from dualkd_edge.compile.int8.graph_checks import cpu_outputs

        if self._check_batch is None:
            feed = self.batches.get_next()
            self.batches.rewind()
            self._check_batch = (feed, cpu_outputs(self.pre, feed))
        return self._check_batch

    def _set_metadata(self, qproto, method: str, kept: list[str]) -> None:
        new_meta = copy.deepcopy(self.meta)
        opset = next(o.version for o in qproto.opset_import if o.domain in ("", "ai.onnx"))
        symmetric = self.opts.target == "tensorrt"
        new_meta.export = dict(
            self.meta.export, precision="int8", source=str(self.model_path.resolve()), opset=opset,
            tool_version=__version__, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            quantization={"format": "QDQ", "method": method, "samples": len(self.images),
                          "calibration_dir": str(Path(self.opts.calib).resolve()), "ops": list(QUANTIZED_OPS),
                          "per_channel": True, "target": self.opts.target,
                          "high_precision": self.opts.float_precision,
                          "bias": "float" if symmetric else "int32",
                          "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
                          "kept_float": kept, "smoothing_alpha": self.opts.smooth,
                          "attention_matmuls": "int8" if symmetric else "float",
                          "fused_attention": self.fused_attention,
                          "integer_projections": self.integer_projections,
                          "quantized_groups": len(self.groups) - len(kept), "groups": len(self.groups)})
        set_onnx_metadata(qproto, new_meta)


def quantize_int8(model_path: Path, calib_dir: Path, out: Path, method: str = "minmax", samples: int = 256,
                  target: str = "tensorrt", high_precision: str | None = None,
                  keep_float: set[str] = frozenset(), smooth: float | None = None) -> QuantizeResult:
    """Quantize every layer group but `keep_float` and write the model to `out` (atomically)."""
    t0 = time.perf_counter()
    opts = QuantizeOptions(Path(calib_dir), method, samples, target, high_precision, smooth)
    with tempfile.TemporaryDirectory() as tmp:
        session = QuantizationSession(Path(model_path), opts, Path(tmp))
        qproto = session.candidate(method, keep_float)
        save_onnx_atomic(qproto, Path(out))
        n_images = len(session.images)
    n_q = sum(1 for n in qproto.graph.node if n.op_type == "QuantizeLinear")
    return QuantizeResult(Path(out), n_images, time.perf_counter() - t0, n_q, sorted(keep_float))


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _plain_ranges(model: Path, batches: CalibrationBatches, tmp: Path, method: str, symmetric: bool,
                  cache: Path) -> None:
    """MinMax or percentile ranges through ONNX Runtime's calibrator, saved where quantize_static reads them."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    extra = {"symmetric": symmetric, "num_bins": 2048, "percentile": PERCENTILE} if method == "percentile" else {
        "symmetric": symmetric}
    calibrator = create_calibrator(model, list(QUANTIZED_OPS), augmented_model_path=str(tmp / f"augmented_{method}.onnx"),
                                   calibrate_method=_calibration_method(method), extra_options=extra)
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(batches)
        ranges = calibrator.compute_data()
    batches.rewind()
    save_tensors_data(ranges, cache)


def _entropy_ranges(model: Path, batches, tmp: Path, symmetric: bool, cache: Path | None = None) -> Path:
    """Collect activation histograms and write the entropy ranges where quantize_static reads them."""
    import inspect

    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UserError(f"--method entropy: onnxruntime {onnxruntime.__version__} cannot take precomputed "
                        "calibration ranges; upgrade onnxruntime, or use --method minmax or percentile")
    calibrator = create_calibrator(model, list(QUANTIZED_OPS), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS, "symmetric": symmetric,
                                                  "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its bin count per tensor
        calibrator.collect_data(batches)
        ranges = calibrator.compute_data()
    batches.rewind()
    cache = cache or tmp / "entropy_ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def _preprocess(src: Path, dst: Path) -> None:
    """ONNX Runtime's recommended pre-pass (shape inference, graph clean-up); plain copy if it fails."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - fall back to the unprocessed graph
        log.info("quantization pre-processing skipped (%s)", exc)
        import shutil

        shutil.copyfile(src, dst)

