"""The INT8 accuracy gate: FP32 and a candidate evaluated side by side on labelled data.

A candidate passes only when the validation data PROVE it within budget, not when its point
estimate happens to be (a 0.4-point drop on 80 images says little about the next 80):
- the one-sided 95% upper confidence bound of the image-AUROC drop (FP32 - candidate, in points) is
  within `max_drop`: a paired bootstrap over the validation images, stratified by category and by
  good/defective (`evaluation/paired_bootstrap.py`, whose docstring says why);
- the one-sided 95% upper bound (exact Clopper-Pearson) of the share of images whose OK/NG decision
  changes, each model at its own deployed threshold, is within `max_disagree` (`quantize
  --max-disagree`, default `INT8_MAX_DISAGREE` = 3%): a 0.3 score shift at the threshold is a wrong
  decision on the line, whatever the AUROC says;
- the pixel-AUROC drop is still judged on its point estimate (bootstrapping it would re-rank every
  pixel of every resample); it seldom moves: the image-level bounds decide.
Zero disagreements in n images bound the rate at about 3/n, so a 3% budget can be proven on about
100 validation images or more, by any candidate: on fewer, the gate says so and how many are needed.
The point-estimate verdict of the older gate is kept in the report (`point_estimate_passed`) for
comparison (benchmarks/int8_heldout.py --gate-study)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.decision.budget import rate_upper_bound
from dualkd_edge.errors import UserError
from dualkd_edge.evaluation.paired_bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MAX_IMAGES_SEARCHED,
    auroc_drop_bound,
    disagreement_bound,
    minimum_images_for_disagreement,
)

# AUROC drops under half the printed resolution (0.01 points) are float arithmetic, not quantization:
# the CPU target's fused attention (attention_fusion.py) moves the maps by ~1e-7, which reorders tied
# pixels: on the tests' tiny model with every group in float, a pixel-AUROC drop printed as 0.00
# failed a budget of 0.00. Such a drop is not a FAILED.
FLOAT_NOISE_POINTS = 0.005

@dataclass
class GateRow:
    """What the gate needs of one model's evaluation."""

    mean: dict  # mean metrics over categories (image/pixel AUROC, ...)
    scores: np.ndarray  # per test image, in a fixed order
    threshold: float
    images_per_second: float
    labels: np.ndarray | None = None  # 1: defective; per image, same order
    logits: np.ndarray | None = None  # score_logit (what the image AUROC ranks), same order
    categories: np.ndarray | None = None  # category per image (the AUROC is a mean over categories)

    def subset(self, index: np.ndarray, mean: dict | None = None) -> "GateRow":
        """The same model on some of the images (benchmarks draw small validation sets this way)."""
        pick = (lambda a: None if a is None else np.asarray(a)[index])
        return GateRow(mean if mean is not None else {}, self.scores[index], self.threshold, self.images_per_second,
                       pick(self.labels), pick(self.logits), pick(self.categories))


def evaluate_for_gate(model_path: Path, categories: list) -> GateRow:
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.evaluate_splits import evaluate

    with Detector.load(model_path, providers=["cpu"]) as det:
        report = evaluate(det, categories, progress=False)
    records = report.records
    return GateRow(report.mean_row(), np.array([r.score for r in records]), report.threshold,
                   report.images_per_second, np.array([r.label for r in records], dtype=int),
                   np.array([r.score_logit for r in records], dtype=np.float64),
                   np.array([r.category for r in records]))


def judge(fp32: GateRow, candidate: GateRow, max_drop: float, max_disagree: float,
          confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
          seed: int = DEFAULT_SEED) -> tuple[dict, bool]:
    """(report, passed): passed when the upper bounds of the image-AUROC drop and of the OK/NG
    disagreement are within budget (and the pixel-AUROC drop's point estimate is)."""
    from dualkd_edge.evaluation.comparison import decision_agreement

    if fp32.labels is None or fp32.logits is None or candidate.logits is None:
        raise ValueError("judge: the GateRows need labels and score logits (evaluate_for_gate gives them)")
    drops = {}
    for metric in ("image_auroc", "pixel_auroc"):
        a, b = fp32.mean.get(metric), candidate.mean.get(metric)
        if a is not None and b is not None:
            drops[metric] = 100.0 * (a - b)
    try:
        bound = auroc_drop_bound(fp32.labels, fp32.logits, candidate.logits, fp32.categories, confidence,
                                 resamples, seed)
    except ValueError:
        raise UserError("--val: the data has no test split with both good and defective images") from None
    drops.setdefault("image_auroc", bound.point)
    decisions = decision_agreement(fp32.scores, fp32.threshold, candidate.scores, candidate.threshold)
    disagree = disagreement_bound(np.asarray(fp32.scores) >= fp32.threshold,
                                  np.asarray(candidate.scores) >= candidate.threshold, confidence)
    pixel_ok = drops.get("pixel_auroc", 0.0) <= max_drop + FLOAT_NOISE_POINTS
    image_ok = bound.upper <= max_drop + FLOAT_NOISE_POINTS
    disagree_ok = disagree.upper <= max_disagree
    passed = image_ok and pixel_ok and disagree_ok
    at_zero = minimum_images_for_disagreement(max_disagree, confidence)
    report = {"fp32": fp32.mean | {"images_per_second": fp32.images_per_second},
              "int8": candidate.mean | {"images_per_second": candidate.images_per_second},
              "drop_points": drops, "max_drop": max_drop, "confidence": confidence,
              "image_auroc_bound": bound.to_dict(max_drop) | {"passed": image_ok},
              "pixel_passed": pixel_ok,
              "decisions": {"agree": decisions.agree, "disagree": decisions.disagree,
                            "disagree_share": decisions.disagree_share, "max_disagree": max_disagree,
                            "upper": disagree.upper, "n": disagree.n, "passed": disagree_ok,
                            "images_needed": disagree.images_needed(max_disagree),
                            "images_needed_at_zero": at_zero,
                            "upper_at_zero": rate_upper_bound(0, disagree.n, confidence)},
              # No candidate at all (not even FP32 itself) can pass on this many images.
              "provable": at_zero is not None and disagree.n >= at_zero,
              "passed": passed,
              # What the gate said before it judged confidence bounds: point estimates within budget.
              "point_estimate_passed": all(d <= max_drop for d in drops.values())
              and decisions.disagree_share <= max_disagree}
    return report, passed


def _points(v: float) -> str:
    return f"{round(v, 2) + 0.0:.2f}"  # no "-0.00"


def _needed(n: int | None) -> str:
    if n is None:
        return "no number of images"
    return f"more than {MAX_IMAGES_SEARCHED}" if n > MAX_IMAGES_SEARCHED else f"about {n}"


def gate_lines(gate: dict) -> list[str]:
    """The gate's verdict, one line per criterion and why, in the units the budgets are given in."""
    conf = f"{100 * gate['confidence']:.0f}%"
    b, d = gate["image_auroc_bound"], gate["decisions"]
    lines = [f"image AUROC drop {_points(b['point'])} points ({conf} upper bound {_points(b['upper'])}, budget "
             f"{gate['max_drop']:.2f}): {'passed' if b['passed'] else 'FAILED'}"]
    if "pixel_auroc" in gate["drop_points"]:
        lines.append(f"pixel AUROC drop {_points(gate['drop_points']['pixel_auroc'])} points (point estimate, budget "
                     f"{gate['max_drop']:.2f}): {'passed' if gate['pixel_passed'] else 'FAILED'}")
    lines.append(f"OK/NG disagreement {d['disagree']}/{d['n']} ({conf} upper bound {100 * d['upper']:.1f}%, budget "
                 f"{100 * d['max_disagree']:g}%): {'passed' if d['passed'] else 'FAILED'}")
    if not gate["provable"]:
        at_zero = d["images_needed_at_zero"]
        lines.append(f"the validation set ({d['n']} images) is too small for ANY candidate to be proven within the "
                     f"OK/NG budget: even 0 disagreements bound the rate at {100 * d['upper_at_zero']:.1f}%; "
                     + (f"at least {at_zero} images are needed (or a larger --max-disagree)" if at_zero else
                        "a zero budget cannot be proven by any number of images: give --max-disagree > 0"))
    elif not d["passed"] and d["images_needed"] is None:
        lines.append(f"the share of changed decisions ({100 * d['disagree_share']:.1f}%) is itself at or over the "
                     f"budget: no number of validation images can prove this candidate within it")
    elif not d["passed"]:
        lines.append(f"with {d['disagree']} of {d['n']} decisions changed, {_needed(d['images_needed'])} images "
                     f"would be needed to prove this share within the budget")
    if not b["passed"]:
        n_needed = b["images_needed"]
        if n_needed is None:
            lines.append("the image AUROC drop itself is at or over the budget: no number of validation images "
                         "can prove this candidate within it")
        else:
            n = b["n_good"] + b["n_defect"]
            good = round(n_needed * b["n_good"] / n)
            lines.append(f"with this drop and this image-to-image variability, {_needed(n_needed)} validation "
                         f"images (~{good} good + {n_needed - good} defective; this set has {b['n_good']} + "
                         f"{b['n_defect']}) would be needed to prove it within the budget")
    return lines


def accuracy_gate(fp32_path: Path, candidate_path: Path, val: Path, max_drop: float,
                  max_disagree: float | None = None) -> tuple[dict, bool]:
    from dualkd_edge.evaluation.comparison import INT8_MAX_DISAGREE
    from dualkd_edge.data.discovery import discover_all

    categories = discover_all([val])
    return judge(evaluate_for_gate(fp32_path, categories), evaluate_for_gate(candidate_path, categories), max_drop,
                 INT8_MAX_DISAGREE if max_disagree is None else max_disagree)


def agreement_on_images(fp32_path: Path, int8_path: Path, images: list[np.ndarray], int8_name: str | None = None):
    """Without labelled data: the comparator on calibration images (score ranking, OK/NG agreement
    at the deployed threshold, output differences)."""
    from dualkd_edge.evaluation.comparison import Tolerance, compare_detectors
    from dualkd_edge.detector import Detector

    with Detector.load(fp32_path, providers=["cpu"]) as ref, Detector.load(int8_path, providers=["cpu"]) as cand:
        return compare_detectors(ref, [cand], images, tolerances=[Tolerance.for_precisions(["int8"])],
                                 names=[str(fp32_path), int8_name or str(int8_path)])[0]
