"""Export verification: compare two backends output by output on the same images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualkd_edge.runtime.base import OUTPUT_NAMES

# Justification: FP32 PyTorch and ONNX Runtime kernels sum in different orders (~1e-7 relative per
# op, a few hundred ops deep): raw scores and maps agree to ~1e-5. The calibrated probability
# divides by the calibration sigma (often ~0.01), which magnifies score differences ~100x, and the
# sigmoid's slope is at most 1/4: hence a looser bound on `score`. `score_logit` sums two softplus
# terms of the same z-scores, each of slope at most 1: the same z bound gives 2 x 4 = 8 times the
# bound on `score`.
FP32_TOLERANCE = {"anomaly_map": 1e-4, "local_score": 1e-4, "semantic_score": 1e-4, "score": 2e-3,
                  "score_logit": 1.6e-2}
# FP16 keeps LayerNorm/Softmax/scoring in FP32 but rounds every matmul input to 11 bits.
FP16_TOLERANCE = {"anomaly_map": 3e-2, "local_score": 3e-2, "semantic_score": 3e-2, "score": 5e-2,
                  "score_logit": 4e-1}


@dataclass
class Difference:
    name: str
    max_abs: float
    max_rel: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    tolerance: dict[str, float]) -> list[Difference]:
    diffs = []
    for name in OUTPUT_NAMES:
        a = reference[name].astype(np.float64)
        b = candidate[name].astype(np.float64)
        if a.shape != b.shape:
            diffs.append(Difference(name, float("inf"), float("inf"), tolerance[name]))
            continue
        abs_diff = np.abs(a - b)
        rel = abs_diff / np.maximum(np.abs(a), 1e-6)
        diffs.append(Difference(name, float(abs_diff.max()), float(rel.max()), tolerance[name]))
    return diffs


def format_differences(diffs: list[Difference]) -> str:
    return "\n".join(
        f"  {d.name:<15} max abs {d.max_abs:.2e}  max rel {d.max_rel:.2e}  (tolerance {d.tolerance:g}) "
        f"{'ok' if d.ok else 'EXCEEDED'}" for d in diffs
    )
