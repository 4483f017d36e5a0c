"""What a model costs a station beyond its latency: the peak resident memory of a process that runs
it, and the time from starting that process to its first decision (the time a station needs to come
back after a restart). Each figure comes from a fresh process (`python -m dualkd_edge.bench.footprint
MODEL`), the way `infer` starts: import, open the model, score one camera-sized frame.

`cold` is the first launch in this bench and `warm` the median of the next ones; the OS file cache is
not dropped (that needs root), so `cold` is what a restart costs when the files were read recently,
not after a power cycle."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WARM_RUNS = 2
SCORED_AFTER_FIRST = 20  # inferences after the first decision, so the peak includes steady running


def measure(model: Path, providers: list[str] | None, threads: int | None) -> dict:
    """Launch the footprint process 1 + WARM_RUNS times; the figures of the model."""
    runs = [_launch(model, providers, threads) for _ in range(1 + WARM_RUNS)]
    return {"first_decision_cold_s": round(runs[0]["first_decision_s"], 3),
            "first_decision_warm_s": round(statistics.median(r["first_decision_s"] for r in runs[1:]), 3),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
            "rss_after_first_decision_mib": round(statistics.median(r["rss_first_mib"] for r in runs), 1)}


def _launch(model: Path, providers: list[str] | None, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "dualkd_edge.bench.footprint", str(model), json.dumps(providers), str(threads or 0)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{model}: the footprint process failed ({tail})")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["first_decision_s"] = report.pop("decided_at") - started
    return report


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB; NaN elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    """VmHWM, the peak RSS of this process's own memory. Not getrusage's ru_maxrss: Linux carries
    that over from the parent across fork + exec, so every child would report at least the bench's
    own size."""
    return _status_mib("VmHWM")


def _child(model: str, providers: list[str] | None, threads: int) -> None:
    import numpy as np

    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.detector import Detector

    det = Detector.load(Path(model), options=LoadOptions(providers=providers, threads=threads or None))
    frame = np.full((480, 640, 3), 128, np.uint8)  # a VGA camera frame: resize and crop included
    det.predict([frame])
    decided_at = time.time()
    rss_first = _status_mib("VmRSS")
    for _ in range(SCORED_AFTER_FIRST):
        det.predict([frame])
    print(json.dumps({"decided_at": decided_at, "rss_first_mib": rss_first, "peak_rss_mib": _peak_rss_mib()}))


if __name__ == "__main__":
    _child(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
