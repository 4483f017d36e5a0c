"""Noisy-OR calibration: statistics of local and semantic scores on held-out normal images."""

from __future__ import annotations

import numpy as np
import torch

from dualkd_edge.pictures.map_scale import MapHistogram
from dualkd_edge.metadata import BranchCalibration, Calibration
from dualkd_edge.model.dual_student import DualStudentModel, NoisyOrScoring
from dualkd_edge.preprocess import normalize_nhwc_bgr
from dualkd_edge.decision.drift import score_quantiles
from dualkd_edge.scoring import noisy_or_logit, robust_sigma


@torch.no_grad()
def raw_scores(model: DualStudentModel, images: np.ndarray, batch_size: int = 32,
               map_histogram: MapHistogram | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated (local, semantic) scores for uint8 BGR images already at model size; the
    anomaly maps' pixel values go into `map_histogram` when given."""
    device = model.semantic_centre.device
    scoring = NoisyOrScoring(model.preset).to(device)
    was_training = model.training
    model.eval()
    local, semantic = [], []
    p = model.preset
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(normalize_nhwc_bgr(images[i:i + batch_size], p.mean, p.std)).to(device)
        out = scoring(model(x))
        local.append(out["local_score"].float().cpu().numpy())
        semantic.append(out["semantic_score"].float().cpu().numpy())
        if map_histogram is not None:
            map_histogram.add(out["anomaly_map"].float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(local), np.concatenate(semantic)


def calibrate(model: DualStudentModel, images: np.ndarray, beta: float = 3.0) -> Calibration:
    maps = MapHistogram()
    local, semantic = raw_scores(model, images, map_histogram=maps)
    calibration = Calibration(
        local=BranchCalibration(mu=float(local.mean()), sigma=robust_sigma(local)),
        semantic=BranchCalibration(mu=float(semantic.mean()), sigma=robust_sigma(semantic)),
        beta=beta,
        n_images=int(len(images)),
        anomaly_map=maps.summary(),
    )
    # What the drift watch compares live scores with (decision/drift.py).
    calibration.score_quantiles = score_quantiles(noisy_or_logit(local, semantic, calibration))
    return calibration


@torch.no_grad()
def teacher_class_token_mean(model: DualStudentModel, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """The centre subtracted from the teacher's class token (kept with the weights): the mean over
    ALL training images. The training list is ordered by category, so any prefix of it would be
    the centre of the first categories only."""
    device = model.semantic_centre.device
    p = model.preset
    total = torch.zeros(p.teacher_dim, dtype=torch.float64, device=device)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(normalize_nhwc_bgr(images[i:i + batch_size], p.mean, p.std)).to(device)
        total += model.teacher(x)[2].double().sum(0)
    return (total / max(1, len(images))).float()
