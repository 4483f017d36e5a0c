"""`infer --review DIR`: every NG frame, and a random sample of OK frames (to find misses), kept for
review with its decision record and heat map, written by a worker thread (never the inference one)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from dualkd_edge.review.stats import ReviewStats
from dualkd_edge.review.store import ReviewStore
from dualkd_edge.stream.outputs.delivery import QueuedSink
from dualkd_edge.stream.results import FrameResult


class ReviewSink(QueuedSink):
    option = "--review"
    shows_pictures = True  # the overlay painter is needed for the heat-map picture

    def __init__(self, folder: Path, run_id: str, detector, ok_rate: float = 0.02, defect_types: list[str] = (),
                 seed: int | None = None, queue_size: int = 64) -> None:
        super().__init__("review", str(folder), queue_size=queue_size)
        self.store = ReviewStore(folder)
        self.store.open_for(detector.model_id, input_contract(detector.meta), list(defect_types))
        budgets = {c.name: c.max_fpr for c in detector.meta.calibrations}
        self.stats = ReviewStats(budgets)
        self.stats.load(self.store)
        self.run_id = run_id
        self.ok_rate = ok_rate
        self.random = random.Random(seed)
        self.start()

    def write(self, result: FrameResult) -> None:
        self.stats.observe(result.source_label, result.calibration, result.prediction.is_anomaly)
        super().write(result)

    def selects(self, result: FrameResult) -> bool:
        return result.prediction.is_anomaly or self.random.random() < self.ok_rate

    def make_record(self, result: FrameResult) -> dict:
        record = {"id": f"{self.run_id}-{result.frame.source}-{result.frame.index}", "run_id": self.run_id,
                  "kept_because": "ng" if result.prediction.is_anomaly else "ok-sample", "time": time.time(),
                  **result.record()}
        return {"record": record, "result": result}

    def deliver(self, item: dict) -> bool:
        from dualkd_edge.stream.dashboard.server import encode_jpeg

        result: FrameResult = item["result"]
        self.store.add(item["record"], encode_jpeg(result.frame.image, 1280, 90), encode_jpeg(result.overlay(), 1280, 85))
        return True


def input_contract(meta) -> dict:
    """What a review folder's frames can be fed to: the model's input geometry and type."""
    spec = meta.input
    return {"height": spec.height, "width": spec.width, "dtype": spec.dtype, "resize": spec.resize, "crop": spec.crop}
