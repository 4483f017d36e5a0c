"""The INT8 accuracy gate: FP32 and a candidate evaluated side by side on labelled data.

It fails when image or pixel AUROC drops by more than `max_drop` points, or when more than
`max_disagree` of the images change their OK/NG decision at the deployed threshold (a 0.3 score
shift at the threshold is a wrong decision on the line, whatever the AUROC says)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError


@dataclass
class GateRow:
    """What the gate needs of one model's evaluation."""

    mean: dict  # mean metrics over categories (image/pixel AUROC, ...)
    scores: np.ndarray  # per test image, in a fixed order
    threshold: float
    images_per_second: float


def evaluate_for_gate(model_path: Path, categories: list) -> GateRow:
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.evaluate_splits import evaluate

    with Detector.load(model_path, providers=["cpu"]) as det:
        report = evaluate(det, categories, progress=False)
    return GateRow(report.mean_row(), np.array([r.score for r in report.records]), report.threshold,
                   report.images_per_second)


def judge(fp32: GateRow, candidate: GateRow, max_drop: float, max_disagree: float) -> tuple[dict, bool]:
    from dualkd_edge.evaluation.comparison import decision_agreement

    drops = {}
    for metric in ("image_auroc", "pixel_auroc"):
        a, b = fp32.mean.get(metric), candidate.mean.get(metric)
        if a is not None and b is not None:
            drops[metric] = 100.0 * (a - b)
    if "image_auroc" not in drops:
        raise UserError("--val: the data has no test split with both good and defective images")
    decisions = decision_agreement(fp32.scores, fp32.threshold, candidate.scores, candidate.threshold)
    passed = all(d <= max_drop for d in drops.values()) and decisions.disagree_share <= max_disagree
    report = {"fp32": fp32.mean | {"images_per_second": fp32.images_per_second},
              "int8": candidate.mean | {"images_per_second": candidate.images_per_second},
              "drop_points": drops, "max_drop": max_drop,
              "decisions": {"agree": decisions.agree, "disagree": decisions.disagree,
                            "disagree_share": decisions.disagree_share, "max_disagree": max_disagree}}
    return report, passed


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
