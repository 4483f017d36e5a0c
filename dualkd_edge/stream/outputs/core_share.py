"""Whether a file run's overlay thread gets a CPU core of its own, measured on this machine.

Painting an overlay and encoding it take CPU time per frame that either shares every core with the
model or gets a core the model then lacks. Which costs less depends on the two paces (2-core VM,
benchmarks/results/line-pace-cpu-2core.md, FPS with outputs / without):

| model, frames | model ms/image | outputs ms/frame | every core | a core left |
|---|---|---|---|---|
| tiny, 112 px | 10 | 5 | 0.69x | 0.69x |
| tiny, 720p | 10 | ~15 | 0.46x | 0.71x |
| edge-s224 INT8, 224 px | 65 | 5 | 0.89x | 0.73x |

A core left costs the model about 1/(cores - 1) of its pace, and on 2 cores the two choices broke
even where the outputs took half the model's time per frame: so a core is left when the outputs take
more than model / (2 x (cores - 1)) per frame. Both are measured before the run on its first frame
(inference at the model's input size, as the capture thread hands it over; one overlay painted and
encoded per file output), so the choice follows the machine, the model and the frame size."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def physical_cores() -> int:
    """Physical cores this process may use: ONNX Runtime's default thread count is one per physical
    core, so "all but one" must count the same way (SMT siblings share a core's arithmetic units)."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in usable:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list").read_text().strip()
        except OSError:  # no sysfs topology (not Linux): count logical CPUs
            return len(usable)
        cores.add(siblings)
    return len(cores)


def first_frame(specs) -> np.ndarray | None:
    """The first frame of the first file source (video or image), or None."""
    import cv2

    from dualkd_edge.fileio import read_image

    for spec in specs:
        if spec.kind == "video":
            capture = cv2.VideoCapture(spec.target)
            try:
                ok, frame = capture.read()
            finally:
                capture.release()
            if ok:
                return frame
        for path in spec.files:
            if (image := read_image(path)) is not None:
                return image
    return None


def _fastest_ms(action, repeats: int = 3) -> float:
    """The fastest of `repeats` timed calls, after one untimed (set-up, caches)."""
    action()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def runs_on_cpu(detector) -> bool:
    """Whether ONNX Runtime's CPU provider runs the model (its CPU threads then set the pace)."""
    providers = getattr(detector.backend, "providers", None)
    return bool(providers) and providers[0] == "CPUExecutionProvider"


def model_takes_every_core(detector) -> bool:
    """Whether the model's ONNX Runtime CPU threads cover every physical core (its default), so that
    the file outputs should yield to it (file_worker.py). A model on a GPU, or another backend, leaves
    the CPU's priorities alone."""
    if not runs_on_cpu(detector):
        return False
    threads = detector.backend.cpu_threads
    return threads is None or threads >= physical_cores()


def leaves_a_core(model_ms: float, outputs_ms: float, cores: int) -> bool:
    return cores > 1 and outputs_ms > model_ms / (2 * (cores - 1))


def model_ms_per_image(detector, frame: np.ndarray, batch: int) -> float:
    """Inference at the model's input size (the capture threads resize frames beside it)."""
    from dualkd_edge.preprocess import to_model_view

    view = to_model_view(frame, detector.meta.input)
    batch = detector.backend.fixed_batch or batch
    return _fastest_ms(lambda: detector.predict([view] * batch)) / batch


def outputs_ms_per_frame(detector, frame: np.ndarray, encodes: int) -> float:
    """One overlay painted and JPEG-encoded `encodes` times (MP4 and JPEG cost about the same per
    frame: 0.7 and 0.5 ms at 448x556 on the 2-core VM)."""
    import cv2

    from dualkd_edge.pictures.overlay import OverlayPainter

    from dualkd_edge.preprocess import map_to_image

    p = detector.predict([frame])[0]
    painter = OverlayPainter.for_model(detector.meta, detector.name, detector.threshold)

    def paint_and_encode() -> None:
        # the full-size map is made on the output thread too (Prediction.anomaly_map is lazy)
        anomaly_map = map_to_image(p.model_map, p.input_spec, *p.image_size)
        overlay = painter.draw(frame, anomaly_map, p.score, p.is_anomaly, "00.0 FPS")
        for _ in range(encodes):
            cv2.imencode(".jpg", overlay)

    return _fastest_ms(paint_and_encode)
