"""Evaluate a Detector on test splits: per-category image and pixel metrics (torch-free)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from dualkd_edge.evaluation import metrics
from dualkd_edge.data.discovery import Category, Sample
from dualkd_edge.detector import Detector
from dualkd_edge.fileio import read_image, read_mask
from dualkd_edge.preprocess import scored_box
from dualkd_edge.console.progress import Progress
from dualkd_edge.scoring import probability_threshold

log = logging.getLogger("dualkd_edge")

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max", "local_auroc", "semantic_auroc")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupro")


@dataclass
class ImageRecord:
    path: str
    category: str
    defect: str
    label: int
    score: float
    local_score: float
    semantic_score: float
    is_anomaly: bool
    score_logit: float


@dataclass
class EvalReport:
    model: str
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)  # category -> metrics
    records: list[ImageRecord] = field(default_factory=list)
    images_per_second: float = 0.0
    skipped: list[str] = field(default_factory=list)  # unreadable images
    # images left out of the pixel metrics: "path (why)", e.g. a defect whose mask is empty or broken
    pixel_skipped: list[str] = field(default_factory=list)
    threshold: float = 0.5
    calibration: str = "training"  # the calibration the decisions were made with

    def mean_row(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in IMAGE_METRICS + PIXEL_METRICS + ("f1_threshold",):
            vals = [r[key] for r in self.rows.values() if r.get(key) is not None]
            out[key] = float(np.mean(vals)) if vals else None
        return out


def _safe(fn, *args) -> float | None:
    try:
        return fn(*args)
    except ValueError:
        return None  # e.g. a category without defective samples: reported as n/a


def image_metrics(records: list[ImageRecord]) -> dict[str, float | None]:
    """Ranked by score_logit: the probability `score` saturates at 1.0 and would tie strong anomalies."""
    labels = np.array([r.label for r in records])
    logit = np.array([r.score_logit for r in records])
    f1 = _safe(metrics.f1_max, labels, logit)
    return {
        "image_auroc": _safe(metrics.image_auroc, labels, logit),
        "image_ap": _safe(metrics.average_precision, labels, logit),
        "image_f1_max": f1[0] if f1 else None,
        # as a probability, comparable with the model's `threshold`
        "f1_threshold": probability_threshold(f1[1], logit, np.array([r.score for r in records])) if f1 else None,
        "local_auroc": _safe(metrics.image_auroc, labels, np.array([r.local_score for r in records])),
        "semantic_auroc": _safe(metrics.image_auroc, labels, np.array([r.semantic_score for r in records])),
    }


def ground_truth(sample: Sample, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The sample's defect mask at the map's size, or (None, why) when it cannot be known. A good
    image without a mask is all normal; a defective one without a readable mask (missing, empty,
    broken file) is NOT taken as defect-free: it would count its defect as normal pixels."""
    if sample.mask_path is None:
        if sample.label == 0:
            return np.zeros(shape, bool), ""
        return None, "no mask"
    mask = read_mask(sample.mask_path)
    if mask is None:
        return None, f"unreadable mask {sample.mask_path.name}"
    if mask.shape != shape:
        import cv2

        mask = cv2.resize(mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask, ""


def evaluate(detector: Detector, categories: list[Category], batch_size: int = 8,
             progress: bool = True) -> EvalReport:
    """Run the detector over every test sample; pixel metrics only where masks exist."""
    report = EvalReport(model=detector.backend.describe(), threshold=detector.threshold,
                        calibration=detector.calibration.name)
    samples = [s for c in categories for s in c.test]
    if not samples:
        from dualkd_edge.errors import UserError

        raise UserError("DATA: no test images found (expected <category>/test/<defect>/*)")
    bar = Progress(len(samples), "eval", "img", enabled=progress)
    pixel = {c.name: metrics.PixelMetrics(0.0, 2.0) for c in categories}
    has_masks = {c.name: any(s.mask_path for s in c.test) for c in categories}
    t_model = 0.0
    for i in range(0, len(samples), batch_size):
        batch: list[tuple[Sample, np.ndarray]] = []
        for s in samples[i:i + batch_size]:
            img = read_image(s.path)
            if img is None:
                log.warning("skipping unreadable image: %s", s.path)
                report.skipped.append(str(s.path))
                continue
            batch.append((s, img))
        bar.update(len(samples[i:i + batch_size]))
        if not batch:
            continue
        t0 = time.perf_counter()
        preds = detector.predict([img for _, img in batch])
        t_model += time.perf_counter() - t0
        for (s, img), p in zip(batch, preds):
            report.records.append(ImageRecord(str(s.path), s.category, s.defect, s.label, p.score,
                                              p.local_score, p.semantic_score, p.is_anomaly, p.score_logit))
            if has_masks[s.category]:
                mask, why = ground_truth(s, p.anomaly_map.shape)
                if mask is None:
                    log.warning("pixel metrics leave out %s: %s", s.path, why)
                    report.pixel_skipped.append(f"{s.path} ({why})")
                    continue
                # Only the part the model saw counts (a crop leaves the border unscored), as
                # Dinomaly crops its masks.
                y0, y1, x0, x1 = scored_box(detector.meta.input, *p.anomaly_map.shape)
                pixel[s.category].update(mask[y0:y1, x0:x1], p.anomaly_map[y0:y1, x0:x1])
    bar.close()
    if not report.records:
        from dualkd_edge.errors import UserError

        raise UserError(f"DATA: none of the {len(samples)} test images could be read (e.g. {report.skipped[0]})")
    report.images_per_second = len(report.records) / t_model if t_model > 0 else 0.0
    for c in categories:
        recs = [r for r in report.records if r.category == c.name]
        row = image_metrics(recs) if recs else {k: None for k in IMAGE_METRICS}
        row["pixel_auroc"] = _safe(pixel[c.name].auroc) if has_masks[c.name] else None
        row["pixel_aupro"] = _safe(pixel[c.name].aupro) if has_masks[c.name] else None
        row["n_images"] = len(recs)
        report.rows[c.name] = row
    return report
