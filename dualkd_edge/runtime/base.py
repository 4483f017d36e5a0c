"""The backend interface every runtime implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from dualkd_edge.metadata import ArtifactMetadata

OUTPUT_NAMES = ("score", "local_score", "semantic_score", "anomaly_map")


class Backend(ABC):
    """Loads one model file; `infer` maps an input batch to the four named outputs."""

    name: str = "backend"
    meta: ArtifactMetadata
    # Largest batch the model accepts (None: any); Detector splits bigger batches.
    max_batch: int | None = None
    # Smallest fixed batch (engines with a static batch need exactly this many images).
    fixed_batch: int | None = None

    def __init__(self) -> None:
        self.last_timings: dict[str, float] = {}

    @abstractmethod
    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a prepared batch."""

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # Backends that can split host-to-device / compute / device-to-host add those keys in _run.
        self.last_timings = {}
        t0 = time.perf_counter()
        out = self._run(batch)
        self.last_timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def describe(self) -> str:
        return self.name

    def warmup(self, iterations: int = 3, batch_size: int = 1) -> None:
        spec = self.meta.input
        if spec.dtype == "uint8":
            x = np.zeros((batch_size, spec.height, spec.width, 3), np.uint8)
        else:
            x = np.zeros((batch_size, 3, spec.height, spec.width), np.float32)
        for _ in range(iterations):
            self.infer(x)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
