"""Anomaly-detection metrics in numpy (no torch, no scikit-learn at run time).

Image level: AUROC, average precision, F1-max.  Pixel level: AUROC and AUPRO (up to FPR 0.3,
normalised; MVTec-AD definition).  Pixel metrics stream through fixed-range histograms
(`PixelMetrics`), so thousands of full-resolution maps are never held at once.

Degenerate inputs: AUROC/AP/F1 need both normal and anomalous samples and raise ValueError
otherwise; constant scores give AUROC 0.5 and AP = the positive rate (ties are ties).
Binning error: scores are quantised to `bins` equal bins over [lo, hi]; pixel AUROC is exact for
the quantised scores, so its error is at most half the share of (normal, defect) pixel pairs that
fall in one bin — below 1e-3 with the default 2**16 bins over [0, 2] in the tests.
"""

from __future__ import annotations

import numpy as np


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if labels.all() or not labels.any():
        raise ValueError("metric needs both normal and anomalous samples")
    return labels, scores


def rank_with_ties(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank within each run of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (tied values share their average rank)."""
    ra, rb = rank_with_ties(np.asarray(a, float)), rank_with_ties(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    labels, scores = _check_binary(labels, scores)
    ranks = rank_with_ties(scores)
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _counts_above(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting anomaly for score >= t, at every distinct t
    (highest first), and those thresholds."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_run = np.concatenate([np.flatnonzero(np.diff(s)), [len(s) - 1]])
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    return tp, fp, s[last_of_run]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1);
    thresholds highest first, the first one +inf."""
    labels, scores = _check_binary(labels, scores)
    tp, fp, thresholds = _counts_above(labels, scores)
    tpr = np.concatenate([[0.0], tp / labels.sum()])
    fpr = np.concatenate([[0.0], fp / (~labels).sum()])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def _pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, highest threshold first."""
    tp, fp, thresholds = _counts_above(labels, scores)
    return tp / (tp + fp), tp / labels.sum(), thresholds


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n (step-wise, as scikit-learn computes it)."""
    labels, scores = _check_binary(labels, scores)
    precision, recall, _ = _pr_points(labels, scores)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (predict anomaly if score >= t)."""
    labels, scores = _check_binary(labels, scores)
    precision, recall, thresholds = _pr_points(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold whose false-alarm rate on normal samples stays <= max_fpr."""
    labels, scores = _check_binary(labels, scores)
    normal = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(max_fpr * len(normal)))
    if allowed >= len(normal):
        return float(normal[-1])
    # Strictly above the (allowed+1)-th highest normal score.
    return float(np.nextafter(normal[allowed], np.inf))


class PixelMetrics:
    """Streaming pixel AUROC and AUPRO from fixed-range histograms (see module docstring)."""

    def __init__(self, lo: float = 0.0, hi: float = 2.0, bins: int = 2**16) -> None:
        if not hi > lo:
            raise ValueError("hi must be > lo")
        self.lo, self.hi, self.bins = float(lo), float(hi), int(bins)
        self.normal_hist = np.zeros(self.bins, np.int64)
        self.defect_hist = np.zeros(self.bins, np.int64)
        self.region_fraction_above = np.zeros(self.bins, np.float64)  # summed over regions
        self.n_regions = 0

    def _bin(self, values: np.ndarray) -> np.ndarray:
        idx = ((values.astype(np.float64) - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64)
        return np.clip(idx, 0, self.bins - 1)

    def update(self, mask: np.ndarray, amap: np.ndarray) -> None:
        import cv2

        mask = np.asarray(mask).astype(bool)
        amap = np.asarray(amap, dtype=np.float32)
        if mask.shape != amap.shape:
            raise ValueError(f"mask {mask.shape} and map {amap.shape} differ in shape")
        if not np.all(np.isfinite(amap)):
            raise ValueError("anomaly map contains NaN or infinity")
        bins = self._bin(amap)
        self.normal_hist += np.bincount(bins[~mask], minlength=self.bins)
        if mask.any():
            self.defect_hist += np.bincount(bins[mask], minlength=self.bins)
            n_labels, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            for r in range(1, n_labels):
                region_bins = bins[regions == r]
                counts = np.bincount(region_bins, minlength=self.bins)
                # fraction of the region at or above each bin's lower edge
                self.region_fraction_above += np.cumsum(counts[::-1])[::-1] / region_bins.size
                self.n_regions += 1

    def auroc(self) -> float:
        n_neg, n_pos = self.normal_hist.sum(), self.defect_hist.sum()
        if n_neg == 0 or n_pos == 0:
            raise ValueError("pixel AUROC needs both normal and defective pixels")
        # P(defect > normal) + 0.5 P(equal bin)
        neg_below = np.cumsum(self.normal_hist) - self.normal_hist
        wins = np.sum(self.defect_hist * (neg_below + 0.5 * self.normal_hist))
        return float(wins / (n_pos * n_neg))

    def aupro(self, fpr_limit: float = 0.3) -> float:
        if self.n_regions == 0:
            raise ValueError("AUPRO needs at least one defect region")
        n_neg = self.normal_hist.sum()
        if n_neg == 0:
            raise ValueError("AUPRO needs normal pixels")
        # Thresholds at every bin edge, from high to low: FPR rises from 0, PRO rises from 0.
        fpr = np.cumsum(self.normal_hist[::-1]) / n_neg
        pro = (self.region_fraction_above / self.n_regions)[::-1]
        fpr = np.concatenate([[0.0], fpr])
        pro = np.concatenate([[0.0], pro])
        return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) for x in [0, limit]; x non-decreasing, y interpolated at limit."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit and keep.sum() < len(x):
        i = int(np.argmax(~keep))
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def pixel_auroc(masks, maps, lo: float | None = None, hi: float | None = None, bins: int = 2**16) -> float:
    """Pixel AUROC over a sequence of (HxW) masks and maps; binned over the data's range."""
    acc = _accumulate(masks, maps, lo, hi, bins)
    return acc.auroc()


def aupro(masks, maps, fpr_limit: float = 0.3, lo: float | None = None, hi: float | None = None,
          bins: int = 2**16) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit`."""
    return _accumulate(masks, maps, lo, hi, bins).aupro(fpr_limit)


def _accumulate(masks, maps, lo, hi, bins) -> PixelMetrics:
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    masks = [np.asarray(m) for m in masks]
    if len(maps) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if lo is None or hi is None:
        lo_d = min(float(m.min()) for m in maps)
        hi_d = max(float(m.max()) for m in maps)
        lo = lo_d if lo is None else lo
        hi = (hi_d if hi_d > lo_d else lo_d + 1.0) if hi is None else hi
        hi = hi + (hi - lo) * 1e-9 + 1e-12  # keep the maximum inside the last bin
    acc = PixelMetrics(lo, hi, bins)
    for mask, amap in zip(masks, maps):
        acc.update(mask, amap)
    return acc
