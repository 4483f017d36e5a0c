"""What a model was made for, and a warning when it runs where it is slow.

`quantize` writes its target into the metadata (`export.quantization.target`): `tensorrt` graphs are
symmetric INT8 Q/DQ with FP16 between the INT8 layers, which TensorRT fuses into INT8 kernels and ONNX
Runtime's CPU provider runs 2.5-4x slower than the FP32 model (it cannot fuse the FP16 casts); `cpu`
graphs are UINT8 activations with FP32 between, which the CPU provider fuses into integer kernels and
TensorRT rejects. The user learns this from one warning, not from a benchmark."""

from __future__ import annotations

import logging

log = logging.getLogger("dualkd_edge")

_warned: set[tuple[str, str]] = set()  # (model, provider) already warned about in this process
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def quantization_target(meta) -> str | None:
    """`cpu`, `tensorrt`, or None when the model is not INT8."""
    return (meta.export.get("quantization") or {}).get("target")


def artifact_precision(meta) -> str:
    """fp32 | fp16 | int8: what an artifact computes in (engines record it at build)."""
    return meta.export.get("engine_precision") or meta.export.get("precision") or "fp32"


def made_for(meta) -> str:
    """A short label for tables: fp32, fp16, int8-cpu, int8-tensorrt (an engine: its build precision)."""
    precision = artifact_precision(meta)
    target = quantization_target(meta)
    return f"{precision}-{target}" if precision == "int8" and target else precision


def mismatch(meta, provider: str) -> str | None:
    """Why `provider` (the first ONNX Runtime provider of a session) is the wrong one for this model."""
    target = quantization_target(meta)
    if target == "tensorrt" and provider == "CPUExecutionProvider":
        return ("quantized for TensorRT (FP16 between INT8 layers): ONNX Runtime's CPU provider runs it slower "
                "than the FP32 model; for a CPU, make it with `dualkd-edge quantize --target cpu`")
    if target == "cpu" and provider in GPU_PROVIDERS:
        return (f"quantized for the CPU (UINT8 activations): {provider.removesuffix('ExecutionProvider')} runs it "
                "without INT8 kernels; for a GPU, make it with `dualkd-edge quantize --target tensorrt`")
    return None


def warn_if_mismatched(model: str, meta, provider: str) -> bool:
    """One WARNING per model and provider in a process (bench, infer, eval and compare all open models
    through the backend, some of them several times)."""
    reason = mismatch(meta, provider)
    if reason is None or (model, provider) in _warned:
        return False
    _warned.add((model, provider))
    log.warning("%s: %s", model, reason)
    return True
