"""Model-only timing: several models timed side by side in alternating rounds.

A shared machine's speed drifts: on the 2-core VM we develop on, throughput flips between two
levels (about 1.6x apart) in phases of 5-25 s. Timing model A for a while and then model B would
compare them under different machines. Rounds of a fraction of a second each, taken in turn, give
every model the same mix of phases, so the ratios between them stay honest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dualkd_edge.bench.stats import LatencyStats, latency_stats
from dualkd_edge.runtime.base import Backend

MIN_ROUND_S = 0.3  # a round is this long at least ...
ROUND_RUNS = 4  # ... and holds this many timed runs at least (slow models get longer rounds)
# Pause between two contenders' rounds: the previous one's thread pools spin-wait after their last
# call (OpenBLAS for ~0.1 s, OpenMP and ONNX Runtime less) and would slow the next one's first runs.
SETTLE_S = 0.15


@dataclass
class Contender:
    """One thing timed in the rounds: a call, and the samples it collects."""

    call: Callable[[], object]
    batch: int = 1
    stage_timings: Callable[[], dict[str, float]] | None = None
    totals_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    round_p50_ms: list[float] = field(default_factory=list)  # one per round, for paired ratios
    round_s: float = MIN_ROUND_S
    required_runs: int | None = None  # set: this many runs, whatever --iters/--min-time say

    def timed_call(self) -> None:
        t0 = time.perf_counter()
        self.call()
        self.totals_ms.append((time.perf_counter() - t0) * 1e3)
        for key, value in (self.stage_timings() if self.stage_timings else {}).items():
            if key != "total_ms":
                self.stages_ms.setdefault(key, []).append(value)

    def satisfied(self, iters: int | None, min_time: float | None) -> bool:
        if self.required_runs is not None:
            return len(self.totals_ms) >= self.required_runs
        return ((iters is None or len(self.totals_ms) >= iters)
                and (min_time is None or sum(self.totals_ms) / 1e3 >= min_time))

    def stats(self) -> tuple[LatencyStats, dict[str, LatencyStats]]:
        return (latency_stats(self.totals_ms, self.batch),
                {k: latency_stats(v, self.batch) for k, v in self.stages_ms.items()})


def random_input(backend: Backend, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = backend.expected_shape(batch)
    if backend.meta.input.dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def backend_contender(backend: Backend, batch: int = 1) -> Contender:
    """`backend.infer` on a fixed random batch, with the backend's own stage split (TensorRT:
    host-to-device, compute, device-to-host)."""
    x = random_input(backend, batch)
    return Contender(lambda: backend.infer(x), batch, backend.stage_timings)


def time_side_by_side(contenders: list[Contender], warmup: int = 10, iters: int | None = 50,
                      min_time: float | None = None) -> None:
    """Warm each contender up, then time them in turn, round after round, until every one has
    `iters` runs and `min_time` seconds of timed runs. With several contenders the first run of each
    round is not counted (it pays for the caches the others evicted, which a model running alone on a
    line camera does not), and a short pause before each round lets the others' threads go idle."""
    for c in contenders:
        if c.totals_ms:  # timed before (another batch size's rounds): already warm and sized
            continue
        warm = []
        for _ in range(max(warmup, 1)):  # one run at least, to size the rounds
            t0 = time.perf_counter()
            c.call()
            warm.append(time.perf_counter() - t0)
        c.round_s = max(MIN_ROUND_S, ROUND_RUNS * float(np.median(warm)))

    def all_done() -> bool:
        return all(c.satisfied(iters, min_time) for c in contenders)

    while not all_done():
        for c in contenders:
            if len(contenders) > 1:
                time.sleep(SETTLE_S)
                c.call()
            first, start = len(c.totals_ms), time.perf_counter()
            while True:
                c.timed_call()
                if time.perf_counter() - start >= c.round_s or all_done():
                    break
            c.round_p50_ms.append(float(np.median(c.totals_ms[first:])))


def paired_speedup(base_round_p50_ms: list[float], round_p50_ms: list[float]) -> float:
    """How many times faster than the base, as the median over rounds of the per-round latency
    ratio: each ratio compares two models a second apart, so the machine's drift cancels out."""
    n = min(len(base_round_p50_ms), len(round_p50_ms))
    if n == 0:
        raise ValueError("no rounds in common")
    return float(np.median(np.asarray(base_round_p50_ms[:n]) / np.asarray(round_p50_ms[:n])))


def time_backend(backend: Backend, batch: int = 1, warmup: int = 10, iters: int | None = 50,
                 min_time: float | None = None) -> tuple[LatencyStats, dict[str, LatencyStats]]:
    """Latency of one backend alone (see `time_side_by_side` to compare several)."""
    contender = backend_contender(backend, batch)
    time_side_by_side([contender], warmup, iters, min_time)
    return contender.stats()


def speedup(base_row: dict, row: dict) -> float:
    """Paired over the timing rounds where both rows have them (bench/timing.py), else p50 ratio."""
    if base_row.get("round_p50_ms") and row.get("round_p50_ms"):
        return paired_speedup(base_row["round_p50_ms"], row["round_p50_ms"])
    return base_row["latency_ms"]["p50_ms"] / row["latency_ms"]["p50_ms"]
