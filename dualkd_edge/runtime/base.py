"""The backend interface every runtime implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import ArtifactMetadata


class Backend(ABC):
    """Loads one model file; `infer` maps an input batch to the named outputs (all of
    artifacts.contract.OUTPUT_NAMES)."""

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

    def expected_shape(self, batch_size: int) -> tuple[int, ...]:
        spec = self.meta.input
        if spec.dtype == "uint8":
            return (batch_size, spec.height, spec.width, 3)
        return (batch_size, 3, spec.height, spec.width)

    def check_batch(self, batch: np.ndarray) -> None:
        """A wrong size or type would otherwise surface as a cryptic runtime error deep inside."""
        want_dtype = np.uint8 if self.meta.input.dtype == "uint8" else np.float32
        expected = self.expected_shape(batch.shape[0] if batch.ndim else 0)
        if batch.dtype != want_dtype or batch.shape != expected:
            raise UserError(f"input batch {batch.dtype} {tuple(batch.shape)} does not fit the model: "
                            f"expected {np.dtype(want_dtype).name} {expected} (use Detector.predict to resize)")
        if self.max_batch and batch.shape[0] > self.max_batch:
            raise UserError(f"batch of {batch.shape[0]} exceeds the model's batch size {self.max_batch}")

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.check_batch(batch)
        # Backends that can split host-to-device / compute / device-to-host add those keys in _run.
        self.last_timings = {}
        t0 = time.perf_counter()
        out = self._run(batch)
        if "score_logit" not in out:
            from dualkd_edge.scoring import noisy_or_logit

            out["score_logit"] = noisy_or_logit(out["local_score"], out["semantic_score"],
                                                self.meta.calibration).astype(np.float32)
        self.last_timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def stage_timings(self) -> dict[str, float]:
        """The last call's stages (`bench` reads them between timed calls; a remote backend may ask
        its server here, outside the timed call)."""
        return self.last_timings

    def describe(self) -> str:
        return self.name

    def pad_to_fixed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Static-batch models need exactly `fixed_batch` inputs: repeat the last one (its results
        are dropped by the caller)."""
        missing = (self.fixed_batch or 0) - batch.shape[0]
        return np.concatenate([batch, np.repeat(batch[-1:], missing, axis=0)]) if missing > 0 else batch

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
