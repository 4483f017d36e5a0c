"""Calibration images, preprocessed exactly as at inference, in fixed-size batches.

One feeder for both INT8 calibrators: ONNX Runtime's quantizer reads it through the
CalibrationDataReader protocol (`get_next` / `rewind`), TensorRT's entropy calibrator through
`next_batch` / `reset`. Batches are made on demand, so large calibration sets at 392 px are never
all held as float tensors. Free of TensorRT, so the batching is tested anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dualkd_edge.metadata import InputSpec
from dualkd_edge.preprocess import prepare_batch


class CalibrationBatches:
    def __init__(self, images: Sequence[np.ndarray], spec: InputSpec, batch_size: int,
                 input_name: str = "images") -> None:
        self.images = list(images)
        self.spec = spec
        self.batch_size = batch_size
        self.input_name = input_name
        self.index = 0

    @classmethod
    def from_folder(cls, folder: Path, spec: InputSpec, batch_size: int, max_images: int | None = None,
                    input_name: str = "images") -> "CalibrationBatches":
        from dualkd_edge.compile.int8.calibration_images import load_calibration_images

        return cls(load_calibration_images(folder, max_images), spec, batch_size, input_name)

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

    # ONNX Runtime's CalibrationDataReader protocol
    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = self.next_batch()
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self.reset()
