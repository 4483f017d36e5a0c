"""`Detector`: one API over run directories, ONNX files and TensorRT engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dualkd_edge.artifacts import LoadOptions, open_backend
from dualkd_edge.decision.calibrations import ActiveCalibration, select_calibration
from dualkd_edge.metadata import ArtifactMetadata, InputSpec
from dualkd_edge.preprocess import map_to_image, stack_inputs, to_model_view, views_to_input
from dualkd_edge.runtime.base import Backend

log = logging.getLogger("dualkd_edge")


@dataclass
class Prediction:
    score: float  # Noisy-OR probability in [0, 1]
    local_score: float
    semantic_score: float
    is_anomaly: bool
    score_logit: float  # -log(1 - score): same order, no saturation at 1.0; rank by this
    # The map as the model made it, and what `anomaly_map` needs to bring it to the image's size.
    model_map: np.ndarray = field(repr=False)
    image_size: tuple[int, int]  # (height, width)
    input_spec: InputSpec = field(repr=False)
    _anomaly_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def anomaly_map(self) -> np.ndarray:
        """float32, the image's own HxW; where a crop kept part of the image from the model, the smallest
        value of the scored part (preprocess.map_to_image). Made when first asked for: the OK/NG decision
        does not need it, and at 1080p the resize costs more than a small model's post-processing."""
        if self._anomaly_map is None:
            self._anomaly_map = map_to_image(self.model_map, self.input_spec, *self.image_size)
        return self._anomaly_map

    def to_dict(self) -> dict:
        return {"score": self.score, "score_logit": self.score_logit, "local_score": self.local_score,
                "semantic_score": self.semantic_score, "is_anomaly": self.is_anomaly}


@dataclass
class PreparedBatch:
    """Images made into the model's input: `tensor` is padded to a static-batch model's size,
    `count` images are real, `sizes` are their own heights and widths (for the maps)."""

    tensor: np.ndarray
    count: int
    sizes: list[tuple[int, int]]


class Detector:
    """Load any dualkd-edge artifact and predict on BGR uint8 images (as OpenCV reads them), in
    three stages that callers timing them (streams, benchmarks) use one by one:
    prepare (resize, crop, normalise) -> run (the model) -> decide (maps to image size, OK/NG at
    the threshold this Detector owns)."""

    def __init__(self, backend: Backend, threshold: float | None = None, name: str | None = None,
                 calibration: str | None = None) -> None:
        self.backend = backend
        self.name = name or backend.describe()  # the model's path when loaded from one, for messages
        self.threshold_override = None if threshold is None else float(threshold)
        # The calibration that decides (default: the last station calibration, then the training one).
        self.calibration: ActiveCalibration = self.calibration_named(calibration)
        self._model_id: str | None = None

    @classmethod
    def load(cls, path: str | Path, threshold: float | None = None, options: LoadOptions | None = None,
             calibration: str | None = None, **option_fields: object) -> "Detector":
        """`options` (or its fields as keywords: device, providers, threads, cuda_graph, onnx):
        see `artifacts.LoadOptions`; `calibration`: a calibration name stored in the model."""
        backend = open_backend(path, options, **option_fields)
        try:
            return cls(backend, threshold, str(path), calibration)
        except BaseException:
            backend.close()
            raise

    def calibration_named(self, name: str | None) -> ActiveCalibration:
        """A calibration of this model (with `--threshold`, if given, in place of its threshold)."""
        return select_calibration(self.meta, name, self.threshold_override, self.name)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def model_id(self) -> str:
        """What the model computes, hashed (decision/model_id.py); stable across recalibration."""
        if self._model_id is None:
            path = getattr(self.backend, "path", None)
            if path is not None and Path(path).exists():
                from dualkd_edge.decision.model_id import compute_model_id

                self._model_id = compute_model_id(path)
            else:  # a remote model (Triton): its files are on the server
                self._model_id = "unknown"
        return self._model_id

    @property
    def meta(self) -> ArtifactMetadata:
        return self.backend.meta

    def prepare(self, images: Sequence[np.ndarray]) -> PreparedBatch:
        return self.prepare_views([to_model_view(img, self.meta.input) for img in images],
                                  [img.shape[:2] for img in images])

    def prepare_views(self, views: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> PreparedBatch:
        """`prepare` for images already made into what the model sees (preprocess.to_model_view);
        `sizes`: the images' own heights and widths."""
        return self._prepared(views_to_input(views, self.meta.input), sizes)

    def prepare_inputs(self, inputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> PreparedBatch:
        """`prepare` for images already made into their model input (preprocess.model_input, on a
        stream's capture thread: resizing and normalising a frame no longer waits on inference)."""
        return self._prepared(stack_inputs(inputs), sizes)

    def _prepared(self, tensor: np.ndarray, sizes: Sequence[tuple[int, int]]) -> PreparedBatch:
        return PreparedBatch(self.backend.pad_to_fixed_batch(tensor), len(sizes), list(sizes))

    def run(self, batch: PreparedBatch) -> dict[str, np.ndarray]:
        """Model outputs at model resolution for the batch's real images."""
        return {k: v[:batch.count] for k, v in self.backend.infer(batch.tensor).items()}

    def decide(self, outputs: dict[str, np.ndarray], sizes: Sequence[tuple[int, int]],
               calibrations: Sequence[ActiveCalibration] | None = None) -> list[Prediction]:
        """Predictions at the images' own sizes; `calibrations`: one per image (streams whose sources
        have calibrations of their own), else this Detector's."""
        calibrations = list(calibrations) if calibrations is not None else [self.calibration] * len(sizes)
        rescored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        preds = []
        for i, (h, w) in enumerate(sizes):
            chosen = calibrations[i]
            if chosen.name not in rescored:
                rescored[chosen.name] = chosen.scores(outputs)
            score, logit = (float(v[i]) for v in rescored[chosen.name])
            preds.append(Prediction(
                score=score,
                local_score=float(outputs["local_score"][i]),
                semantic_score=float(outputs["semantic_score"][i]),
                is_anomaly=bool(score >= chosen.threshold),
                score_logit=logit,
                model_map=outputs["anomaly_map"][i, 0].copy(),  # a backend may reuse its output buffers
                image_size=(h, w),
                input_spec=self.meta.input,
            ))
        return preds

    def _chunks(self, images: Sequence[np.ndarray], batch_size: int | None):
        step = batch_size or self.backend.max_batch or len(images) or 1
        if self.backend.max_batch:
            step = min(step, self.backend.max_batch)
        for i in range(0, len(images), step):
            yield self.prepare(images[i:i + step])

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int | None = None) -> list[Prediction]:
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            images = [images]
        return [p for batch in self._chunks(list(images), batch_size)
                for p in self.decide(self.run(batch), batch.sizes)]

    def infer_raw(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Model outputs at model resolution for a list of images, batched as the model allows."""
        chunks = [self.run(batch) for batch in self._chunks(list(images), batch_size)]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
