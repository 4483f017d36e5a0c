"""The drift watch: does the camera still look like its calibration?

Drift is a change in how NORMAL parts look (lamp, focus, lens, camera moved), not a high NG rate: a
batch of bad parts is a healthy camera. So the statistic follows the bulk of the scores, which a
minority of defective parts cannot move far:

1. Each frame's score_logit becomes its rank among the calibration frames (0..1, from the quantiles
   stored with the calibration). On a healthy camera normal frames' ranks are uniform; defective
   frames' ranks are near 1.
2. Per block of `block` frames, the median rank m. Healthy: m is about 0.5 / (1 - share of defective
   frames): 0.5 with none, 0.63 with 1 part in 5, 0.8 only with 3 in 8.
3. A two-sided CUSUM on m (Page's test): S_up += m - k_up, S_down += k_down - m, each floored at 0
   and capped at 2 * limit (so it clears within a few blocks when the camera recovers). The alarm
   fires when either reaches `limit` and clears when both are back at 0.

With the defaults (blocks of 50 frames, k_up 0.8, k_down 0.2, limit 0.5) a lamp that makes every
normal part score above the calibration's (m near 1) fires after 3 blocks (150 frames); m = 0.9
fires after 5 blocks. The false-alarm rate on long normal runs is measured by
benchmarks/line_decisions.py (results in benchmarks/results/line-decisions-cpu-2core.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class DriftSettings:
    block: int = 50  # frames per block
    k_up: float = 0.8  # median rank a block must exceed to count towards an upward drift
    k_down: float = 0.2  # ... stay under, downward
    limit: float = 0.5  # CUSUM level of the alarm


def score_quantiles(score_logits: np.ndarray) -> list[float]:
    """What a calibration stores for the drift watch: its frames' score_logit at 0, 1, ..., 100%."""
    return [float(v) for v in np.quantile(np.asarray(score_logits, np.float64), QUANTILE_LEVELS)]


@dataclass
class DriftState:
    """What the summary, /metrics, the dashboard and MQTT show."""

    watching: bool
    calibration: str
    alarm: bool = False  # fired at some point of this run
    active: bool = False  # firing now
    first_frame: int | None = None
    cleared_frame: int | None = None
    direction: str | None = None  # "up": normal parts score higher than at calibration; "down": lower
    statistic: float = 0.0  # max(S_up, S_down)
    limit: float = DriftSettings.limit
    median_rank: float | None = None  # of the last block
    message: str = ""
    events: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"alarm": self.alarm, "active": self.active, "first_frame": self.first_frame,
                "cleared_frame": self.cleared_frame, "direction": self.direction,
                "statistic": round(self.statistic, 4), "limit": self.limit,
                "median_rank": None if self.median_rank is None else round(self.median_rank, 4),
                "test": "two-sided CUSUM of the block median rank among the calibration frames",
                "watching": self.watching, "calibration": self.calibration, "message": self.message,
                "events": self.events}


class DriftMonitor:
    """One per source. `update` returns a message when the alarm fires or clears, else None."""

    def __init__(self, source: str, calibration: str, quantiles: list[float] | None,
                 settings: DriftSettings = DriftSettings()) -> None:
        self.source = source
        self.settings = settings
        self.quantiles = np.asarray(quantiles, np.float64) if quantiles else None
        self.state = DriftState(watching=self.quantiles is not None, calibration=calibration, limit=settings.limit)
        self._up = self._down = 0.0
        self._ranks: list[float] = []
        self._z: list[tuple[float, float]] = []
        self._logits: list[float] = []

    def rebase(self, calibration: str, quantiles: list[float] | None, frame: int) -> None:
        """A new calibration took over (hot swap): start over against it; the run keeps what fired."""
        st = self.state
        if st.active:
            st.active, st.cleared_frame = False, frame
            st.events.append({"frame": frame, "event": "cleared", "reason": f"calibration '{calibration}' took over"})
        self.quantiles = np.asarray(quantiles, np.float64) if quantiles else None
        st.watching, st.calibration, st.statistic, st.median_rank = self.quantiles is not None, calibration, 0.0, None
        self._up = self._down = 0.0
        self._ranks, self._z, self._logits = [], [], []

    def rank(self, score_logit: float) -> float:
        """Share of the calibration frames that scored below `score_logit` (interpolated)."""
        q = self.quantiles
        if score_logit <= q[0]:
            return 0.0
        if score_logit >= q[-1]:
            return 1.0
        return float(np.interp(score_logit, q, QUANTILE_LEVELS))

    def update(self, frame: int, score_logit: float, branch_z: tuple[float, float]) -> str | None:
        if self.quantiles is None:
            return None
        self._ranks.append(self.rank(score_logit))
        self._z.append(branch_z)
        self._logits.append(score_logit)
        if len(self._ranks) < self.settings.block:
            return None
        return self._close_block(frame)

    def _close_block(self, frame: int) -> str | None:
        s, st = self.settings, self.state
        m = float(np.median(self._ranks))
        cap = 2 * s.limit
        self._up = min(cap, max(0.0, self._up + m - s.k_up))
        self._down = min(cap, max(0.0, self._down + s.k_down - m))
        st.median_rank, st.statistic = m, max(self._up, self._down)
        z_local, z_semantic = np.median(np.asarray(self._z), axis=0)
        median_logit = float(np.median(self._logits))
        self._ranks, self._z, self._logits = [], [], []
        if not st.active and st.statistic >= s.limit:
            st.active = st.alarm = True
            st.direction = "up" if self._up >= self._down else "down"
            st.first_frame = frame if st.first_frame is None else st.first_frame
            how = "higher" if st.direction == "up" else "lower"
            st.message = (f"drift on {self.source}: normal parts no longer look like calibration "
                          f"'{st.calibration}': they score {how} (median score_logit {median_logit:.3g}, "
                          f"{m:.0%} of the way up the calibration frames' scores; local branch "
                          f"{z_local:+.1f} sigma, semantic {z_semantic:+.1f} sigma) as of frame {frame}; check the "
                          "lamp, focus, lens and camera position, then recalibrate (dualkd-edge calibrate)")
            st.events.append({"frame": frame, "event": "alarm", "median_rank": round(m, 4)})
            return st.message
        if st.active and self._up == 0.0 and self._down == 0.0:
            st.active = False
            st.cleared_frame = frame
            st.message = (f"drift on {self.source} cleared at frame {frame}: scores are back to calibration "
                          f"'{st.calibration}' (median rank {m:.0%})")
            st.events.append({"frame": frame, "event": "cleared", "median_rank": round(m, 4)})
            return st.message
        return None


def combined_drift(states: list[DriftState]) -> dict:
    """The run's `drift` entry: an alarm if any source's fired, at the earliest frame any did."""
    firsts = [s.first_frame for s in states if s.first_frame is not None]
    return {"alarm": any(s.alarm for s in states), "active": any(s.active for s in states),
            "first_frame": min(firsts) if firsts else None,
            "sources": [i for i, s in enumerate(states) if s.alarm],
            "watching": any(s.watching for s in states),
            "messages": [s.message for s in states if s.alarm]}
