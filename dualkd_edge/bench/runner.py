"""`dualkd-edge bench`: model-only latency per model and batch size, host pre/post-processing,
optional end-to-end stream timing and accuracy, measured side by side in one run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dualkd_edge.artifacts import LoadOptions
from dualkd_edge.bench.stats import LatencyStats
from dualkd_edge.bench.timing import Contender, backend_contender, time_side_by_side
from dualkd_edge.errors import UserError
from dualkd_edge.stream.capture.sources import redact

if TYPE_CHECKING:
    from dualkd_edge.detector import Detector

log = logging.getLogger("dualkd_edge")


@dataclass
class BenchOptions:
    batches: list[int] = field(default_factory=lambda: [1])
    warmup: int = 10
    iters: int | None = 50
    min_time: float | None = None
    source: str | None = None
    source_frames: int = 300
    val: Path | None = None
    camera_size: tuple[int, int] = (480, 640)  # the frame size pre/post-processing is timed at
    load: LoadOptions = field(default_factory=LoadOptions)  # threads, providers, engine options
    triton: list[str] = field(default_factory=list)  # HOST:PORT/NAME of models served by Triton

    def validate(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError(f"--batch: every batch size must be >= 1, got {','.join(map(str, self.batches))}")
        if self.warmup < 0:
            raise UserError(f"--warmup: must be >= 0, got {self.warmup}")
        if self.iters is not None and self.iters < 1:
            raise UserError(f"--iters: must be >= 1, got {self.iters}")
        if self.min_time is not None and self.min_time <= 0:
            raise UserError(f"--min-time: must be > 0 seconds, got {self.min_time}")
        if self.load.threads is not None and self.load.threads < 1:
            raise UserError(f"--threads: must be >= 1, got {self.load.threads}")


@dataclass
class BenchRow:
    model: str
    backend: str
    batch: int
    stats: LatencyStats | None
    stages: dict[str, LatencyStats] = field(default_factory=dict)
    host: dict[str, float] = field(default_factory=dict)
    gmacs: float | None = None
    note: str = ""
    round_p50_ms: list[float] = field(default_factory=list)
    made_for: str = ""  # fp32, fp16, int8-cpu, int8-tensorrt: what the model was made to run on

    @property
    def gflops(self) -> float | None:
        if self.stats is None or not self.gmacs:
            return None
        return 2 * self.gmacs * self.batch / (self.stats.p50_ms / 1e3)

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "made_for": self.made_for, "batch": self.batch,
                "latency_ms": self.stats.to_dict() if self.stats else None,
                "stages_ms": {k: v.to_dict() for k, v in self.stages.items()}, "host_ms": self.host,
                "gmacs_per_image": self.gmacs, "achieved_gflops": self.gflops, "note": self.note,
                "round_p50_ms": self.round_p50_ms}


def open_for_bench(path: Path, opts: BenchOptions):
    from dualkd_edge.artifacts import RUN, kind_of, open_backend

    load = opts.load.for_path(path)
    if kind_of(path) is RUN:
        # PyTorch on the CPU unless GPU providers were asked for; its threads as ONNX Runtime's
        device = "cpu" if load.providers in (None, ["cpu"]) else load.device
        backend = open_backend(path, replace(load, device=device))
        if load.threads:
            import torch

            torch.set_num_threads(load.threads)
        return backend
    return open_backend(path, load)


def model_gmacs(path: Path, meta) -> float | None:
    """GMACs per image: stored at export; computed with PyTorch's counter for run directories."""
    if meta.export.get("gmacs"):
        return float(meta.export["gmacs"])
    try:
        from dualkd_edge.model.complexity import count_model
        from dualkd_edge.presets import Preset

        return count_model(Preset.from_dict(meta.preset, str(path)))["gmacs"]
    except ImportError:
        return None


def host_stage_times(detector, camera_size: tuple[int, int], batch: int, repeats: int = 20) -> dict[str, float]:
    """Median per-image host time to pre-process camera frames and post-process the outputs."""
    from dualkd_edge.bench.timing import random_input
    from dualkd_edge.preprocess import prepare_batch

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*camera_size, 3), dtype=np.uint8) for _ in range(batch)]
    pre, post = [], []
    spec = detector.meta.input
    outputs = detector.backend.infer(random_input(detector.backend, batch))
    for _ in range(repeats):
        t0 = time.perf_counter()
        prepare_batch(frames, spec)
        t1 = time.perf_counter()
        for p in detector.decide(outputs, [camera_size] * batch):
            p.anomaly_map  # noqa: B018 - made on demand; timed here as before (a sink that paints needs it)
        t2 = time.perf_counter()
        pre.append((t1 - t0) * 1e3 / batch)
        post.append((t2 - t1) * 1e3 / batch)
    return {"preprocess_ms": float(np.median(pre)), "postprocess_ms": float(np.median(post))}


def bench_models(models: list[Path], opts: BenchOptions) -> dict:
    from contextlib import ExitStack

    from dualkd_edge.bench.machine import describe_machine, matmul_reference

    opts.validate()
    if not models and not opts.triton:
        raise UserError("MODEL: give at least one model (or --triton HOST:PORT/NAME)")
    for m in models:
        if not Path(m).exists():
            raise UserError(f"MODEL: not found: {m}")
    machine = describe_machine()
    reference, reference_flops = matmul_reference()
    results: dict[tuple[str, int], BenchRow] = {}
    e2e: dict[str, dict] = {}
    accuracy: dict[str, dict] = {}
    with ExitStack() as stack:
        # All models stay open so that they can be timed in alternating rounds (bench/timing.py).
        opened = open_contenders(models, opts, stack)
        for b in opts.batches:
            results.update(time_batch(opened, b, reference, opts))
        for name, det, _ in opened:
            if opts.source:
                e2e[name] = end_to_end(det, opts)
            if opts.val:
                from dualkd_edge.data.discovery import discover_all
                from dualkd_edge.evaluation.evaluate_splits import evaluate

                accuracy[name] = evaluate(det, discover_all([opts.val]), progress=False).mean_row()
        servers = {name: det.backend.server_report() for name, det, _ in opened if hasattr(det.backend, "server_report")}
    footprint = measure_footprints(models, opts)
    if reference.totals_ms:
        machine["reference_matmul_gflops"] = reference_flops / (reference.stats()[0].p50_ms / 1e3) / 1e9
    rows = [results[name, b] for name, _, _ in opened for b in opts.batches]
    return {"machine": machine, "options": {"batches": opts.batches, "warmup": opts.warmup, "iters": opts.iters,
                                            "min_time": opts.min_time, "threads": opts.load.threads,
                                            "providers": opts.load.providers, "source": redact(opts.source) if opts.source else None,
                                            "timing": "models and the reference matmul timed in alternating rounds"},
            "rows": [r.to_dict() for r in rows], "end_to_end": e2e, "accuracy": accuracy, "triton": servers,
            "footprint": footprint}


def measure_footprints(models: list[Path], opts: BenchOptions) -> dict[str, dict]:
    """Peak RSS and time to the first decision of each local model, each from fresh processes
    (bench/footprint.py); a model whose process fails gets its reason instead."""
    from dualkd_edge.bench.footprint import measure

    found = {}
    for path in models:
        try:
            found[str(path)] = measure(Path(path), list(opts.load.providers or []) or None, opts.load.threads)
        except (RuntimeError, OSError, ValueError) as exc:
            found[str(path)] = {"error": str(exc)}
    return found


def open_contenders(models: list[Path], opts: BenchOptions, stack) -> list[tuple[str, Detector, float | None]]:
    """(name, Detector, GMACs) of every local model and Triton endpoint, closed by `stack`."""
    from dualkd_edge.detector import Detector

    opened = []
    for path in models:
        det = Detector(open_for_bench(path, opts))
        stack.callback(det.close)
        opened.append((str(path), det, model_gmacs(path, det.meta)))
    for endpoint in opts.triton:
        from dualkd_edge.runtime.triton_backend import TritonBackend

        det = Detector(TritonBackend(endpoint))
        stack.callback(det.close)
        opened.append((f"triton:{det.backend.endpoint}", det, model_gmacs(Path(endpoint), det.meta)))
    return opened


def time_batch(opened, b: int, reference, opts: BenchOptions) -> dict[tuple[str, int], BenchRow]:
    """Time every model that takes batch `b` side by side with the reference matmul."""
    from dualkd_edge.runtime.made_for import made_for

    results: dict[tuple[str, int], BenchRow] = {}
    timed = []
    for name, det, gmacs in opened:
        backend = det.backend
        if backend.max_batch is not None and b > backend.max_batch or backend.fixed_batch and b != backend.fixed_batch:
            results[name, b] = BenchRow(name, backend.describe(), b, None, made_for=made_for(det.meta),
                                        note=f"static batch {backend.fixed_batch}; export with --batch dynamic")
        else:
            timed.append((name, det, gmacs, backend_contender(backend, b)))
    if timed:
        time_side_by_side([t[3] for t in timed] + [reference], opts.warmup, opts.iters, opts.min_time)
    for name, det, gmacs, contender in timed:
        stats, stages = contender.stats()
        results[name, b] = BenchRow(name, det.backend.describe(), b, stats, stages,
                                    host_stage_times(det, opts.camera_size, b), gmacs,
                                    round_p50_ms=contender.round_p50_ms, made_for=made_for(det.meta))
    return results


def end_to_end(detector, opts: BenchOptions) -> dict:
    """The whole `infer` pipeline on --source, against the model-only FPS at batch 1, timed right
    before and right after the stream so that both sides see the machine in the same state."""
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    specs = parse_source(opts.source)
    model_only = backend_contender(detector.backend, 1)
    time_side_by_side([model_only], opts.warmup, opts.iters, opts.min_time)
    summary = StreamRunner(detector, specs, StreamOptions(max_frames=opts.source_frames)).run()
    if summary.frames == 0:
        raise UserError(f"--source: no frames could be read from {specs[0].name}")
    runs_before = len(model_only.totals_ms)
    time_side_by_side([model_only], 0, 2 * runs_before, None)  # as many runs again, after (still warm)
    model_fps = 1000.0 / model_only.stats()[0].mean_ms
    return {"frames": summary.frames, "e2e_fps": summary.fps, "model_only_fps": model_fps,
            "ratio": summary.fps / model_fps, "stages_ms": summary.stages, "dropped": summary.to_dict()["dropped"]}
