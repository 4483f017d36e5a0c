"""Latency statistics of a list of timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class LatencyStats:
    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    batch: int = 1

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return 1000.0 * self.batch / self.p50_ms if self.p50_ms > 0 else 0.0

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else float("nan")

    def to_dict(self) -> dict:
        return asdict(self) | {"throughput_ips": self.throughput, "p99_over_p50": self.tail_ratio}


def latency_stats(samples_ms, batch: int = 1) -> LatencyStats:
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no timings")
    # Percentiles by linear interpolation between order statistics (numpy's default).
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    return LatencyStats(int(x.size), float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0,
                        float(x.min()), float(p50), float(p90), float(p95), float(p99), float(x.max()), batch)
