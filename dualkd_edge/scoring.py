"""Noisy-OR scoring formulas in numpy (the torch graph in model/dual_student.py mirrors these).

p_k = sigmoid((s_k - mu_k) / sigma_k - beta)   calibrated probability that branch k sees an anomaly
P   = 1 - (1 - p_L) (1 - p_S)                   Noisy-OR: either branch alone can raise the alarm
score_logit = -log(1 - P) = softplus(z_L - beta) + softplus(z_S - beta),  z_k = (s_k - mu_k) / sigma_k
    the same ranking as P without P's saturation at 1.0 in float32 (z - beta > ~17)
"""

from __future__ import annotations

import numpy as np

from dualkd_edge.metadata import Calibration


def calibrated_probability(score: np.ndarray | float, mu: float, sigma: float, beta: float) -> np.ndarray:
    z = (np.asarray(score, dtype=np.float64) - mu) / sigma - beta
    return 1.0 / (1.0 + np.exp(-z))


def noisy_or(p_local: np.ndarray | float, p_semantic: np.ndarray | float) -> np.ndarray:
    return 1.0 - (1.0 - np.asarray(p_local)) * (1.0 - np.asarray(p_semantic))


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


def noisy_or_nll(d_local: float, d_semantic: float, tau_local: float, tau_semantic: float) -> float:
    """Training objective: -log P(normal) with p_k = 1 - exp(-d_k / tau_k)."""
    return d_local / tau_local + d_semantic / tau_semantic


def robust_sigma(values: np.ndarray, floor_fraction: float = 0.05) -> float:
    """Standard deviation with a floor, so a few near-identical calibration images do not give
    an infinitely sharp sigmoid."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return max(std, floor_fraction * abs(float(values.mean())), 1e-6)
