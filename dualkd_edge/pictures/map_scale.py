"""The calibrated scale of anomaly maps: what normal parts show, measured once, used by every picture.

At calibration `MapHistogram` collects the anomaly-map values of all pixels of the held-out normal
images (a fixed-range histogram, so memory does not grow with the data) and summarises them as a
`MapCalibration` (median, 99.9th percentile, maximum) stored in the artifact's metadata.
`HeatScale` turns those numbers into positions on the colour bar: the same map value gets the same
colour on every image, normal parts stay in the cool part of the bar and the red end means
"well beyond anything normal parts show". Torch-free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dualkd_edge.metadata import ArtifactMetadata, MapCalibration

log = logging.getLogger("dualkd_edge")

# Token-wise cosine distances (and their blurred, resized maps) lie in [0, 2].
MAP_RANGE = (0.0, 2.0)
HIGH_QUANTILE = 0.999

# Layout of the colour bar (0 = cool end, 1 = red end of JET). The median of normal pixels is the
# cool end; their 99.9th percentile sits at SPREAD_POSITION (cyan), so the bar ends 2.5 normal
# spreads above the median; their maximum sits at most at MAX_POSITION (green-yellow), so nothing
# a normal part showed reaches orange or red.
SPREAD_POSITION = 0.4
MAX_POSITION = 0.6
# The red end of JET: positions from here on are painted red to dark red.
RED_FROM = 0.875


class MapHistogram:
    """Streaming distribution of anomaly-map values (2**16 bins over [0, 2]: a bin is 3e-5 wide)."""

    def __init__(self, bins: int = 2**16) -> None:
        self.lo, self.hi = MAP_RANGE
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.max = -np.inf

    def add(self, maps: np.ndarray) -> None:
        values = np.asarray(maps, dtype=np.float64).ravel()
        if values.size == 0:
            return
        if not np.all(np.isfinite(values)):
            raise ValueError("anomaly map contains NaN or infinity")
        idx = ((values - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64)
        self.counts += np.bincount(np.clip(idx, 0, self.bins - 1), minlength=self.bins)
        self.max = max(self.max, float(values.max()))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """Value below which a share q of the pixels lie, interpolated inside its bin."""
        if self.n == 0:
            raise ValueError("no anomaly-map values collected")
        cum = np.cumsum(self.counts)
        target = q * self.n
        b = int(np.searchsorted(cum, target, side="left"))
        below = cum[b - 1] if b > 0 else 0
        frac = (target - below) / self.counts[b] if self.counts[b] else 0.0
        width = (self.hi - self.lo) / self.bins
        return float(min(self.lo + (b + frac) * width, self.max))

    def summary(self, high_quantile: float = HIGH_QUANTILE) -> MapCalibration:
        return MapCalibration(median=self.quantile(0.5), high=self.quantile(high_quantile),
                              high_quantile=high_quantile, max=float(self.max), n_pixels=self.n)


@dataclass(frozen=True)
class HeatScale:
    """Map values -> positions on the colour bar (0 cool .. 1 red).

    Calibrated: fixed from the normal parts' statistics, with `limit` the largest value any
    held-out normal pixel had: outlines and masks mark what lies beyond it. Uncalibrated (old artifacts): each map is stretched from its
    own minimum to its maximum, colours are not comparable between images and there is no limit.
    """

    low: float | None
    limit: float | None
    high: float | None

    @property
    def calibrated(self) -> bool:
        return self.limit is not None

    @classmethod
    def from_calibration(cls, cal: MapCalibration) -> "HeatScale":
        spread = max(cal.high - cal.median, 1e-6)
        limit = max(cal.max, cal.high)
        high = cal.median + max(spread / SPREAD_POSITION, (limit - cal.median) / MAX_POSITION)
        return cls(low=cal.median, limit=limit, high=high)

    @property
    def limit_position(self) -> float | None:
        """Where the outline level sits on the bar."""
        if self.limit is None:
            return None
        return float(self.positions(np.float32(self.limit)))

    @classmethod
    def per_image(cls) -> "HeatScale":
        return cls(None, None, None)

    def bounds(self, amap: np.ndarray) -> tuple[float, float]:
        """Map values at the cool and the red end of the bar (a width of at least 1e-6)."""
        if self.low is None or self.high is None:
            lo, hi = float(np.min(amap)), float(np.max(amap))
        else:
            lo, hi = self.low, self.high
        return lo, max(hi, lo + 1e-6)

    def positions(self, amap: np.ndarray) -> np.ndarray:
        amap = np.asarray(amap, dtype=np.float32)
        lo, hi = self.bounds(amap)
        return np.clip((amap - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)

    def beyond_normal(self, amap: np.ndarray) -> np.ndarray:
        """Boolean mask of the pixels above the normal range; all False when uncalibrated."""
        if self.limit is None:
            return np.zeros(np.shape(amap), bool)
        return np.asarray(amap) > self.limit


_warned_uncalibrated: set[str] = set()


def heat_scale_for(meta: ArtifactMetadata, source: str) -> HeatScale:
    """The model's calibrated scale, or the per-image stretch (warned once per model) for
    artifacts made before the anomaly-map statistics were recorded."""
    cal = meta.calibration.anomaly_map
    if cal is not None:
        return HeatScale.from_calibration(cal)
    if source not in _warned_uncalibrated:
        _warned_uncalibrated.add(source)
        log.warning("%s has no anomaly-map statistics (made before dualkd-edge recorded them): heat maps are "
                    "stretched per image, so their colours cannot be compared between images and no defect "
                    "outlines are drawn; retrain it with this version to get the calibrated scale", source)
    return HeatScale.per_image()
