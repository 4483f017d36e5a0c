"""Model-only timing of any backend: warm-up, then iterations or a minimum time."""

from __future__ import annotations

import time

import numpy as np

from dualkd_edge.bench.stats import LatencyStats, latency_stats
from dualkd_edge.runtime.base import Backend


def random_input(backend: Backend, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = backend.expected_shape(batch)
    if backend.meta.input.dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def time_backend(backend: Backend, batch: int = 1, warmup: int = 10, iters: int | None = 50,
                 min_time: float | None = None) -> tuple[LatencyStats, dict[str, LatencyStats]]:
    """Latency of `backend.infer` on a fixed random batch; plus per-stage stats where the backend
    reports stages (host-to-device, compute, device-to-host)."""
    x = random_input(backend, batch)
    for _ in range(warmup):
        backend.infer(x)
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        backend.infer(x)
        totals.append((time.perf_counter() - t0) * 1e3)
        for key, value in backend.last_timings.items():
            if key != "total_ms":
                stages.setdefault(key, []).append(value)
        elapsed = time.perf_counter() - t_start
        if (iters is None or len(totals) >= iters) and (min_time is None or elapsed >= min_time):
            break
    return latency_stats(totals, batch), {k: latency_stats(v, batch) for k, v in stages.items()}
