"""A decision threshold at a false-alarm budget, from normal scores only (order statistics).

With n normal scores sorted from the largest, a threshold just above the k-th largest flags k - 1 of
them, and the rate at which future normal parts exceed it is distributed Beta(k, n - k + 1), whatever
the scores' distribution. We take the lowest such threshold (largest k) whose upper confidence bound
on that rate is within the budget. When even the threshold above the largest score (k = 1) cannot
promise the budget, the data are too few: we warn, keep that most conservative threshold, and say
which rate it can promise (zero exceedances in n bound the rate at about 3/n with 95% confidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_FPR = 0.01
DEFAULT_CONFIDENCE = 0.95


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (no scipy on the runtime path)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1, dtype=np.float64)
    log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(v + 1) + math.lgamma(n - v + 1) for v in i])
               + i * math.log(p) + (n - i) * math.log1p(-p))
    top = float(log_pmf.max())
    return min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum()))


def rate_upper_bound(exceedances: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided upper confidence bound of a rate seen `exceedances` times in `n` (Clopper-Pearson:
    the `confidence` quantile of Beta(exceedances + 1, n - exceedances))."""
    if n <= 0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection to ~1e-18
        mid = (lo + hi) / 2
        if _binomial_cdf(exceedances, n, mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def normal_images_needed(max_fpr: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Normal images for the threshold above the largest to promise `max_fpr`: (1 - r)^n <= 1 - c."""
    return int(math.ceil(math.log(1 - confidence) / math.log1p(-max_fpr)))


@dataclass
class BudgetThreshold:
    threshold_logit: float  # on score_logit: score_logit >= threshold -> NG
    max_fpr: float
    confidence: float
    n_normal: int
    flagged_normal: int  # normal scores at or above the threshold (k - 1)
    promised_fpr: float  # upper confidence bound of the false-alarm rate at this threshold
    resolved: bool  # False: too few normal scores to promise max_fpr; the most conservative threshold

    @property
    def probability(self) -> float:
        """The same threshold on the Noisy-OR probability `score` (P = 1 - exp(-logit))."""
        return float(-math.expm1(-self.threshold_logit))

    @property
    def observed_fpr(self) -> float:
        return self.flagged_normal / self.n_normal if self.n_normal else 0.0

    def describe(self) -> str:
        """What the threshold costs, in a line engineer's units."""
        text = (f"expected false alarms per 1000 good parts: {1000 * self.observed_fpr:.1f} seen, at most "
                f"{1000 * self.promised_fpr:.1f} with {self.confidence:.0%} confidence "
                f"(budget {1000 * self.max_fpr:.1f}; {self.n_normal} normal images)")
        if not self.resolved:
            text += (f"; warning: {self.n_normal} normal images are too few to promise a {self.max_fpr:g} "
                     f"false-alarm rate (about {normal_images_needed(self.max_fpr, self.confidence)} needed): "
                     f"the threshold sits above the highest normal score and can promise "
                     f"{self.promised_fpr:.3g}")
        return text


def budget_threshold(normal_logits: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR,
                     confidence: float = DEFAULT_CONFIDENCE) -> BudgetThreshold:
    """The lowest threshold on score_logit whose false-alarm rate on normal parts is within
    `max_fpr` with `confidence` (see the module's docstring)."""
    if not 0 < max_fpr < 1:
        raise ValueError(f"max_fpr must be in (0, 1), got {max_fpr}")
    scores = np.sort(np.asarray(normal_logits, dtype=np.float64))[::-1]
    scores = scores[np.isfinite(scores)]
    n = int(scores.size)
    if n == 0:
        raise ValueError("no normal scores")
    # upper(k) grows with k: binary search for the largest k (1-based) with upper(k) <= max_fpr.
    lo, hi, best = 1, n, 0
    while lo <= hi:
        k = (lo + hi) // 2
        if rate_upper_bound(k - 1, n, confidence) <= max_fpr:
            best, lo = k, k + 1
        else:
            hi = k - 1
    resolved = best > 0
    k = best if resolved else 1
    kth = scores[k - 1]
    # Just above the k-th largest, below the (k-1)-th: ties with the k-th stay below the threshold.
    above = scores[:k - 1][scores[:k - 1] > kth]
    if above.size:
        threshold = (kth + above[-1]) / 2
    else:
        threshold = kth + max(1e-6, 1e-6 * abs(kth))
    flagged = int((scores >= threshold).sum())
    return BudgetThreshold(float(threshold), max_fpr, confidence, n, flagged,
                           rate_upper_bound(flagged, n, confidence), resolved)
