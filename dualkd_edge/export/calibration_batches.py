"""Feeds calibration images, preprocessed as at inference, in fixed-size batches.

Used by TensorRT's INT8 entropy calibrator (older TensorRT); kept free of TensorRT so the
batching can be tested anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualkd_edge.metadata import InputSpec
from dualkd_edge.preprocess import prepare_batch


class CalibrationBatcher:
    def __init__(self, folder: Path, spec: InputSpec, batch_size: int, max_images: int | None = None) -> None:
        from dualkd_edge.calibration_images import load_calibration_images

        self.images = load_calibration_images(folder, max_images)
        self.spec = spec
        self.batch_size = batch_size
        self.index = 0

    def __len__(self) -> int:
        return len(self.images) // self.batch_size  # a short last batch is dropped

    def next_batch(self) -> np.ndarray | None:
        """The next full batch (contiguous, model input layout), or None when exhausted."""
        if self.index + self.batch_size > len(self.images):
            return None
        batch = prepare_batch(self.images[self.index:self.index + self.batch_size], self.spec)
        self.index += self.batch_size
        return np.ascontiguousarray(batch)

    def reset(self) -> None:
        self.index = 0
