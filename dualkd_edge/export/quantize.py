"""`dualkd-edge quantize`: static INT8 with Q/DQ nodes, and the accuracy gate that guards it.

Torch-free (ONNX Runtime's quantization tools), so it also runs on a Jetson.
Only MatMul / Gemm / Conv inputs are quantized with per-channel symmetric INT8 weights; LayerNorm,
Softmax, residual adds and the scoring head stay in float. Activations depend on the target:
- `tensorrt`: symmetric INT8 (zero point 0), what TensorRT's explicit quantization requires;
- `cpu`: asymmetric UINT8, which ONNX Runtime's x86/ARM CPU kernels run about twice as fast as
  INT8 x INT8 (the U8S8 fast path); TensorRT rejects it."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge import __version__
from dualkd_edge.errors import UserError
from dualkd_edge.model_files import load_onnx_model, onnx_metadata, save_onnx_atomic, set_onnx_metadata
from dualkd_edge.preprocess import prepare_batch

log = logging.getLogger("dualkd_edge")

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("tensorrt", "cpu")
QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]


@dataclass
class QuantizeResult:
    path: Path
    n_calibration: int
    seconds: float
    quantized_nodes: int
    gate: dict = field(default_factory=dict)
    passed: bool = True


class ImageCalibrationReader:
    """Feeds calibration images to ONNX Runtime's calibrator, preprocessed exactly as at inference."""

    def __init__(self, images: list[np.ndarray], spec, input_name: str, batch: int) -> None:
        self.batches = [prepare_batch(images[i:i + batch], spec) for i in range(0, len(images) - batch + 1, batch)]
        self.input_name = input_name
        self._it = iter(self.batches)

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def excluded_nodes(model) -> list[str]:
    """The scoring head and top-level input scaling stay in float."""
    from dualkd_edge.export.fp16 import fp32_nodes

    return fp32_nodes(model)


def quantize_int8(model_path: Path, calib_dir: Path, out: Path, method: str = "minmax",
                  samples: int = 256, target: str = "tensorrt") -> QuantizeResult:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from dualkd_edge.calibration_images import load_calibration_images

    if method not in METHODS:
        raise UserError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if samples < 1:
        raise UserError(f"--samples: must be >= 1, got {samples}")
    if target not in TARGETS:
        raise UserError(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}")
    symmetric = target == "tensorrt"
    t0 = time.perf_counter()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(f"MODEL: not found: {model_path}")
    proto = load_onnx_model(model_path, load_weights=True)
    meta = onnx_metadata(proto, model_path)
    if meta.export.get("precision", "fp32") != "fp32":
        raise UserError(f"{model_path}: quantize an FP32 export (this one is {meta.export.get('precision')})")
    images = load_calibration_images(calib_dir, samples)
    input_tensor = proto.graph.input[0]
    batch_dim = input_tensor.type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else min(8, len(images))
    if len(images) < batch:
        raise UserError(f"--calib: {len(images)} image(s) is fewer than the model's batch of {batch}")
    reader = ImageCalibrationReader(images, meta.input, input_tensor.name, batch)
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        qpath = Path(tmp) / "int8.onnx"
        _preprocess(model_path, pre)
        ranges = {}
        if method == "entropy":  # quantize_static's own entropy calibrator is degenerate, see below
            ranges = {"calibration_cache_path": str(_entropy_ranges(pre, reader, Path(tmp), symmetric))}
        quantize_static(
            str(pre), str(qpath), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib_method,
            nodes_to_exclude=excluded_nodes(proto),
            # Output quantization off: a MatMul output feeding Softmax or a residual Add stays float.
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
                           "CalibPercentile": 99.99, "CalibTensorRangeSymmetric": symmetric},
            **ranges,
        )
        qproto = load_onnx_model(qpath, load_weights=True)
    n_q = sum(1 for n in qproto.graph.node if n.op_type == "QuantizeLinear")
    new_meta = copy.deepcopy(meta)
    new_meta.export = dict(meta.export, precision="int8", source=str(model_path.resolve()),
                           tool_version=__version__, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           quantization={"format": "QDQ", "method": method, "samples": len(images),
                                         "calibration_dir": str(Path(calib_dir).resolve()),
                                         "ops": QUANTIZED_OPS, "per_channel": True, "target": target,
                                         "activations": "int8 symmetric" if symmetric else "uint8 asymmetric"})
    set_onnx_metadata(qproto, new_meta)
    save_onnx_atomic(qproto, Path(out))
    return QuantizeResult(Path(out), len(images), time.perf_counter() - t0, n_q)


# KL-divergence calibration as TensorRT does it: a fine histogram, searched for the clipping range
# whose 128-bin quantization loses least. quantize_static builds its entropy calibrator with 128 bins
# for 128 quantized bins, which leaves one candidate, the full range: the same scales as minmax.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


def _entropy_ranges(model: Path, reader: ImageCalibrationReader, tmp: Path, symmetric: bool) -> Path:
    """Collect activation histograms and write the entropy ranges where quantize_static reads them."""
    import contextlib
    import inspect
    import io

    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UserError(f"--method entropy: onnxruntime {onnxruntime.__version__} cannot take precomputed "
                        "calibration ranges; upgrade onnxruntime, or use --method minmax or percentile")
    from onnxruntime.quantization.calibrate import save_tensors_data

    calibrator = create_calibrator(model, QUANTIZED_OPS, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS, "symmetric": symmetric,
                                                  "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its bin count per tensor
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    reader.rewind()
    cache = tmp / "entropy_ranges.json"
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


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from dualkd_edge.metrics import _rank_with_ties

    ra, rb = _rank_with_ties(np.asarray(a, float)), _rank_with_ties(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement_on_images(fp32_path: Path, int8_path: Path, images: list[np.ndarray]) -> dict:
    """Without labelled data: how well INT8 keeps the ranking of scores and the maps' shape."""
    from dualkd_edge.detector import Detector

    outs = []
    for path in (fp32_path, int8_path):
        with Detector.load(path, providers=["cpu"]) as det:
            outs.append(det.infer_raw(images))
    a, b = outs
    map_corr = float(np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a["anomaly_map"], b["anomaly_map"])]))
    return {"score_spearman": spearman(a["score"], b["score"]),
            "local_spearman": spearman(a["local_score"], b["local_score"]),
            "map_correlation": map_corr,
            "max_abs_score_diff": float(np.abs(a["score"] - b["score"]).max()), "n_images": len(images)}


def accuracy_gate(fp32_path: Path, int8_path: Path, val: Path, max_drop: float) -> tuple[dict, bool]:
    """Evaluate FP32 and INT8 side by side; the drop in image and pixel AUROC, in points."""
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation import evaluate

    cats = discover_all([val])
    rows = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        with Detector.load(path, providers=["cpu"]) as det:
            rep = evaluate(det, cats, progress=False)
        rows[name] = rep.mean_row() | {"images_per_second": rep.images_per_second}
    drops = {}
    for metric in ("image_auroc", "pixel_auroc"):
        a, b = rows["fp32"].get(metric), rows["int8"].get(metric)
        if a is not None and b is not None:
            drops[metric] = 100.0 * (a - b)
    if "image_auroc" not in drops:
        raise UserError(f"--val: {val} has no test split with both good and defective images")
    passed = all(d <= max_drop for d in drops.values())
    return {"fp32": rows["fp32"], "int8": rows["int8"], "drop_points": drops, "max_drop": max_drop}, passed
