"""`Detector`: one API over run directories, ONNX files and TensorRT engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import ArtifactMetadata
from dualkd_edge.preprocess import ensure_bgr, map_to_image, prepare_batch
from dualkd_edge.runtime.base import Backend

log = logging.getLogger("dualkd_edge")

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class Prediction:
    score: float  # Noisy-OR probability in [0, 1]
    local_score: float
    semantic_score: float
    is_anomaly: bool
    # float32, the image's own HxW; where a crop kept part of the image from the model, the smallest
    # value of the scored part (preprocess.map_to_image)
    anomaly_map: np.ndarray
    score_logit: float  # -log(1 - score): same order, no saturation at 1.0; rank by this

    def to_dict(self) -> dict:
        return {"score": self.score, "score_logit": self.score_logit, "local_score": self.local_score,
                "semantic_score": self.semantic_score, "is_anomaly": self.is_anomaly}


def open_backend(path: str | Path, device: str = "auto", providers: Sequence[str] | None = None,
                 threads: int | None = None, cuda_graph: bool = False, onnx: Path | None = None) -> Backend:
    """Pick the backend by what `path` is: run directory, .onnx file or TensorRT engine.
    `providers`/`threads` are for ONNX files; `cuda_graph` and `onnx` (the file an engine built with
    trtexec came from) for engines."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"MODEL: not found: {path}")
    suffix = path.suffix.lower()
    if cuda_graph and suffix not in ENGINE_SUFFIXES:
        raise UserError(f"--cuda-graph: replays TensorRT engines only; {path} is not one")
    if onnx is not None and suffix not in ENGINE_SUFFIXES:
        raise UserError(f"--onnx: names the source of a TensorRT engine; {path} is not an engine")
    if path.is_dir():
        from dualkd_edge.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device=device)
    if suffix == ".onnx":
        from dualkd_edge.runtime.onnx_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers=providers, threads=threads)
    if suffix in ENGINE_SUFFIXES:
        from dualkd_edge.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, cuda_graph=cuda_graph, onnx=onnx)
    raise UserError(f"MODEL: {path} is not a run directory, .onnx file or TensorRT engine "
                    f"({', '.join(ENGINE_SUFFIXES)})")


class Detector:
    """Load any dualkd-edge artifact and predict on BGR uint8 images (as OpenCV reads them)."""

    def __init__(self, backend: Backend, threshold: float | None = None, name: str | None = None) -> None:
        self.backend = backend
        self.threshold = backend.meta.threshold if threshold is None else float(threshold)
        self.name = name or backend.describe()  # the model's path when loaded from one, for messages

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", providers: Sequence[str] | None = None,
             threshold: float | None = None, **options: object) -> "Detector":
        """`options`: threads (ONNX Runtime), cuda_graph and onnx (engines); see `open_backend`."""
        return cls(open_backend(path, device=device, providers=providers, **options),  # type: ignore[arg-type]
                   threshold, str(path))

    @property
    def meta(self) -> ArtifactMetadata:
        return self.backend.meta

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int | None = None) -> list[Prediction]:
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            images = [images]
        images = [ensure_bgr(img) for img in images]
        outputs = self.infer_raw(images, batch_size)
        return self.postprocess(outputs, [img.shape[:2] for img in images])

    def infer_raw(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Model outputs at model resolution for a list of BGR images, batched as the model allows."""
        step = batch_size or self.backend.max_batch or len(images) or 1
        if self.backend.max_batch:
            step = min(step, self.backend.max_batch)
        chunks = []
        for i in range(0, len(images), step):
            part = list(images[i:i + step])
            n = len(part)
            out = self.backend.infer(self.backend.pad_to_fixed_batch(prepare_batch(part, self.meta.input)))
            chunks.append({k: v[:n] for k, v in out.items()})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}

    def postprocess(self, outputs: dict[str, np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        preds = []
        for i, (h, w) in enumerate(sizes):
            score = float(outputs["score"][i])
            preds.append(Prediction(
                score=score,
                local_score=float(outputs["local_score"][i]),
                semantic_score=float(outputs["semantic_score"][i]),
                is_anomaly=bool(score >= self.threshold),
                anomaly_map=map_to_image(outputs["anomaly_map"][i, 0], self.meta.input, h, w),
                score_logit=float(outputs["score_logit"][i]),
            ))
        return preds

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
