"""Checks that a rewritten graph computes what the graph it replaces computed, run before
`quantize` uses a rewrite (attention fusion, integer projections): ONNX Runtime on the CPU, one
calibration batch, output by output. A failed check keeps the graph as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualkd_edge.evaluation.comparison import FP32_TOLERANCE, compare_outputs

# An integer lowering computes each tensor it replaces to float rounding (patch embeddings within
# 1e-6 relative, projections bit-exact on the tiny model: tests/compile/test_integer_matmul.py), but
# requantizing after a rounding change flips a few activations by one step, and the flips travel:
# at the outputs, a correct lowering moved them by 1-9% of what quantization itself moved them on
# edge-s224 and by up to half of it on the tiny model (a random teacher, one image). A wiring error
# (patches cut in the wrong order, output channels swapped) moves them by several times more.
LOWERING_SHARE_OF_QUANTIZATION = 1.0


def cpu_outputs(path: str | Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray] | str:
    """Every output of the model at `path` on `feed`; or why it does not run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; the caller keeps the graph as it was
        return f"{Path(path).name} does not run ({str(exc).splitlines()[0][:160]})"


def fp32_differences(reference, candidate, feed: dict[str, np.ndarray]) -> str:
    """'' when two FP32 graphs give the same outputs on `feed` to FP32 tolerance; else which
    outputs differ and by how much."""
    results = [cpu_outputs(path, feed) for path in (reference, candidate)]
    if failed := next((r for r in results if isinstance(r, str)), None):
        return failed
    diffs = compare_outputs(results[0], results[1], FP32_TOLERANCE)
    return "; ".join(f"{d.name} by {d.max_abs:.2e}" for d in diffs if not d.ok)


def lowering_differences(reference: dict[str, np.ndarray] | str, quantized, lowered,
                         feed: dict[str, np.ndarray]) -> str:
    """'' when the `lowered` INT8 graph stays within LOWERING_SHARE_OF_QUANTIZATION of the change
    quantization made (`quantized` against the FP32 graph's outputs `reference` on `feed`, or why
    those could not be computed), or within FP32 tolerance, on every output."""
    results = [reference] + [cpu_outputs(path, feed) for path in (quantized, lowered)]
    if failed := next((r for r in results if isinstance(r, str)), None):
        return failed
    reference, qdq, candidate = results
    problems = []
    for name, value in qdq.items():
        if name not in candidate:
            continue
        quantization = float(np.abs(qdq[name] - reference[name]).max()) if name in reference else 0.0
        allowed = max(FP32_TOLERANCE.get(name, 0.0), LOWERING_SHARE_OF_QUANTIZATION * quantization)
        moved = float(np.abs(candidate[name] - value).max())
        if not moved <= allowed:
            problems.append(f"{name} by {moved:.2e} (allowed {allowed:.2e})")
    return "; ".join(problems)
