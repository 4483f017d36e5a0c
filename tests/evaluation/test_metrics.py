"""Metrics against independent references: scikit-learn and a plain brute-force AUPRO."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from dualkd_edge.evaluation import metrics


@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_match_sklearn_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels * rng.uniform(0, 2), 1)  # rounding makes ties
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    p, r, t = precision_recall_curve(labels, scores)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)[:-1]
    best, thr = metrics.f1_max(labels, scores)
    assert best == pytest.approx(f1.max(), abs=1e-12)
    assert thr == pytest.approx(t[np.argmax(f1)])


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # with ties
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    ref_fpr, ref_tpr, ref_thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    np.testing.assert_allclose(thresholds[1:], ref_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.image_auroc(labels, scores), abs=1e-12)


def test_hand_made_cases():
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.image_auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.image_auroc([0, 1], [0.5, 0.5]) == 0.5  # constant scores: documented 0.5
    assert metrics.average_precision([0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]) == 0.5  # = positive rate
    f1, thr = metrics.f1_max([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9])
    assert f1 == 1.0 and thr == 0.7
    # at most 1 of 4 normal images may raise the alarm: threshold above the second-highest normal
    thr = metrics.threshold_at_fpr([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.9], 0.25)
    assert 0.3 < thr <= 0.3 + 1e-12


@pytest.mark.parametrize("fn", [metrics.image_auroc, metrics.average_precision, metrics.f1_max])
def test_degenerate_inputs_raise(fn):
    with pytest.raises(ValueError, match="both normal and anomalous"):
        fn([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        fn([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        fn([0, 1], [0.1])


def brute_force_aupro(masks, maps, fpr_limit=0.3):
    """The MVTec-AD definition written plainly: every distinct threshold, per-region overlap."""
    import cv2

    regions = []
    for mask in masks:
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [(len(regions), lab == r, mask, i) for r in range(1, n) for i in [len(regions)]]
    all_values = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    normal = np.concatenate([m[~k.astype(bool)] for m, k in zip(maps, masks)])
    fprs, pros = [0.0], [0.0]
    region_maps = []
    for amap, mask in zip(maps, masks):
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        region_maps += [amap[lab == r] for r in range(1, n)]
    for t in all_values:
        fprs.append(float(np.mean(normal >= t)))
        pros.append(float(np.mean([np.mean(v >= t) for v in region_maps])))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= fpr_limit
    x, y = fprs[keep], pros[keep]
    if x[-1] < fpr_limit:
        i = int(np.argmax(~keep))
        y_lim = pros[i - 1] + (pros[i] - pros[i - 1]) * (fpr_limit - fprs[i - 1]) / (fprs[i] - fprs[i - 1])
        x, y = np.append(x, fpr_limit), np.append(y, y_lim)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit)


def _maps_and_masks(seed: int):
    import cv2

    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(6):
        mask = np.zeros((40, 40), np.uint8)
        if i % 3:
            for _ in range(rng.integers(1, 3)):
                cv2.circle(mask, tuple(int(v) for v in rng.integers(5, 35, 2)), int(rng.integers(2, 6)), 1, -1)
        amap = rng.random((40, 40)).astype(np.float32) * 0.5 + mask * rng.uniform(0.1, 0.6)
        masks.append(mask.astype(bool))
        maps.append(np.round(amap, 3))  # quantised so that the binned metric is exact
    return masks, maps


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_against_references(seed):
    masks, maps = _maps_and_masks(seed)
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([m.ravel() for m in maps])
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-3)
    # with bins narrower than the map's 1e-3 quantisation, AUPRO matches the brute force closely
    ours = metrics.aupro(masks, maps, lo=0.0, hi=2.0, bins=2**16)
    assert ours == pytest.approx(brute_force_aupro(masks, maps), abs=2e-3)


def test_binned_pixel_auroc_error_is_small_on_continuous_maps():
    rng = np.random.default_rng(9)
    masks = [rng.random((64, 64)) > 0.9 for _ in range(4)]
    maps = [rng.random((64, 64)).astype(np.float32) * 0.3 + m * 0.05 for m in masks]
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([m.ravel() for m in maps])
    acc = metrics.PixelMetrics(0.0, 2.0)  # the fixed range eval streams with
    for m, a in zip(masks, maps):
        acc.update(m, a)
    assert abs(acc.auroc() - roc_auc_score(y, s)) < 1e-3


def test_pixel_degenerate_inputs():
    with pytest.raises(ValueError, match="defect region"):
        metrics.aupro([np.zeros((4, 4), bool)], [np.ones((4, 4))])
    with pytest.raises(ValueError, match="both normal and defective"):
        metrics.pixel_auroc([np.zeros((4, 4), bool)], [np.ones((4, 4))])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.pixel_auroc([np.zeros((4, 4), bool)], [np.ones((5, 4))])
