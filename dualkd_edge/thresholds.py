"""Choosing the decision threshold from labelled results, and storing it in the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError


@dataclass
class ThresholdChange:
    model: Path
    old: float
    new: float
    how: str

    def __str__(self) -> str:
        return f"{self.model}: threshold {self.old:.4f} -> {self.new:.4f} ({self.how})"


def tune_threshold(model_path: Path, report, max_fpr: float | None) -> ThresholdChange:
    """Pick the F1-optimal threshold (or the one at a false-alarm rate) on score_logit, which does
    not saturate, and store it in the model as the probability threshold for `score`. `report`: an
    evaluation.EvalReport of this model on labelled data."""
    from dualkd_edge import metrics
    from dualkd_edge.artifacts import update_threshold
    from dualkd_edge.scoring import probability_threshold

    labels = np.array([r.label for r in report.records])
    logits = np.array([r.score_logit for r in report.records])
    try:
        if max_fpr is not None:
            logit_threshold = metrics.threshold_at_fpr(labels, logits, max_fpr)
            how = f"false-alarm rate <= {max_fpr:g}"
        else:
            logit_threshold = metrics.f1_max(labels, logits)[1]
            how = "F1-max"
    except ValueError as exc:
        raise UserError(f"--tune-threshold: {exc} in DATA's test split") from None
    new = probability_threshold(logit_threshold, logits, np.array([r.score for r in report.records]))
    try:
        old = update_threshold(model_path, new)
    except OSError as exc:
        from dualkd_edge.outputs import ResultNotWritten, describe_os_error

        raise ResultNotWritten(f"--tune-threshold: could not store the tuned threshold {new:.6f} ({how}) in "
                               f"{model_path} ({describe_os_error(exc)}); the model is unchanged: pass "
                               f"--threshold {new:.6f} to infer, or tune again once it is writable") from None
    return ThresholdChange(Path(model_path), old, new, how)
