"""Which calibration decides: the training one, or a named station calibration stored in the model.

The exported graph computes the Noisy-OR scores with the training calibration baked in. A named
calibration has its own statistics, so the host recomputes `score_logit` and `score` from the raw
branch scores the graph also returns (the same formula: scoring.noisy_or_logit), for every artifact
kind, engines included, without touching the graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import TRAINING_CALIBRATION, ArtifactMetadata, Calibration


@dataclass(frozen=True)
class ActiveCalibration:
    name: str
    calibration: Calibration
    threshold: float  # on the probability `score`
    rescore: bool  # False: the graph's own scores are this calibration's (the training one)

    def scores(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(score, score_logit) of a batch's outputs under this calibration (float64)."""
        if not self.rescore:
            return (np.asarray(outputs["score"], np.float64), np.asarray(outputs["score_logit"], np.float64))
        from dualkd_edge.scoring import noisy_or_logit

        logit = noisy_or_logit(outputs["local_score"], outputs["semantic_score"], self.calibration)
        return -np.expm1(-logit), logit

    def branch_z(self, local: float, semantic: float) -> tuple[float, float]:
        """How many calibration spreads each branch's raw score is above the calibration's mean."""
        c = self.calibration
        return (local - c.local.mu) / c.local.sigma, (semantic - c.semantic.mu) / c.semantic.sigma


def default_calibration_name(meta: ArtifactMetadata) -> str:
    """The last station calibration made, else the training one."""
    return meta.calibrations[-1].name if meta.calibrations else TRAINING_CALIBRATION


def select_calibration(meta: ArtifactMetadata, name: str | None = None, threshold: float | None = None,
                       model: str = "MODEL") -> ActiveCalibration:
    """The calibration `name` (default: the last one made, then the training one); `threshold`
    (e.g. `--threshold`) overrides its threshold, not its statistics."""
    name = name or default_calibration_name(meta)
    if name == TRAINING_CALIBRATION:
        chosen = ActiveCalibration(TRAINING_CALIBRATION, meta.calibration, meta.threshold, rescore=False)
    else:
        named = next((c for c in meta.calibrations if c.name == name), None)
        if named is None:
            raise UserError(f"--calibration: {model} has no calibration {name!r} "
                            f"(it has: {', '.join(meta.calibration_names())})")
        chosen = ActiveCalibration(named.name, named.calibration, named.threshold, rescore=True)
    if threshold is not None:
        chosen = ActiveCalibration(chosen.name, chosen.calibration, float(threshold), chosen.rescore)
    return chosen


def check_calibration_name(name: str, option: str = "--name", allow_training: bool = False) -> str:
    """Names go into file metadata, JSONL and metric labels: keep them short and plain."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise UserError(f"{option}: expected a name of letters, digits, '.', '_' or '-' (at most 64), got {name!r}")
    if name == TRAINING_CALIBRATION and not allow_training:
        raise UserError(f"{option}: {TRAINING_CALIBRATION!r} is the calibration made at training time; choose another name")
    return name


def store_calibration(meta, named, command: str) -> str:
    """Add (or replace, moving it last: the default) a named calibration; record it in the history.
    Returns the calibration that was the default before."""
    from dualkd_edge.decision.history import history_entry

    previous_default = default_calibration_name(meta)
    replaced = next((c for c in meta.calibrations if c.name == named.name), None)
    old_threshold = replaced.threshold if replaced else select_calibration(meta).threshold
    meta.calibrations = [c for c in meta.calibrations if c.name != named.name] + [named]
    meta.history.append(history_entry(
        command, named.name, old_threshold, named.threshold, named.source, named.frames,
        replaced=replaced is not None, previous_default=previous_default, max_fpr=named.max_fpr,
        promised_fpr=named.promised_fpr, outliers=named.outliers, model_id=named.model_id))
    return previous_default
