"""What a stream run reports: frames, anomalies, per-source counts and per-stage latency."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dualkd_edge.bench.stats import latency_stats
from dualkd_edge.stream.capture.threads import SourceStats
from dualkd_edge.console.tables import text_table
from dualkd_edge.stream.capture.queues import DROP_CAUSES

# output: drawing and writing overlays and records (sinks); e2e also holds the queue wait.
STAGES = ("decode_ms", "resize_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "output_ms", "e2e_ms")


RECENT_LATENCIES = 20_000  # per stage: the window behind p50 / p99 (a line runs for days; memory stays flat)


class StageLatencies:
    """One stage's per-frame times: count, mean and max over the whole run, percentiles over the last
    RECENT_LATENCIES frames (a list of every frame grew by ~400 MB a day at 25 FPS)."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        self.recent.append(ms)
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)

    def stats(self) -> dict[str, float]:
        """mean / p50 / p99 / max (the bench's statistics, in the summary's keys)."""
        if not self.count:
            return {}
        s = latency_stats(list(self.recent))
        return {"mean": self.total / self.count, "p50": s.p50_ms, "p99": s.p99_ms, "max": self.max}


@dataclass
class StreamSummary:
    frames: int
    anomalies: int
    seconds: float
    sources: list[SourceStats]
    stages: dict[str, dict[str, float]]
    interrupted: bool
    outputs: list[str]
    batch_sizes: dict[int, int] = field(default_factory=dict)  # inference calls per number of frames
    batch_timeouts: int = 0  # batches cut short by --batch-timeout-ms
    deliveries: list = field(default_factory=list)  # DeliveryStats of the line-side sinks
    output_errors: list[str] = field(default_factory=list)  # outputs that failed and stopped the run
    run_id: str = ""  # also on every JSONL line of this run
    drift: list = field(default_factory=list)  # decision.drift.DriftState per source
    swaps: list[dict] = field(default_factory=list)  # models taken over while running (hot swap)
    refused_swaps: list[str] = field(default_factory=list)  # replacements that could not be loaded or checked
    decided_by: dict = field(default_factory=dict)  # model_id, calibration and threshold per source (at the end)
    file_outputs: dict = field(default_factory=dict)  # the file-output thread: its time per frame, waits

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> list[str]:
        return [e for s in self.sources for e in s.errors]

    def drift_entry(self) -> dict:
        """One source: its drift state; several: an alarm if any fired, the earliest first frame."""
        from dualkd_edge.decision.drift import combined_drift

        if len(self.drift) == 1:
            return self.drift[0].to_dict()
        return combined_drift(self.drift) if self.drift else {"alarm": False, "first_frame": None, "watching": False}

    def to_dict(self) -> dict:
        d = {
            "run_id": self.run_id, "frames": self.frames, "anomalies": self.anomalies, "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3), "interrupted": self.interrupted, "errors": self.errors,
            "dropped": sum(s.dropped for s in self.sources),
            "dropped_by_cause": {cause: sum(s.dropped_by_cause.get(cause, 0) for s in self.sources)
                                 for cause in DROP_CAUSES},
            "corrupted": sum(s.corrupted for s in self.sources),
            "skipped_files": sum(s.skipped_files for s in self.sources),
            "reconnects": sum(s.reconnects for s in self.sources),
            "sources": [vars(s) for s in self.sources], "latency_ms": self.stages, "outputs": self.outputs,
            "batches": {"sizes": {str(k): v for k, v in self.batch_sizes.items()}, "timed_out": self.batch_timeouts},
            "deliveries": [d.to_dict() for d in self.deliveries],
            "output_errors": self.output_errors,
            "drift": self.drift_entry(),
            "model_id": self.decided_by.get("model_id"),
            "calibrations": self.decided_by.get("calibrations", []),
            "thresholds": self.decided_by.get("thresholds", []),
            "swaps": self.swaps, "refused_swaps": self.refused_swaps,
            "file_outputs": self.file_outputs,
        }
        for source, state in zip(d["sources"], self.drift):
            source["drift"] = state.to_dict()
        return d

    def decision_lines(self, d: dict) -> list[str]:
        """Which model and calibration decided, and whether the cameras still look like it."""
        lines = []
        if d["model_id"]:
            cals = sorted(set(zip(d["calibrations"], d["thresholds"])))
            lines.append(f"decided by model_id {d['model_id']}, calibration "
                         + ", ".join(f"'{name}' (threshold {t:.4g})" for name, t in cals)
                         + (f"; {len(self.swaps)} model swap(s) while running" if self.swaps else ""))
        for message in self.refused_swaps:
            lines.append(f"refused: {message}")
        for state in self.drift:
            if state.alarm:
                lines.append(f"DRIFT: {state.message}" if state.active else
                             f"drift alarm from frame {state.first_frame}, cleared at frame {state.cleared_frame}")
        if self.drift and not any(s.watching for s in self.drift):
            lines.append("drift: not watched: the calibration has no score statistics (made before dualkd-edge "
                         "stored them); `dualkd-edge calibrate MODEL SOURCE` on this camera makes one")
        elif self.drift and not any(s.alarm for s in self.drift):
            lines.append("drift: none (the scores look like the calibration's)")
        return lines

    def format(self) -> str:
        d = self.to_dict()
        causes = ", ".join(f"{cause} {n}" for cause, n in d["dropped_by_cause"].items() if n)
        lines = [f"frames {d['frames']}  anomalies {d['anomalies']}  dropped {d['dropped']}"
                 + (f" ({causes})" if causes else "") + "  "
                 f"corrupted {d['corrupted']}  skipped files {d['skipped_files']}  reconnects {d['reconnects']}  "
                 f"errors {len(d['errors'])}  {d['fps']:.1f} FPS over {d['seconds']:.1f} s"
                 + ("  (interrupted)" if d["interrupted"] else "")]
        if any(size > 1 for size in self.batch_sizes):
            sizes = ", ".join(f"{n} x {size}" for size, n in sorted(self.batch_sizes.items(), reverse=True))
            lines.append(f"inference calls: {sum(self.batch_sizes.values())} ({sizes} frames), "
                         f"{self.batch_timeouts} sent at the batch time-out")
        rows = [[stage.replace("_ms", ""), s.get("mean"), s.get("p50"), s.get("p99"), s.get("max")]
                for stage, s in d["latency_ms"].items() if s]
        if rows:
            lines.append(text_table(["stage (ms)", "mean", "p50", "p99", "max"], rows))
        if self.file_outputs.get("pipeline_waits"):
            f = self.file_outputs
            lines.append(f"file outputs ({', '.join(f['sinks'])}) were behind {f['pipeline_waits']} time(s): the pipeline "
                         f"waited {f['pipeline_wait_ms']:.0f} ms for them in all (no frame was dropped for them)")
        lines += self.decision_lines(d)
        lines += [d.format() for d in self.deliveries]
        lines += [f"error: {e}" for e in d["errors"]]
        return "\n".join(lines)
