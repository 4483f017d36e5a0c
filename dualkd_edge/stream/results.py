"""One scored frame, as every sink receives it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dualkd_edge.detector import Prediction
from dualkd_edge.stream.capture.threads import Frame


@dataclass
class FrameResult:
    frame: Frame
    source_label: str  # the source (camera, stream, folder) the frame came from, safe to print
    source_fps: float | None  # what the source reports, for videos
    prediction: Prediction
    threshold: float
    latency_ms: dict[str, float]  # per stage; output and e2e grow while the sinks write
    live_fps: float | None = None  # frames per second of the pipeline, None before it is known
    painter: object | None = None  # OverlayPainter, when some sink shows pictures
    model_id: str = ""  # what decided (decision/model_id.py)
    calibration: str = ""  # the calibration's name (decision/calibrations.py)
    drift_active: bool = False  # the source's drift alarm is on (decision/drift.py)
    drift_event: str | None = None  # the alarm fired or cleared on this frame: what it said
    _overlay: np.ndarray | None = field(default=None, repr=False)

    def overlay(self) -> np.ndarray:
        """The frame with its heat map, outlines and banner; drawn once, shared by every sink."""
        if self._overlay is None:
            caption = f"{self.live_fps:.1f} FPS" if self.live_fps is not None else ""
            p = self.prediction
            self._overlay = self.painter.draw(self.frame.image, p.anomaly_map, p.score, p.is_anomaly, caption=caption)
        return self._overlay

    def defect_mask(self) -> np.ndarray:
        return self.painter.defect_mask(self.prediction.anomaly_map)

    def record(self) -> dict:
        """The decision as one JSON object (JSONL line, and the line-side sinks' messages)."""
        p, f = self.prediction, self.frame
        return {"source": f.source_name, "source_index": f.source, "frame": f.index,
                "timestamp": round(f.timestamp, 6), "score": round(p.score, 6), "score_logit": round(p.score_logit, 6),
                "local_score": round(p.local_score, 6), "semantic_score": round(p.semantic_score, 6),
                "is_anomaly": p.is_anomaly, "threshold": self.threshold, "model_id": self.model_id,
                "calibration": self.calibration, "drift": self.drift_active,
                "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()}}
