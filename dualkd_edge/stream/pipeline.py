"""The stream pipeline: capture threads feed the Detector's stages (prepare -> run -> decide), and
every scored frame goes to the sinks. The decision sinks (line outputs, dashboard, your own sinks)
run on the inference thread and are cheap; the file outputs (overlay images and video, JSONL) run on
their own thread (outputs/file_worker.py), in frame order, pictures before records. The model is
warmed up before any source opens, so a live camera loses no frame to the first inference."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dualkd_edge.decision.calibrations import ActiveCalibration
from dualkd_edge.decision.drift import DriftMonitor, DriftSettings
from dualkd_edge.decision.hot_swap import warm_up
from dualkd_edge.detector import Detector
from dualkd_edge.errors import UserError
from dualkd_edge.output_paths import describe_os_error
from dualkd_edge.preprocess import model_input
from dualkd_edge.stream.capture.threads import CaptureWorker, Frame, RetryPolicy, prepare_source
from dualkd_edge.stream.outputs.core_share import model_takes_every_core
from dualkd_edge.stream.outputs.file_worker import FileOutputWorker
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.outputs.sinks import (
    ImageSink,
    JsonlSink,
    Sink,
    VideoSink,
    WindowSink,
    new_run_id,
)
from dualkd_edge.stream.capture.sources import SourceSpec
from dualkd_edge.stream.summary import STAGES, StageLatencies, StreamSummary

log = logging.getLogger("dualkd_edge")

STALL_S = 0.5  # a live source silent this long is not waited for when batching
IDLE_WAKE_S = 0.05  # the longest the inference thread sleeps between checks (stop, stalled sources)


@dataclass
class StreamOptions:
    out: Path | None = None
    jsonl: Path | None = None
    save_video: bool = False
    save_images: str = "none"  # anomalies | all | none
    save_masks: bool = False  # binary defect masks beside the saved images
    show: bool = False
    batch: int = 1
    # Live batching (nvstreammux's idea): a batch waits for the other sources' frames at most this
    # long after its first frame; sources silent for STALL_S are not waited for at all.
    batch_timeout_ms: float = 33.0
    max_frames: int | None = None
    fps_limit: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    decoder: str = "opencv"  # rtsp:// URLs: opencv (FFmpeg) | gstreamer (stream/gstreamer.py)
    calibration: str | None = None  # --calibration: pinned across hot swaps (None: the model's default)
    review: Path | None = None  # --review DIR: NG frames and an OK sample kept for the operator (review/)
    review_ok_rate: float = 0.02
    defect_types: tuple[str, ...] = ()
    drift: DriftSettings = field(default_factory=DriftSettings)

    def validate(self) -> None:
        if self.batch < 1:
            raise UserError(f"--batch: must be >= 1, got {self.batch}")
        if self.batch_timeout_ms < 0:
            raise UserError(f"--batch-timeout-ms: must be >= 0, got {self.batch_timeout_ms}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames: must be >= 1, got {self.max_frames}")
        if self.fps_limit is not None and self.fps_limit <= 0:
            raise UserError(f"--fps-limit: must be > 0, got {self.fps_limit}")
        if self.decoder not in ("opencv", "gstreamer"):
            raise UserError(f"--decoder: expected opencv or gstreamer, got {self.decoder!r}")
        if self.save_images not in ("anomalies", "all", "none"):
            raise UserError(f"--save-images: expected anomalies, all or none, got {self.save_images!r}")
        if (self.save_video or self.save_images != "none") and self.out is None:
            raise UserError("--save-video / --save-images need --out DIR")
        if not 0 <= self.review_ok_rate <= 1:
            raise UserError(f"--review-ok-rate: expected a share in [0, 1], got {self.review_ok_rate}")
        if self.defect_types and self.review is None:
            raise UserError("--defect-types: the list the review page offers; add --review DIR")
        if self.save_masks and self.save_images == "none":
            raise UserError("--save-masks: masks are written beside the saved images; add --save-images anomalies or all")

    @property
    def paints_files(self) -> bool:
        """Overlay images or video are written (the costly file outputs: painting, encoding)."""
        return self.out is not None and (self.save_video or self.save_images != "none")

    def output_locations(self) -> tuple[dict[str, Path | None], dict[str, Path | None]]:
        """(folders, appended files) these options write to, for the checks before a run."""
        folders: dict[str, Path | None] = {"--out": self.out, "--review": self.review}
        if self.out is not None and self.save_images != "none":
            folders["--save-images"] = self.out / "images"
        if self.out is not None and self.save_video:
            folders["--save-video"] = self.out / "video"
        return folders, {"--jsonl": self.jsonl}

    def sinks(self, run_id: str | None = None) -> list[Sink]:
        """The sinks these options ask for, pictures first."""
        sinks: list[Sink] = []
        if self.out and self.save_images != "none":
            sinks.append(ImageSink(self.out / "images", self.save_images, self.save_masks))
        if self.out and self.save_video:
            sinks.append(VideoSink(self.out / "video"))
        if self.show:
            sinks.append(WindowSink())
        if self.jsonl:
            sinks.append(JsonlSink(self.jsonl, run_id))
        return sinks


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


class StreamRunner:
    """Runs until the sources end, `max_frames` is reached, a sink asks to stop or `request_stop()`
    is called (from a signal handler, another thread, a dashboard)."""

    def __init__(self, detector: Detector, specs: list[SourceSpec], opts: StreamOptions,
                 sinks: list[Sink] | None = None, run_id: str | None = None) -> None:
        opts.validate()
        self.det = detector
        self.specs = [prepare_source(s, opts.decoder) for s in specs]
        self.opts = opts
        backend = detector.backend
        if backend.max_batch and opts.batch > backend.max_batch:
            raise UserError(f"--batch: the model takes at most {backend.max_batch} image(s) per batch "
                            "(export with --batch dynamic for more)")
        self.run_id = run_id or new_run_id()  # given when the caller built the sinks with it
        self.sinks = opts.sinks(self.run_id) if sinks is None else sinks
        self._wants_pictures = any(s.shows_pictures for s in self.sinks)
        self._painters: dict[tuple, object] = {}
        # One calibration per source (a list's `calibration=NAME`, else the model's / --calibration).
        self.source_calibrations = self.calibrations_for(detector)
        self.drift = [DriftMonitor(s.name, c.name, c.calibration.score_quantiles, opts.drift)
                      for s, c in zip(self.specs, self.source_calibrations)]
        self.model_id = detector.model_id
        self.watcher = None  # decision.hot_swap.ModelWatcher, when watch() was called
        self.swaps: list[dict] = []
        self.stop = threading.Event()
        self.interrupted = False
        self.output_errors: list[str] = []  # an output that failed (disk full...) stops the run
        self._failed_sinks: set[int] = set()
        self.inline_sinks = [s for s in self.sinks if not s.off_thread]
        self.file_outputs = FileOutputWorker([s for s in self.sinks if s.off_thread], self._output_failed,
                                             self._failed_sinks, yield_cpu=model_takes_every_core(detector))
        self.latencies: dict[str, StageLatencies] = {s: StageLatencies() for s in STAGES}
        self.frames = self.anomalies = 0
        self.workers: list[CaptureWorker] = []
        self._fps = FpsMeter()
        self._rr = 0
        self._arrived = threading.Event()  # a capture thread handed over a frame (or ended)
        self.batch_sizes: Counter[int] = Counter()  # inference calls per number of frames
        self.batch_timeouts = 0  # batches sent before every delivering source had a frame in them

    # -- calibrations, pictures, hot swap ------------------------------------------------------------
    def calibrations_for(self, detector: Detector) -> list[ActiveCalibration]:
        """Each source's calibration in `detector` (UserError naming a calibration it lacks)."""
        chosen = [detector.calibration_named(s.calibration) if s.calibration else detector.calibration
                  for s in self.specs]
        if self._wants_pictures and self.opts.save_masks:
            for cal in chosen:
                self._painter_for(detector, cal).require_calibrated("--save-masks", detector.name)
        return chosen

    def _painter_for(self, detector: Detector, cal: ActiveCalibration):
        """The overlay painter of a calibration: its normal anomaly-map range and threshold."""
        from dataclasses import replace

        from dualkd_edge.pictures.overlay import OverlayPainter

        key = (id(detector), cal.name, cal.threshold)
        if key not in self._painters:
            meta = replace(detector.meta, calibration=cal.calibration)
            self._painters[key] = OverlayPainter.for_model(meta, detector.name, cal.threshold)
        return self._painters[key]

    def check_replacement(self, candidate: Detector) -> None:
        """What a hot-swapped model must satisfy (decision/hot_swap.py); raises with the reason."""
        if candidate.meta.input != self.det.meta.input:
            raise UserError(f"its input contract ({candidate.meta.input}) differs from the running model's "
                            f"({self.det.meta.input})")
        if candidate.backend.max_batch and self.opts.batch > candidate.backend.max_batch:
            raise UserError(f"it takes at most {candidate.backend.max_batch} image(s) per batch; --batch is {self.opts.batch}")
        self.calibrations_for(candidate)
        candidate.model_id  # noqa: B018 - hashed here, in the watcher's thread, not between two frames

    def watch(self, load) -> None:
        """Take replacements of the model file while running: `load()` opens the file again."""
        from dualkd_edge.decision.hot_swap import ModelWatcher

        self.watcher = ModelWatcher(Path(self.det.name), load, self.check_replacement,
                                    lambda: f"model_id {self.model_id}")

    def _swap_if_replaced(self) -> None:
        new = self.watcher.take() if self.watcher is not None else None
        if new is None:
            return
        old, old_cals = self.det, self.source_calibrations
        new_cals = self.calibrations_for(new)
        self.det, self.source_calibrations = new, new_cals
        old_id, self.model_id = self.model_id, new.model_id
        for monitor, before, after in zip(self.drift, old_cals, new_cals):
            if (before.name, before.calibration.score_quantiles) != (after.name, after.calibration.score_quantiles):
                monitor.rebase(after.name, after.calibration.score_quantiles, self.frames)
        self._painters.clear()
        swap = {"frame": self.frames, "time": time.time(), "model_id": {"from": old_id, "to": self.model_id},
                "calibration": {"from": old_cals[0].name, "to": new_cals[0].name},
                "threshold": {"from": old_cals[0].threshold, "to": new_cals[0].threshold}}
        self.swaps.append(swap)
        log.info("model %s replaced after frame %d: model_id %s -> %s, calibration '%s' -> '%s', threshold %.6g -> %.6g",
                 self.det.name, self.frames, old_id, self.model_id, swap["calibration"]["from"],
                 swap["calibration"]["to"], swap["threshold"]["from"], swap["threshold"]["to"])
        old.close()

    def source_stats(self) -> list:
        """The capture threads' counts (SourceStats) while the run goes on, e.g. for a dashboard."""
        return [w.stats for w in self.workers]

    def request_stop(self) -> None:
        """Finish the frames in flight, then stop (what Ctrl-C / SIGTERM do in `infer`)."""
        self.interrupted = True
        self.stop.set()
        self._arrived.set()

    def _take_ready(self, workers: list[CaptureWorker], batch: list[tuple[CaptureWorker, Frame]]) -> None:
        """Add what is ready, round-robin from a rotating start: the newest frame of each live
        source not yet in the batch, the next frames of files, until the batch is full."""
        in_batch = {w.index for w, _ in batch}
        for k in range(len(workers)):
            w = workers[(self._rr + k) % len(workers)]
            while len(batch) < self.opts.batch and not (w.spec.live and w.index in in_batch):
                try:
                    batch.append((w, w.queue.get_nowait()))
                except queue.Empty:
                    break
                in_batch.add(w.index)
            if len(batch) >= self.opts.batch:
                return

    @staticmethod
    def _worth_waiting_for(w: CaptureWorker, in_batch: set[int], now: float) -> bool:
        """A source that should deliver soon: not finished, and (live) not yet in the batch and
        delivering (a frame within STALL_S); a dead or stalled camera is not waited for."""
        if w.finished.is_set():
            return False
        if not w.spec.live:
            return True
        return w.index not in in_batch and w.last_delivery is not None and now - w.last_delivery < STALL_S

    def _next_batch(self, workers: list[CaptureWorker]) -> list[tuple[CaptureWorker, Frame]]:
        """Up to `batch` frames for one inference call (at most one per live source: its newest).
        Waits for the first frame; then until the batch is full, no delivering source is missing,
        or `batch_timeout_ms` has passed since the first frame was taken."""
        batch: list[tuple[CaptureWorker, Frame]] = []
        deadline = None
        while not self.stop.is_set():
            # Cleared before looking: a frame handed over from here on sets it again, so none waits
            # for a wake-up (a 2 ms poll added ~1 ms to every live decision).
            self._arrived.clear()
            self._take_ready(workers, batch)
            now = time.perf_counter()
            if len(batch) >= self.opts.batch:
                break
            wait = IDLE_WAKE_S
            if batch:
                deadline = deadline or now + self.opts.batch_timeout_ms / 1e3
                in_batch = {w.index for w, _ in batch}
                if not any(self._worth_waiting_for(w, in_batch, now) for w in workers):
                    break
                if now >= deadline:
                    self.batch_timeouts += 1
                    break
                wait = min(wait, deadline - now)
            elif all(w.finished.is_set() and w.queue.empty() for w in workers):
                break
            self._arrived.wait(wait)
        self._rr += 1
        if batch:
            self.batch_sizes[len(batch)] += 1
        return batch

    def _score(self, batch: list[tuple[CaptureWorker, Frame]]) -> list[FrameResult]:
        """The Detector's three stages, each timed (per frame: the batch's time over its size)."""
        t0 = time.perf_counter()
        frames = [f for _, f in batch]  # their inputs were made by the capture threads (run())
        prepared = self.det.prepare_inputs([f.model_input for f in frames], [f.image.shape[:2] for f in frames])
        t1 = time.perf_counter()
        outputs = self.det.run(prepared)
        t2 = time.perf_counter()
        cals = [self.source_calibrations[w.index] for w, _ in batch]
        preds = self.det.decide(outputs, prepared.sizes, cals)
        t3 = time.perf_counter()
        n = len(batch)
        live_fps = self._fps.tick(t3, n)
        stage = {"preprocess_ms": (t1 - t0) * 1e3 / n, "inference_ms": (t2 - t1) * 1e3 / n,
                 "postprocess_ms": (t3 - t2) * 1e3 / n}
        results = []
        for (worker, frame), pred, cal in zip(batch, preds, cals):
            result = FrameResult(frame, worker.spec.name, worker.fps, pred, cal.threshold,
                                 {"decode_ms": frame.decode_ms, "resize_ms": frame.resize_ms, **stage}, live_fps,
                                 self._painter_for(self.det, cal) if self._wants_pictures else None,
                                 self.model_id, cal.name)
            self._watch_drift(worker.index, result, cal)
            results.append(result)
        return results

    def _watch_drift(self, source: int, result: FrameResult, cal: ActiveCalibration) -> None:
        monitor = self.drift[source]
        p = result.prediction
        event = monitor.update(result.frame.index, p.score_logit, cal.branch_z(p.local_score, p.semantic_score))
        if event is not None:
            (log.warning if monitor.state.active else log.info)("%s", event)
        result.drift_event = event
        result.drift_active = monitor.state.active

    def _output_failed(self, sink: Sink, exc: OSError) -> None:
        """A sink could not write (disk full, remounted read-only): stop after the frames in
        flight, keep what was written (complete files and lines only) and say so."""
        self._failed_sinks.add(id(sink))
        self.output_errors.append(f"{sink.option or type(sink).__name__}: could not write {describe_os_error(exc)}; "
                                  f"the run stopped after {self.frames} frame(s); the files completed before were kept")
        log.error("%s", self.output_errors[-1])
        self.stop.set()
        self._arrived.set()

    def _emit(self, result: FrameResult) -> None:
        """The inference thread's sinks in order, `output` and `e2e` (from the decoded frame's arrival,
        queue wait included) brought up to date before each; then the frame goes to the file outputs
        with the times of its decision (their own time is reported apart: file_worker.py)."""
        t_out = time.perf_counter()
        for sink in self.inline_sinks:
            if id(sink) in self._failed_sinks:
                continue
            now = time.perf_counter()
            result.latency_ms["output_ms"] = (now - t_out) * 1e3
            result.latency_ms["e2e_ms"] = (now - result.frame.t_ready) * 1e3
            try:
                sink.write(result)
            except OSError as exc:
                self._output_failed(sink, exc)
            if sink.stop_requested:
                self.stop.set()
        now = time.perf_counter()
        result.latency_ms["output_ms"] = (now - t_out) * 1e3
        result.latency_ms["e2e_ms"] = (now - result.frame.t_ready) * 1e3
        for k, v in result.latency_ms.items():
            self.latencies[k].add(v)
        self.frames += 1
        self.anomalies += int(result.prediction.is_anomaly)
        if self.file_outputs.sinks:
            self.file_outputs.submit(result)

    def _loop(self, workers: list[CaptureWorker]) -> None:
        opts = self.opts
        while not self.stop.is_set():
            self._swap_if_replaced()  # between batches: no frame dropped or reordered
            batch = self._next_batch(workers)
            if not batch:
                return
            if opts.max_frames is not None:
                batch = batch[:opts.max_frames - self.frames]
            t0 = time.perf_counter()
            for result in self._score(batch):
                self._emit(result)
            if opts.max_frames is not None and self.frames >= opts.max_frames:
                return
            if opts.fps_limit:
                time.sleep(max(0.0, len(batch) / opts.fps_limit - (time.perf_counter() - t0)))

    def run(self) -> StreamSummary:
        import cv2  # noqa: F401 - a broken OpenCV fails here, before threads start

        # The model's first inference (session set-up, memory) happens before any camera opens.
        warm_up(self.det, self.opts.batch, check=False)
        # Each capture thread also makes its frames into the model's input, resized and normalised
        # (the same for every model a hot swap may bring: check_replacement), beside the inference of
        # the previous frame.
        make_input = partial(model_input, spec=self.det.meta.input)
        workers = self.workers = [CaptureWorker(i, s, self.stop, self.opts.retry, arrived=self._arrived,
                                                make_input=make_input) for i, s in enumerate(self.specs)]
        t_begin = time.perf_counter()
        outputs: list[str] = []
        if self.file_outputs.sinks:
            self.file_outputs.start()
        try:
            for w in workers:
                w.start()
            self._loop(workers)
        finally:
            self.stop.set()
            for w in workers:
                w.join(timeout=10)
            self.file_outputs.finish()
            if self.watcher is not None:
                self.watcher.close()
            for sink in self.sinks:
                try:
                    outputs += sink.close()
                except OSError as exc:
                    if id(sink) in self._failed_sinks:  # it failed before: its close is no news
                        log.warning("%s: %s", sink.option, describe_os_error(exc))
                    else:
                        self._output_failed(sink, exc)
        stats = [w.stats for w in workers]
        if not any(s.opened for s in stats) and not self.interrupted:
            reasons = "; ".join(e for s in stats for e in s.errors) or "no source could be opened"
            raise UserError(f"SOURCE: {reasons}")
        return StreamSummary(self.frames, self.anomalies, time.perf_counter() - t_begin, stats,
                             {k: v.stats() for k, v in self.latencies.items()}, self.interrupted, outputs,
                             dict(sorted(self.batch_sizes.items())), self.batch_timeouts,
                             [s.delivery for s in self.sinks if getattr(s, "delivery", None) is not None],
                             self.output_errors, self.run_id, [m.state for m in self.drift], self.swaps,
                             list(self.watcher.refused) if self.watcher is not None else [],
                             {"model_id": self.model_id, "calibrations": [c.name for c in self.source_calibrations],
                              "thresholds": [c.threshold for c in self.source_calibrations]},
                             self.file_outputs.report() if self.file_outputs.sinks else {})
