"""How sure a side-by-side comparison of two models on the same labelled images is (numpy only).

The INT8 gate compares FP32 (the reference) and a candidate on one validation set. A drop of 0.4
AUROC points on 80 images says little about the next 80, so the gate judges confidence bounds:

- Image-AUROC drop (reference - candidate, in points): a **paired, stratified bootstrap over the
  validation images**. Each resample draws the good images and the defective images separately
  (within each category), with replacement, as many of each as there are; both models are scored
  on the SAME resampled images, so the drop is computed on pairs.
  * Paired, because both models see the same parts: most of the image-to-image variability of an
    AUROC (an easy set, a hard set) is shared by the two and cancels in the difference. Resampling
    the two models independently would count it twice and make every bound uselessly wide.
  * Stratified, because AUROC is a statistic of good-vs-defect pairs: a resample with no defect (or
    a different good/defect ratio) is not a validation set anyone would use, and the class counts of
    the real set are fixed by design, not random.
  * Percentile method: the bound is the `confidence` quantile of the resampled drops. It needs no
    normality (an AUROC difference of nearly identical models is a lumpy, bounded statistic), is
    exact at the degenerate case the gate must get right (identical rankings: every resample gives
    0, so the bound is 0), and is cheap. BCa would correct a skew the percentile method ignores, at
    the price of a jackknife per gate step; the coverage test in tests/evaluation shows the
    percentile bound holds its level on synthetic scores at the sizes the gate sees.
  * One-sided 95% upper bound: the gate asks one question, "can the drop be as large as the
    budget?", so only the upper side matters; 95% is the usual engineering level (1 in 20 accepted
    candidates may still be over budget in the worst case of a candidate exactly at the budget).
  AUROC per resample comes from the good-vs-defect pair matrix weighted by the resampled counts
  (one matrix product for all resamples), so 2000 resamples of 500 images take tens of ms.
- OK/NG disagreement (share of images whose decision differs between the models, each at its own
  threshold): a binomial rate, so an exact one-sided Clopper-Pearson upper bound
  (`decision.budget.rate_upper_bound`), no resampling needed. Zero disagreements in n bound the rate
  at about 3/n: a 3% budget can only be proven on about 100 images or more, whatever the candidate.
- How many images would be needed: for the drop, the bootstrap margin (bound - point) shrinks as
  1/sqrt(n) at a fixed good/defect ratio, so a candidate with the observed drop and the observed
  paired variability reaches the budget at n * (margin / (budget - drop))^2 images; a drop already
  at or over the budget cannot be proven within it by any amount of data. For the disagreement, the
  smallest n at which the observed share (or zero disagreements) gives a bound within the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dualkd_edge.decision.budget import normal_images_needed, rate_upper_bound

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
MAX_IMAGES_SEARCHED = 100_000  # the images-needed helpers answer "more than this" beyond it


@dataclass
class DropBound:
    """Image-AUROC drop (reference - candidate), in points, with its one-sided upper bound."""

    point: float
    upper: float
    confidence: float
    resamples: int
    n_good: int
    n_defect: int

    @property
    def n(self) -> int:
        return self.n_good + self.n_defect

    def images_needed(self, budget: float) -> int | None:
        """Validation images (good + defective in the current ratio) at which a candidate with this
        drop and this paired variability would have its bound at the budget; None: never (the drop
        is at or over the budget)."""
        return drop_images_needed(self, budget)

    def to_dict(self, budget: float | None = None) -> dict:
        out = {"point": self.point, "upper": self.upper, "confidence": self.confidence,
               "resamples": self.resamples, "n_good": self.n_good, "n_defect": self.n_defect}
        if budget is not None:
            out["images_needed"] = self.images_needed(budget)
        return out


@dataclass
class DisagreementBound:
    """OK/NG decisions that differ between two models, with a one-sided upper bound of the rate."""

    disagree: int
    n: int
    upper: float
    confidence: float

    @property
    def share(self) -> float:
        return self.disagree / self.n if self.n else 0.0

    def images_needed(self, budget: float) -> int | None:
        """Images at which the observed share would give a bound within `budget`; None: never."""
        return disagreement_images_needed(self.disagree, self.n, budget, self.confidence)

    def to_dict(self, budget: float | None = None) -> dict:
        out = {"disagree": self.disagree, "n": self.n, "share": self.share, "upper": self.upper,
               "confidence": self.confidence}
        if budget is not None:
            out["images_needed"] = self.images_needed(budget)
            out["images_needed_at_zero"] = minimum_images_for_disagreement(budget, self.confidence)
        return out


def _pair_matrix(defect: np.ndarray, good: np.ndarray) -> np.ndarray:
    """H[i, j] = 1 if defect i scores above good j, 1/2 on a tie (Mann-Whitney: the AUROC is its mean)."""
    d, g = defect[:, None], good[None, :]
    return (d > g).astype(np.float64) + 0.5 * (d == g)


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how often each of n items is drawn in each resample of n with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def auroc_drop_bound(labels, reference, candidate, groups=None, confidence: float = DEFAULT_CONFIDENCE,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> DropBound:
    """Point estimate and one-sided upper bound of the image-AUROC drop, reference - candidate, in
    points (percent), by a paired bootstrap stratified by label and by `groups` (e.g. categories:
    the AUROC is then the mean of the per-group AUROCs, as `evaluate` reports it; groups without
    both classes are left out, as there). Deterministic for a given seed."""
    labels = np.asarray(labels).astype(bool)
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if not (labels.shape == reference.shape == candidate.shape) or labels.ndim != 1:
        raise ValueError("labels, reference and candidate must be 1-D arrays of one length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    groups = np.zeros(labels.shape, dtype=int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    point, drops, n_good, n_defect, used = 0.0, np.zeros(resamples), 0, 0, 0
    for group in sorted(set(groups.tolist()), key=str):
        mask = groups == group
        good = np.flatnonzero(mask & ~labels)
        defect = np.flatnonzero(mask & labels)
        if not good.size or not defect.size:
            continue
        # Paired: one matrix of per-pair differences, weighted by the same resampled counts for both models.
        delta = 100.0 * (_pair_matrix(reference[defect], reference[good])
                         - _pair_matrix(candidate[defect], candidate[good]))
        scale = 1.0 / (good.size * defect.size)
        point += float(delta.sum()) * scale
        w_good, w_defect = _counts(rng, good.size, resamples), _counts(rng, defect.size, resamples)
        drops += np.einsum("bj,bj->b", w_defect @ delta, w_good) * scale
        n_good, n_defect, used = n_good + good.size, n_defect + defect.size, used + 1
    if not used:
        raise ValueError("no group has both good and defective images: the AUROC is undefined")
    point, drops = point / used, drops / used
    upper = float(np.quantile(drops, confidence))
    # Floating-point dust on identical models stays exactly 0; the bound is never below the estimate.
    upper = max(upper if abs(upper) > 1e-9 else 0.0, point)
    return DropBound(point if abs(point) > 1e-9 else 0.0, upper, confidence, resamples, n_good, n_defect)


def disagreement_bound(reference_ng, candidate_ng, confidence: float = DEFAULT_CONFIDENCE) -> DisagreementBound:
    """Images whose OK/NG decision differs, and the exact one-sided Clopper-Pearson upper bound of
    that rate."""
    reference_ng = np.asarray(reference_ng, dtype=bool)
    candidate_ng = np.asarray(candidate_ng, dtype=bool)
    if reference_ng.shape != candidate_ng.shape:
        raise ValueError("the two decision arrays must have one length")
    n, k = int(reference_ng.size), int((reference_ng != candidate_ng).sum())
    return DisagreementBound(k, n, rate_upper_bound(k, n, confidence), confidence)


def drop_images_needed(bound: DropBound, budget: float) -> int | None:
    """See `DropBound.images_needed`: the margin (bound - point) scales as 1/sqrt(n)."""
    if bound.upper <= budget:
        return bound.n
    if bound.point >= budget:
        return None
    margin = bound.upper - bound.point
    return int(math.ceil(bound.n * (margin / (budget - bound.point)) ** 2))


def minimum_images_for_disagreement(budget: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """Fewest images on which even zero disagreements bound the rate within `budget`; None: never
    (a zero budget cannot be proven by any finite sample)."""
    if budget >= 1:
        return 1
    if budget <= 0:
        return None
    return normal_images_needed(budget, confidence)


def disagreement_images_needed(disagree: int, n: int, budget: float,
                               confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """Fewest images at which the observed share `disagree / n` (zero disagreements when 0) gives a
    Clopper-Pearson bound within `budget`; None: never (the share is at or over the budget), and
    MAX_IMAGES_SEARCHED + 1 for "more than that"."""
    if disagree == 0 or n <= 0:
        return minimum_images_for_disagreement(budget, confidence)
    share = disagree / n
    if share >= budget:
        return None

    def within(m: int) -> bool:
        return rate_upper_bound(int(round(share * m)), m, confidence) <= budget

    if within(n):
        return n
    lo, hi = n, n
    while not within(hi):  # exponential search, then bisection (the bound falls with m at a fixed share)
        lo, hi = hi, hi * 2
        if lo > MAX_IMAGES_SEARCHED:
            return MAX_IMAGES_SEARCHED + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if within(mid) else (mid, hi)
    return hi
