"""Noisy-OR scoring on the host (numpy). The exported graph computes the scores itself
(model/dual_student.py NoisyOrScoring); what the host needs is:
- `noisy_or_logit`: score_logit = -log(1 - P) = softplus(z_L - beta) + softplus(z_S - beta), with
  z_k = (s_k - mu_k) / sigma_k, for models exported before the graph had that output;
- `probability_threshold`: a threshold found on score_logit as a threshold on the probability P;
- `robust_sigma`: the calibration's spread, floored.
"""

from __future__ import annotations

import numpy as np

from dualkd_edge.metadata import Calibration


def softplus(x: np.ndarray | float) -> np.ndarray:
    """log(1 + exp(x)) without overflow: relu(x) + log(1 + exp(-|x|)), as the exported graph does."""
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def noisy_or_logit(local_score: np.ndarray | float, semantic_score: np.ndarray | float,
                   calibration: Calibration) -> np.ndarray:
    """score_logit = -log(1 - P) from raw branch scores: for models exported before the graph had
    that output (and the reference the graph is tested against)."""
    c = calibration
    z_local = (np.asarray(local_score, dtype=np.float64) - c.local.mu) / c.local.sigma - c.beta
    z_semantic = (np.asarray(semantic_score, dtype=np.float64) - c.semantic.mu) / c.semantic.sigma - c.beta
    return softplus(z_local) + softplus(z_semantic)


def probability_threshold(logit_threshold: float, score_logits: np.ndarray, scores: np.ndarray) -> float:
    """The `score` (probability) threshold for a threshold found on score_logit: P = 1 - exp(-t),
    lowered where float32 rounding put a flagged image's probability below it, so that
    `score >= threshold` flags every image that `score_logit >= t` flags. (Images whose
    probabilities saturated to the same value as a flagged one are flagged too: probabilities
    cannot tell them apart.)"""
    p = float(-np.expm1(-logit_threshold))
    flagged = np.asarray(scores, dtype=np.float64)[np.asarray(score_logits) >= logit_threshold]
    return min(p, float(flagged.min())) if flagged.size else p


def robust_sigma(values: np.ndarray, floor_fraction: float = 0.05) -> float:
    """Standard deviation with a floor, so a few near-identical calibration images do not give
    an infinitely sharp sigmoid."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return max(std, floor_fraction * abs(float(values.mean())), 1e-6)
