"""The stream pipeline: capture threads feed preprocess -> inference -> postprocess -> sinks."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge.detector import Detector
from dualkd_edge.errors import UserError
from dualkd_edge.preprocess import prepare_batch
from dualkd_edge.stream.capture import CaptureWorker, Frame, RetryPolicy, SourceStats
from dualkd_edge.stream.sinks import ImageSink, JsonlSink, VideoSink, WindowSink
from dualkd_edge.stream.sources import SourceSpec

log = logging.getLogger("dualkd_edge")

# output: drawing and writing overlays (images, video, window); e2e also holds the queue wait.
STAGES = ("decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "output_ms", "e2e_ms")


@dataclass
class StreamOptions:
    out: Path | None = None
    jsonl: Path | None = None
    save_video: bool = False
    save_images: str = "none"  # anomalies | all | none
    save_masks: bool = False  # binary defect masks beside the saved images
    show: bool = False
    threshold: float | None = None
    batch: int = 1
    max_frames: int | None = None
    fps_limit: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def validate(self) -> None:
        if self.batch < 1:
            raise UserError(f"--batch: must be >= 1, got {self.batch}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames: must be >= 1, got {self.max_frames}")
        if self.fps_limit is not None and self.fps_limit <= 0:
            raise UserError(f"--fps-limit: must be > 0, got {self.fps_limit}")
        if self.save_images not in ("anomalies", "all", "none"):
            raise UserError(f"--save-images: expected anomalies, all or none, got {self.save_images!r}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UserError(f"--threshold: expected a probability in [0, 1], got {self.threshold}")
        if (self.save_video or self.save_images != "none") and self.out is None:
            raise UserError("--save-video / --save-images need --out DIR")
        if self.save_masks and self.save_images == "none":
            raise UserError("--save-masks: masks are written beside the saved images; add --save-images anomalies or all")


@dataclass
class StreamSummary:
    frames: int
    anomalies: int
    seconds: float
    sources: list[SourceStats]
    stages: dict[str, dict[str, float]]
    interrupted: bool
    outputs: list[str]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> list[str]:
        return [e for s in self.sources for e in s.errors]

    def to_dict(self) -> dict:
        return {
            "frames": self.frames, "anomalies": self.anomalies, "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3), "interrupted": self.interrupted, "errors": self.errors,
            "dropped": sum(s.dropped for s in self.sources), "corrupted": sum(s.corrupted for s in self.sources),
            "skipped_files": sum(s.skipped_files for s in self.sources),
            "reconnects": sum(s.reconnects for s in self.sources),
            "sources": [vars(s) for s in self.sources], "latency_ms": self.stages, "outputs": self.outputs,
        }


class FpsMeter:
    """Frames per second over the last `window` batches; None until a second batch has been seen
    (one frame alone has no rate)."""

    def __init__(self, window: int = 30) -> None:
        self.marks: deque[tuple[float, int]] = deque(maxlen=window)

    def tick(self, t: float, frames: int) -> float | None:
        self.marks.append((t, frames))
        elapsed = self.marks[-1][0] - self.marks[0][0]
        if len(self.marks) < 2 or elapsed <= 0:
            return None
        # The first mark's frames were finished when the window opened.
        return sum(f for _, f in list(self.marks)[1:]) / elapsed


def _stage_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


class StreamRunner:
    def __init__(self, detector: Detector, specs: list[SourceSpec], opts: StreamOptions) -> None:
        opts.validate()
        self.det = detector
        self.specs = specs
        self.opts = opts
        self.threshold = detector.threshold if opts.threshold is None else opts.threshold
        backend = detector.backend
        if backend.max_batch and opts.batch > backend.max_batch:
            raise UserError(f"--batch: the model takes at most {backend.max_batch} image(s) per batch "
                            "(export with --batch dynamic for more)")
        self.painter = None
        if opts.save_images != "none" or opts.save_video or opts.show:
            from dualkd_edge.overlay import OverlayPainter

            self.painter = OverlayPainter.for_model(detector.meta, detector.name, self.threshold)
            if opts.save_masks:
                self.painter.require_calibrated("--save-masks", detector.name)
        self.stop = threading.Event()
        self.interrupted = False
        self.latencies: dict[str, list[float]] = {s: [] for s in STAGES}

    def _handle_signal(self, signum, _frame) -> None:  # noqa: ANN001
        log.warning("received %s: stopping after the frames in flight", signal.Signals(signum).name)
        self.interrupted = True
        self.stop.set()

    def _next_batch(self, workers: list[CaptureWorker]) -> list[tuple[CaptureWorker, Frame]]:
        """Round-robin over the sources; wait for the first frame, then take what is ready."""
        import queue

        batch: list[tuple[CaptureWorker, Frame]] = []
        start = getattr(self, "_rr", 0)
        while not batch:
            if self.stop.is_set():
                return batch
            active = False
            for k in range(len(workers)):
                w = workers[(start + k) % len(workers)]
                try:
                    batch.append((w, w.queue.get_nowait()))
                except queue.Empty:
                    active = active or not w.finished.is_set()
                    continue
                if len(batch) >= self.opts.batch:
                    break
            if not batch:
                if not active and all(w.queue.empty() for w in workers):
                    return batch
                time.sleep(0.002)
        self._rr = start + 1
        return batch

    def run(self) -> StreamSummary:
        import cv2

        opts = self.opts
        workers = [CaptureWorker(i, s, self.stop, opts.retry) for i, s in enumerate(self.specs)]
        jsonl = JsonlSink(opts.jsonl) if opts.jsonl else None
        images = ImageSink(opts.out / "images", opts.save_images) if opts.out and opts.save_images != "none" else None
        video = VideoSink(opts.out / "video") if opts.out and opts.save_video else None
        window = WindowSink() if opts.show else None
        in_main = threading.current_thread() is threading.main_thread()
        old_handlers = {}
        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._handle_signal)
        frames = anomalies = 0
        t_begin = time.perf_counter()
        outputs: list[str] = []
        fps = FpsMeter()
        try:
            for w in workers:
                w.start()
            while not self.stop.is_set():
                batch = self._next_batch(workers)
                if not batch:
                    break
                if opts.max_frames is not None:
                    batch = batch[:opts.max_frames - frames]
                t0 = time.perf_counter()
                imgs = [f.image for _, f in batch]
                x = self.det.backend.pad_to_fixed_batch(prepare_batch(imgs, self.det.meta.input))
                t1 = time.perf_counter()
                raw = self.det.backend.infer(x)
                raw = {k: v[:len(imgs)] for k, v in raw.items()}
                t2 = time.perf_counter()
                preds = self.det.postprocess(raw, [im.shape[:2] for im in imgs])
                for p in preds:
                    p.is_anomaly = p.score >= self.threshold
                t3 = time.perf_counter()
                n = len(batch)
                live_fps = fps.tick(t3, n)
                for (worker, frame), pred in zip(batch, preds):
                    lat = {"decode_ms": frame.decode_ms, "preprocess_ms": (t1 - t0) * 1e3 / n,
                           "inference_ms": (t2 - t1) * 1e3 / n, "postprocess_ms": (t3 - t2) * 1e3 / n}
                    t_out = time.perf_counter()
                    save_image = bool(images and images.selects(pred.is_anomaly))
                    if save_image or video or window:
                        overlay = self.painter.draw(frame.image, pred.anomaly_map, pred.score, pred.is_anomaly,
                                                    caption=f"{live_fps:.1f} FPS" if live_fps is not None else "")
                        if save_image:
                            mask = self.painter.defect_mask(pred.anomaly_map) if opts.save_masks else None
                            images.write(overlay, frame.source, frame.source_name, frame.index, pred.is_anomaly, mask)
                        if video:
                            video.write(overlay, frame.source, worker.spec.name, worker.fps)
                        if window and not window.write(overlay):
                            self.stop.set()
                    lat["output_ms"] = (time.perf_counter() - t_out) * 1e3
                    # From the decoded frame's arrival to the decision, queue wait included.
                    lat["e2e_ms"] = (time.perf_counter() - frame.t_ready) * 1e3
                    for k, v in lat.items():
                        self.latencies[k].append(v)
                    frames += 1
                    anomalies += int(pred.is_anomaly)
                    if jsonl:
                        jsonl.write({"source": frame.source_name, "source_index": frame.source, "frame": frame.index,
                                     "timestamp": round(frame.timestamp, 6), "score": round(pred.score, 6),
                                     "score_logit": round(pred.score_logit, 6),
                                     "local_score": round(pred.local_score, 6),
                                     "semantic_score": round(pred.semantic_score, 6),
                                     "is_anomaly": pred.is_anomaly, "threshold": self.threshold,
                                     "latency_ms": {k: round(v, 3) for k, v in lat.items()}})
                if opts.max_frames is not None and frames >= opts.max_frames:
                    break
                if opts.fps_limit:
                    time.sleep(max(0.0, n / opts.fps_limit - (time.perf_counter() - t0)))
        finally:
            self.stop.set()
            for w in workers:
                w.join(timeout=10)
            if jsonl:
                jsonl.close()
                outputs.append(str(opts.jsonl))
            if video:
                outputs += [str(p) for p in video.close()]
            if window:
                window.close()
            if in_main:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
        seconds = time.perf_counter() - t_begin
        stats = [w.stats for w in workers]
        if not any(s.opened for s in stats) and not self.interrupted:
            reasons = "; ".join(e for s in stats for e in s.errors) or "no source could be opened"
            raise UserError(f"SOURCE: {reasons}")
        _ = cv2  # imported early so a broken OpenCV fails before threads start
        return StreamSummary(frames, anomalies, seconds, stats,
                             {k: _stage_stats(v) for k, v in self.latencies.items()}, self.interrupted, outputs)
