"""Noisy-OR scoring formulas in numpy (the torch graph in model/scoring.py mirrors these).

p_k = sigmoid((s_k - mu_k) / sigma_k - beta)   calibrated probability that branch k sees an anomaly
P   = 1 - (1 - p_L) (1 - p_S)                   Noisy-OR: either branch alone can raise the alarm
"""

from __future__ import annotations

import numpy as np


def calibrated_probability(score: np.ndarray | float, mu: float, sigma: float, beta: float) -> np.ndarray:
    z = (np.asarray(score, dtype=np.float64) - mu) / sigma - beta
    return 1.0 / (1.0 + np.exp(-z))


def noisy_or(p_local: np.ndarray | float, p_semantic: np.ndarray | float) -> np.ndarray:
    return 1.0 - (1.0 - np.asarray(p_local)) * (1.0 - np.asarray(p_semantic))


def noisy_or_nll(d_local: float, d_semantic: float, tau_local: float, tau_semantic: float) -> float:
    """Training objective: -log P(normal) with p_k = 1 - exp(-d_k / tau_k)."""
    return d_local / tau_local + d_semantic / tau_semantic


def robust_sigma(values: np.ndarray, floor_fraction: float = 0.05) -> float:
    """Standard deviation with a floor, so a few near-identical calibration images do not give
    an infinitely sharp sigmoid."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return max(std, floor_fraction * abs(float(values.mean())), 1e-6)
