"""What the dashboard knows while a run goes on: per-source counters, recent latencies, per-stage
histograms, the newest result of each source and the last NG results, and their rendering as the
JSON summary and as Prometheus' text format (prometheus_client: the stage histograms are its
Histogram; the rest is read at scrape time by a collector). `observe` runs in the inference thread
for every frame and only updates counters (O(1)); everything else happens when someone asks."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.summary import STAGES

# Histogram bounds in seconds (Prometheus' base unit): 1 ms ... 5 s.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECENT = 300  # frames per source behind p50/p99 on the page
FPS_WINDOW = 60


@dataclass
class SourceLive:
    index: int
    name: str
    frames: int = 0
    ng: int = 0
    latest: FrameResult | None = None
    latest_ng: FrameResult | None = None
    seen_at: float = 0.0  # monotonic time of the last frame
    drift: bool = False  # the drift alarm is on (decision/drift.py)
    drift_message: str = ""  # what it said last (fired or cleared)
    e2e_ms: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    times: deque = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))
    stages: dict = field(default_factory=dict)  # stage -> its prometheus_client histogram child

    @property
    def fps(self) -> float | None:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return None
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class LiveMetrics:
    def __init__(self, keep_ng: int = 8) -> None:
        self.lock = threading.Lock()
        self.scrape_lock = threading.Lock()  # one scrape at a time: `scrape` is that scrape's input
        self.sources: dict[int, SourceLive] = {}
        self.ng: deque[tuple[int, FrameResult]] = deque(maxlen=keep_ng)
        self.results = 0  # id of the newest result (counts every frame of the run)
        self.started = time.time()
        # One registry per run: the stage histograms live in it, the rest is read when scraped.
        self.registry = CollectorRegistry(auto_describe=True)
        self.stage_latency = Histogram(
            "dualkd_stage_latency_seconds",
            "Per-frame time of each pipeline stage (decode, preprocess, inference, postprocess, output, e2e).",
            ["source", "stage"], buckets=BUCKETS_S, registry=self.registry)
        self.scrape: tuple[list, list, float] = ([], [], 0.0)  # (source stats, deliveries, threshold) of this scrape
        self.registry.register(_ScrapeTimeCollector(self))

    def observe(self, result: FrameResult) -> None:
        now = time.monotonic()
        with self.lock:
            src = self.sources.get(result.frame.source)
            if src is None:
                src = self.sources[result.frame.source] = SourceLive(result.frame.source, result.source_label)
                src.stages = {s.removesuffix("_ms"): self.stage_latency.labels(src.name, s.removesuffix("_ms"))
                              for s in STAGES}
            self.results += 1
            src.frames += 1
            src.ng += int(result.prediction.is_anomaly)
            src.latest, src.seen_at = result, now
            src.drift = result.drift_active
            if result.drift_event is not None:
                src.drift_message = result.drift_event
            src.times.append(now)
            src.e2e_ms.append(result.latency_ms.get("e2e_ms", 0.0))
            for stage, ms in result.latency_ms.items():
                src.stages[stage.removesuffix("_ms")].observe(ms / 1000)
            if result.prediction.is_anomaly:
                src.latest_ng = result
                self.ng.append((self.results, result))

    def latest(self, source: int) -> tuple[int, FrameResult | None]:
        """(a number that changes with every new frame of the source, its newest result)."""
        with self.lock:
            src = self.sources.get(source)
            return (src.frames, src.latest) if src else (0, None)

    def ng_result(self, result_id: int) -> FrameResult | None:
        with self.lock:
            return next((r for i, r in self.ng if i == result_id), None)

    def last_frame_age(self) -> float | None:
        with self.lock:
            seen = [s.seen_at for s in self.sources.values()]
        return time.monotonic() - max(seen) if seen else None

    def _sources(self, source_stats: list) -> list[tuple[int, str, SourceLive | None, object]]:
        """(index, name, live counters or None before a first frame, capture stats or None) per source."""
        with self.lock:
            live = dict(self.sources)
        indices = range(len(source_stats)) if source_stats else sorted(live)
        rows = []
        for k in indices:
            stats = source_stats[k] if source_stats else None
            src = live.get(k)
            rows.append((k, getattr(stats, "name", None) or (src.name if src else str(k)), src, stats))
        return rows

    def summary(self, source_stats: list, deliveries: list) -> dict:
        """The JSON of /api/summary: per source counts, FPS, latency, last decision; deliveries; last NGs."""
        sources = []
        for k, name, src, stats in self._sources(source_stats):
            with self.lock:
                e2e = list(src.e2e_ms) if src else []
                fps, latest, latest_ng = (src.fps, src.latest, src.latest_ng) if src else (None, None, None)
                frames, ng = (src.frames, src.ng) if src else (0, 0)
            p50, p99 = np.percentile(e2e, [50, 99]).round(2).tolist() if e2e else (None, None)
            sources.append({"index": k, "name": name, "frames": frames, "ng": ng, "ok": frames - ng,
                            "fps": round(fps, 2) if fps else None, "e2e_ms": {"p50": p50, "p99": p99},
                            "last": latest.record() if latest else None,
                            "last_ng": latest_ng.record() if latest_ng else None,
                            "dropped": getattr(stats, "dropped", 0), "reconnects": getattr(stats, "reconnects", 0),
                            "opened": getattr(stats, "opened", src is not None), "errors": getattr(stats, "errors", []),
                            "drift": {"alarm": bool(src and src.drift), "message": src.drift_message if src else ""}})
        with self.lock:
            ng_list = [(i, r.record()) for i, r in reversed(self.ng)]
        return {"uptime_s": round(time.time() - self.started, 1), "frames": sum(x["frames"] for x in sources),
                "anomalies": sum(x["ng"] for x in sources), "sources": sources,
                "drift": {"alarm": any(x["drift"]["alarm"] for x in sources),
                          "messages": [x["drift"]["message"] for x in sources if x["drift"]["alarm"]]},
                "deliveries": [d.to_dict() for d in deliveries],
                "last_ng": [{"id": i, "source": r["source"], "frame": r["frame"], "score": r["score"],
                             "timestamp": r["timestamp"], "image": f"/ng/{i}.jpg"} for i, r in ng_list]}

    def prometheus(self, source_stats: list, deliveries: list, threshold: float) -> str:
        """Prometheus' text exposition format, written by prometheus_client."""
        with self.scrape_lock:
            self.scrape = (source_stats, deliveries, threshold)
            return generate_latest(self.registry).decode()


# Capture counters: (metric, attribute of the source's capture stats, help).
CAPTURE_COUNTERS = (("dualkd_dropped_frames", "dropped", "Live frames dropped for newer ones."),
                    ("dualkd_corrupted_frames", "corrupted", "Frames that could not be decoded."),
                    ("dualkd_reconnects", "reconnects", "Reconnections of a lost stream."))
# Line-side sink deliveries: (field of the sink's delivery stats, counter or gauge, help).
SINK_FIELDS = (("accepted", "counter", "Decisions handed to a line-side sink."),
               ("delivered", "counter", "Decisions the receiver acknowledged."),
               ("dropped", "counter", "Decisions pushed out of a full queue."),
               ("failed", "counter", "Decisions given up after the retries."),
               ("reconnects", "counter", "Reconnections of a line-side sink."),
               ("connected", "gauge", "1 while the sink's receiver is reachable."))


class _ScrapeTimeCollector(Collector):
    """The values other parts own (counts per source, capture stats, sink deliveries, threshold),
    read when /metrics is scraped: prometheus_client's pattern for proxying existing state."""

    def __init__(self, live: LiveMetrics) -> None:
        self.live = live

    def describe(self):
        return []  # names are known only at scrape time; nothing to check at registration

    def collect(self):
        source_stats, deliveries, threshold = self.live.scrape
        rows = self.live._sources(source_stats)
        frames = CounterMetricFamily("dualkd_frames", "Frames scored.", labels=["source"])
        anomalies = CounterMetricFamily("dualkd_anomalies", "Frames decided NG (score >= threshold).", labels=["source"])
        fps = GaugeMetricFamily("dualkd_fps", "Frames per second over the last frames.", labels=["source"])
        drift = GaugeMetricFamily("dualkd_drift_alarm", "1 while the source's scores no longer look like its "
                                  "calibration's.", labels=["source"])
        with self.live.lock:
            for _, name, src, _ in rows:
                frames.add_metric([name], src.frames if src else 0)
                anomalies.add_metric([name], src.ng if src else 0)
                fps.add_metric([name], round((src.fps if src else None) or 0.0, 3))
                drift.add_metric([name], int(bool(src and src.drift)))
        yield from (frames, anomalies, fps)
        for metric, attr, help_text in CAPTURE_COUNTERS:
            family = CounterMetricFamily(metric, help_text, labels=["source"])
            for _, name, _, stats in rows:
                family.add_metric([name], getattr(stats, attr, 0))
            yield family
        by_cause = CounterMetricFamily("dualkd_dropped_frames_by_cause", "Live frames dropped, by cause: startup "
                                       "(before the first frame was taken), behind (a sustained backlog), burst "
                                       "(more at once than the buffer holds).", labels=["source", "cause"])
        for _, name, _, stats in rows:
            for cause, count in (getattr(stats, "dropped_by_cause", None) or {}).items():
                by_cause.add_metric([name, cause], count)
        yield by_cause
        yield GaugeMetricFamily("dualkd_threshold", "Decision threshold on the score.", value=threshold)
        yield drift
        for field_name, kind, help_text in SINK_FIELDS:
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = make(f"dualkd_sink_{field_name}", help_text, labels=["sink", "target"])
            for d in deliveries:
                family.add_metric([d.sink, d.target], int(getattr(d, field_name)))
            yield family
