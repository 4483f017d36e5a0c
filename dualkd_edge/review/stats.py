"""Live numbers from the operators' answers, per source and calibration: confirmed defects, confirmed
false alarms, misses found in the OK sample, and the false-alarm rate the line actually has (measured
by people) next to the budget its calibration was made for."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

OUTCOMES = ("confirmed_defect", "false_alarm", "miss", "confirmed_ok")


def outcome(kept_because: str, label: str) -> str:
    if kept_because == "ng":
        return "confirmed_defect" if label == "defect" else "false_alarm"
    return "miss" if label == "defect" else "confirmed_ok"


@dataclass
class _Key:
    source: str
    calibration: str


class ReviewStats:
    def __init__(self, budgets: dict[str, float | None] | None = None) -> None:
        self.lock = threading.Lock()
        self.frames: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"ng": 0, "ok": 0})
        self.answers: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # key -> item id -> outcome
        self.budgets = budgets or {}

    def observe(self, source: str, calibration: str, is_anomaly: bool) -> None:
        """Every decided frame (the inference thread: counters only)."""
        with self.lock:
            self.frames[(source, calibration)]["ng" if is_anomaly else "ok"] += 1

    def add(self, record: dict | None, answer) -> None:
        """An answer (the last one per item counts)."""
        if record is None:
            return
        key = (record.get("source", "?"), record.get("calibration", "?"))
        with self.lock:
            self.answers[key][answer.id] = outcome(record.get("kept_because", "ng"), answer.label)

    def load(self, store) -> None:
        """The answers already in a review folder (a run that continues one)."""
        for item_id, answer in store.answers().items():
            self.add(store.record(item_id), answer)

    def summary(self) -> list[dict]:
        with self.lock:
            keys = sorted(set(self.frames) | set(self.answers))
            rows = []
            for key in keys:
                counts = {o: 0 for o in OUTCOMES}
                for o in self.answers.get(key, {}).values():
                    counts[o] += 1
                frames = dict(self.frames.get(key, {"ng": 0, "ok": 0}))
                rows.append({"source": key[0], "calibration": key[1], **counts, "frames_ng": frames["ng"],
                             "frames_ok": frames["ok"], "false_alarm_rate": false_alarm_rate(counts, frames),
                             "budget": self.budgets.get(key[1])})
        return rows


def false_alarm_rate(counts: dict[str, int], frames: dict[str, int]) -> float | None:
    """P(NG | good part), from the reviewed shares: good among reviewed NGs x all NGs, over the good
    parts estimated the same way among NGs and the OK sample. None before both were reviewed."""
    reviewed_ng = counts["false_alarm"] + counts["confirmed_defect"]
    reviewed_ok = counts["confirmed_ok"] + counts["miss"]
    if not reviewed_ng or not reviewed_ok:
        return None
    false_alarms = frames["ng"] * counts["false_alarm"] / reviewed_ng
    good = false_alarms + frames["ok"] * counts["confirmed_ok"] / reviewed_ok
    return round(false_alarms / good, 6) if good else None
