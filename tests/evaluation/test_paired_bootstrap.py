"""The paired bootstrap behind the INT8 gate: exact where it must be, honest in coverage, fast."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from dualkd_edge.evaluation.metrics import image_auroc
from dualkd_edge.evaluation.paired_bootstrap import (
    auroc_drop_bound,
    disagreement_bound,
    disagreement_images_needed,
    drop_images_needed,
    minimum_images_for_disagreement,
)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def scores(n_good: int, n_defect: int, separation: float, noise: float, rng):
    """Reference: good ~ N(0, 1), defective ~ N(separation, 1); candidate: reference + N(0, noise),
    as INT8 rounding moves each image's score a little."""
    labels = np.r_[np.zeros(n_good, bool), np.ones(n_defect, bool)]
    ref = rng.normal(size=labels.size) + separation * labels
    return labels, ref, ref + rng.normal(scale=noise, size=labels.size)


def test_identical_models_drop_zero_and_bound_zero():
    labels, ref, _ = scores(60, 20, 1.5, 0.0, np.random.default_rng(0))
    b = auroc_drop_bound(labels, ref, ref.copy())
    assert b.point == 0.0 and b.upper == 0.0
    assert (b.n_good, b.n_defect, b.resamples, b.confidence) == (60, 20, 2000, 0.95)
    # a monotone transform keeps every ranking: still nothing to bound
    assert auroc_drop_bound(labels, ref, 3 * ref + 1).upper == 0.0
    assert drop_images_needed(b, 0.0) == 80


def test_point_is_the_auroc_drop_in_points_per_group_mean_with_ties():
    rng = np.random.default_rng(1)
    labels, ref, cand = scores(50, 30, 1.0, 0.5, rng)
    cand = np.round(cand, 1)  # ties, counted 1/2 as metrics.image_auroc does
    groups = np.array(["washer", "bracket"])[rng.integers(0, 2, labels.size)]
    b = auroc_drop_bound(labels, ref, cand, groups)
    want = np.mean([100 * (image_auroc(labels[groups == g], ref[groups == g])
                           - image_auroc(labels[groups == g], cand[groups == g])) for g in ("washer", "bracket")])
    assert b.point == pytest.approx(want, abs=1e-9)
    assert b.n_good + b.n_defect == labels.size


def test_a_clearly_worse_candidate_has_a_bound_above_its_drop():
    labels, ref, cand = scores(60, 20, 1.5, 0.6, np.random.default_rng(2))
    b = auroc_drop_bound(labels, ref, cand)
    assert b.point > 0 and b.upper > b.point + 0.5
    assert drop_images_needed(b, b.point - 0.1) is None  # the drop is over the budget: no data can help
    assert drop_images_needed(b, b.upper + 1) == 80  # already proven


def test_determinism_with_a_seed():
    labels, ref, cand = scores(60, 20, 1.5, 0.4, np.random.default_rng(3))
    a = auroc_drop_bound(labels, ref, cand, seed=7)
    assert a == auroc_drop_bound(labels, ref, cand, seed=7)
    assert a.upper != auroc_drop_bound(labels, ref, cand, seed=8).upper
    assert a.point == auroc_drop_bound(labels, ref, cand, seed=8).point


def test_coverage_of_the_upper_bound_on_known_distributions():
    """200 simulated validation sets of 60 good + 20 defective images: the true drop is known in
    closed form, Phi(s / sqrt(2)) - Phi(s / sqrt(2 + 2 noise^2)); the one-sided 95% bound must be at
    or above it in about 95% of the sets (>= 90% here: percentile bootstraps run a little short)."""
    separation, noise = 1.5, 0.3
    true = 100 * (_phi(separation / math.sqrt(2)) - _phi(separation / math.sqrt(2 + 2 * noise ** 2)))
    rng = np.random.default_rng(123)
    covered = 0
    for k in range(200):
        labels, ref, cand = scores(60, 20, separation, noise, rng)
        covered += auroc_drop_bound(labels, ref, cand, resamples=1000, seed=k).upper >= true
    assert covered / 200 >= 0.90, covered


def test_500_images_in_under_a_second():
    labels, ref, cand = scores(375, 125, 1.5, 0.2, np.random.default_rng(4))
    t0 = time.perf_counter()
    auroc_drop_bound(labels, ref, cand)
    assert time.perf_counter() - t0 < 1.0


def test_images_needed_for_the_drop_follows_the_margin():
    """A set of n images repeated k times is what more data of the same variability looks like: the
    bound's margin shrinks as 1/sqrt(k), where `images_needed` says the budget is reached."""
    labels, ref, cand = scores(60, 20, 1.5, 0.3, np.random.default_rng(5))
    b = auroc_drop_bound(labels, ref, cand)
    budget = b.point + (b.upper - b.point) / 2  # half the margin: about 4x the images
    needed = b.images_needed(budget)
    assert needed == pytest.approx(4 * 80, rel=0.01)
    bigger = auroc_drop_bound(np.tile(labels, 4), np.tile(ref, 4), np.tile(cand, 4))
    assert bigger.upper == pytest.approx(budget, abs=0.25 * (b.upper - b.point))
    assert b.to_dict(budget)["images_needed"] == needed


@pytest.mark.parametrize("k,n,upper", [(0, 80, 0.0367542), (1, 80, 0.0579287), (5, 100, 0.1022534),
                                       (3, 36, 0.2015199), (2, 200, 0.0311426)])
def test_clopper_pearson_known_values(k, n, upper):
    ref = np.zeros(n, bool)
    cand = ref.copy()
    cand[:k] = True
    b = disagreement_bound(ref, cand)
    assert (b.disagree, b.n) == (k, n)
    assert b.upper == pytest.approx(upper, abs=1e-6)
    assert b.share == k / n


def test_images_needed_for_the_disagreement():
    assert minimum_images_for_disagreement(0.03) == 99  # 0 in 99 -> 2.98%, 0 in 98 -> 3.01%
    assert disagreement_bound(np.zeros(99, bool), np.zeros(99, bool)).upper <= 0.03
    assert disagreement_bound(np.zeros(98, bool), np.zeros(98, bool)).upper > 0.03
    assert minimum_images_for_disagreement(0.0) is None  # a zero budget is never proven
    assert disagreement_images_needed(0, 80, 0.05) == minimum_images_for_disagreement(0.05) == 59
    assert disagreement_images_needed(4, 80, 0.05) is None  # 5% seen: at the budget
    m = disagreement_images_needed(1, 80, 0.05)
    assert m > 80
    from dualkd_edge.decision.budget import rate_upper_bound

    assert rate_upper_bound(round(m / 80), m) <= 0.05 < rate_upper_bound(round((m - 1) / 80), m - 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="both good and defective"):
        auroc_drop_bound([0, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one length"):
        auroc_drop_bound([0, 1], [0.1, 0.2], [0.1])
