"""A station calibration from a commissioning run: frames of good parts, scored through the same
capture and preprocessing as `infer`, become the Noisy-OR statistics, the normal anomaly-map range
and the threshold at a false-alarm budget (`dualkd-edge calibrate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dualkd_edge.decision.budget import BudgetThreshold, budget_threshold
from dualkd_edge.decision.drift import score_quantiles
from dualkd_edge.decision.history import utc_now
from dualkd_edge.pictures.map_scale import MapHistogram
from dualkd_edge.metadata import BranchCalibration, Calibration, NamedCalibration
from dualkd_edge.scoring import noisy_or_logit, robust_sigma
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.outputs.sinks import Sink

MAP_BINS = 4096  # per-frame anomaly-map histograms (16 KiB each): frames set aside can be left out
OUTLIER_Z = 5.0  # robust z-score (median / MAD) beyond which a commissioning frame is set aside: normal
# tails of 150 generated H.264 frames reached 4.8; half the defective parts there score above 5
MAX_OUTLIER_SHARE = 0.05  # at most this share is set aside, the most extreme first


@dataclass
class CommissioningFrames(Sink):
    """A sink that keeps what a calibration needs of every frame: raw branch scores and a small
    histogram of the anomaly map's scored part."""

    spec: object = None  # the model's InputSpec (scored box of a crop)
    local: list[float] = field(default_factory=list)
    semantic: list[float] = field(default_factory=list)
    map_counts: list[np.ndarray] = field(default_factory=list)
    map_max: list[float] = field(default_factory=list)
    frame_index: list[int] = field(default_factory=list)

    def write(self, result: FrameResult) -> None:
        from dualkd_edge.preprocess import scored_box

        p = result.prediction
        y0, y1, x0, x1 = scored_box(self.spec, *p.anomaly_map.shape)
        hist = MapHistogram(MAP_BINS)
        hist.add(p.anomaly_map[y0:y1, x0:x1])
        self.local.append(p.local_score)
        self.semantic.append(p.semantic_score)
        self.map_counts.append(hist.counts.astype(np.int32))
        self.map_max.append(hist.max)
        self.frame_index.append(result.frame.index)

    @property
    def count(self) -> int:
        return len(self.local)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD): a z-score that the outliers themselves cannot inflate."""
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return (values - med) / max(mad, 1e-12)


def outlier_frames(local: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """Boolean mask of frames set aside: a branch scoring far above the others (a defective part
    passing during commissioning). Only high scores count; at most MAX_OUTLIER_SHARE of the frames."""
    z = np.maximum(robust_z(local), robust_z(semantic))
    limit = int(MAX_OUTLIER_SHARE * len(z))
    order = np.argsort(-z)[:limit]
    mask = np.zeros(len(z), bool)
    mask[order[z[order] > OUTLIER_Z]] = True
    return mask


@dataclass
class StationCalibration:
    named: NamedCalibration
    budget: BudgetThreshold
    set_aside: list[int]  # frame numbers of the frames left out as probably not good


def fit_station_calibration(frames: CommissioningFrames, name: str, max_fpr: float, confidence: float,
                            beta: float, source: str, model_id: str) -> StationCalibration:
    local, semantic = np.asarray(frames.local, np.float64), np.asarray(frames.semantic, np.float64)
    set_aside = outlier_frames(local, semantic)
    keep = ~set_aside
    maps = MapHistogram(MAP_BINS)
    maps.counts = np.sum([c for c, k in zip(frames.map_counts, keep) if k], axis=0).astype(np.int64)
    maps.max = max(m for m, k in zip(frames.map_max, keep) if k)
    named, budget = calibration_from_scores(local[keep], semantic[keep], maps.summary(), name, max_fpr, confidence,
                                            beta, source, model_id)
    named.outliers = int(set_aside.sum())
    return StationCalibration(named, budget, [f for f, out in zip(frames.frame_index, set_aside) if out])


def calibration_from_scores(local: np.ndarray, semantic: np.ndarray, anomaly_map, name: str, max_fpr: float,
                            confidence: float, beta: float, source: str,
                            model_id: str) -> tuple[NamedCalibration, BudgetThreshold]:
    """A named calibration from good frames' raw branch scores (and their anomaly-map range)."""
    calibration = Calibration(
        local=BranchCalibration(mu=float(local.mean()), sigma=robust_sigma(local)),
        semantic=BranchCalibration(mu=float(semantic.mean()), sigma=robust_sigma(semantic)),
        beta=beta, n_images=int(local.size), anomaly_map=anomaly_map)
    logits = noisy_or_logit(local, semantic, calibration)
    calibration.score_quantiles = score_quantiles(logits)
    budget = budget_threshold(logits, max_fpr, confidence)
    named = NamedCalibration(
        name=name, calibration=calibration, threshold=budget.probability, max_fpr=max_fpr,
        promised_fpr=budget.promised_fpr, frames=int(local.size), outliers=0, source=source,
        created=utc_now(), model_id=model_id,
        raw_scores={"local": [round(float(v), 7) for v in local], "semantic": [round(float(v), 7) for v in semantic]})
    return named, budget
