"""Choosing the decision threshold from an evaluation, and storing it in the model.

The default is a false-alarm budget on the good images alone (decision/budget.py): it needs no
defective samples and says what it can promise. F1-max is there for labelled defects, asked for by name.
"""

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
    cost: str = ""  # what it costs: false alarms per 1000 good parts, catch rate, images behind it
    calibration: str = "training"

    def __str__(self) -> str:
        text = f"{self.model}: threshold {self.old:.4f} -> {self.new:.4f} ({self.how}; calibration '{self.calibration}')"
        return text + (f"\n  {self.cost}" if self.cost else "")


def catch_rate_text(labels: np.ndarray, logits: np.ndarray, threshold_logit: float) -> str:
    defects = logits[labels == 1]
    if not defects.size:
        return "catch rate: no labelled defects to measure it on"
    caught = int((defects >= threshold_logit).sum())
    return f"catch rate {caught / defects.size:.1%} ({caught} of {defects.size} labelled defects)"


def choose_threshold(labels: np.ndarray, logits: np.ndarray, max_fpr: float, f1_max: bool) -> tuple[float, str, str]:
    """(threshold on score_logit, how it was chosen, what it costs)."""
    from dualkd_edge.evaluation import metrics
    from dualkd_edge.decision.budget import budget_threshold

    normal = logits[labels == 0]
    if not normal.size:
        raise UserError("--tune-threshold: DATA's test split has no good images to measure false alarms on")
    if f1_max:
        try:
            t = metrics.f1_max(labels, logits)[1]
        except ValueError as exc:
            raise UserError(f"--tune-threshold --f1-max: {exc} in DATA's test split") from None
        flagged = int((normal >= t).sum())
        cost = (f"false alarms per 1000 good parts: {1000 * flagged / normal.size:.1f} on {normal.size} good images; "
                f"{catch_rate_text(labels, logits, t)}")
        return t, "F1-max on the labelled test split", cost
    budget = budget_threshold(normal, max_fpr)
    t = budget.threshold_logit
    return t, f"false-alarm budget {max_fpr:g} on the good images", f"{budget.describe()}; {catch_rate_text(labels, logits, t)}"


def tune_threshold(model_path: Path, report, max_fpr: float = 0.01, f1_max: bool = False,
                   command: str = "eval --tune-threshold", source: str = "") -> ThresholdChange:
    """Pick the threshold on score_logit, which does not saturate, and store it in the model (in the
    calibration the evaluation decided with) as the probability threshold for `score`, with a history
    entry. `report`: an evaluation.EvalReport of this model on labelled data."""
    from dualkd_edge.artifacts import update_threshold
    from dualkd_edge.decision.history import history_entry
    from dualkd_edge.scoring import probability_threshold

    labels = np.array([r.label for r in report.records])
    logits = np.array([r.score_logit for r in report.records])
    logit_threshold, how, cost = choose_threshold(labels, logits, max_fpr, f1_max)
    new = probability_threshold(logit_threshold, logits, np.array([r.score for r in report.records]))
    history = history_entry(command, report.calibration, None, new, source, len(report.records),
                            policy="f1-max" if f1_max else "max-fpr", max_fpr=None if f1_max else max_fpr)
    try:
        old = update_threshold(model_path, new, report.calibration, history)
    except OSError as exc:
        from dualkd_edge.output_paths import ResultNotWritten, describe_os_error

        raise ResultNotWritten(f"--tune-threshold: could not store the tuned threshold {new:.6f} ({how}) in "
                               f"{model_path} ({describe_os_error(exc)}); the model is unchanged: pass "
                               f"--threshold {new:.6f} to infer, or tune again once it is writable") from None
    return ThresholdChange(Path(model_path), old, new, how, cost, report.calibration)
