"""Hot swap: a running `infer` takes a model or calibration replaced on disk.

Deployment tools (and `calibrate`, `eval --tune-threshold`) replace a model by atomic rename, so a
reader never sees half a file. A watcher thread polls the model's files (inode, size, mtime) every
half second; on a change, or on SIGHUP, it loads the new artifact off the inference thread, checks it
(same input contract, the calibrations the run needs, a finite warm-up inference) and hands it over;
the stream switches between two batches, so no frame is dropped or reordered. A replacement that
cannot be loaded or checked is refused with one log line, and the running model stays."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("dualkd_edge")

POLL_S = 0.5


def file_signature(path: Path) -> tuple:
    """What changes when any file of the artifact is replaced or rewritten (through symlinks)."""
    from dualkd_edge.artifacts.kinds import ENGINE_SUFFIXES

    path = Path(path)
    if path.is_dir():
        from dualkd_edge.artifacts.run_dirs import META_FILE, WEIGHTS_FILE

        files = [path / META_FILE, path / WEIGHTS_FILE]
    elif path.suffix.lower() in ENGINE_SUFFIXES:
        from dualkd_edge.artifacts.engines import sidecar_path

        files = [path, sidecar_path(path)]
    else:
        files = [path]
    signature = []
    for f in files:
        try:
            st = os.stat(f)
            signature.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def warm_up(detector, batch: int = 1, check: bool = True) -> None:
    """One inference on grey frames (`batch` of them, the size the run will use): a replacement must
    run and give finite scores, and a run's first camera frame must not wait for the session's set-up."""
    spec = detector.meta.input
    h, w = spec.resize_hw
    if detector.backend.fixed_batch:
        batch = detector.backend.fixed_batch
    pred = detector.predict([np.full((h, w, 3), 128, np.uint8)] * batch)[0]
    if check and (not np.isfinite(pred.score_logit) or not np.isfinite(pred.anomaly_map).all()):
        raise ValueError("its warm-up inference gave NaN or infinity")


class ModelWatcher:
    """`take()` returns a checked replacement once (the caller closes the detector it replaces)."""

    def __init__(self, path: Path, load: Callable[[], object], check: Callable[[object], None],
                 describe_running: Callable[[], str], interval: float = POLL_S) -> None:
        self.path = Path(path)
        self.load, self.check, self.describe_running = load, check, describe_running
        self.interval = interval
        self._seen = file_signature(self.path)
        self._pending = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self.refused: list[str] = []
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def request_reload(self) -> None:
        """Load the model again now, changed or not (SIGHUP)."""
        self._force = True
        self._wake.set()

    def take(self):
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        leftover = self.take()
        if leftover is not None:
            leftover.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            signature = file_signature(self.path)
            if signature == self._seen and not self._force:
                continue
            forced, self._force = self._force, False
            if None in signature:  # mid-deployment (a file not there yet): look again next time
                continue
            self._seen = signature
            self._try_load("reload requested (SIGHUP)" if forced else "changed on disk")

    def _try_load(self, why: str) -> None:
        try:
            candidate = self.load()
        except Exception as exc:  # noqa: BLE001 - whatever the file holds, the line keeps running
            self._refuse(why, exc)
            return
        try:
            self.check(candidate)
            warm_up(candidate)
        except Exception as exc:  # noqa: BLE001
            candidate.close()
            self._refuse(why, exc)
            return
        with self._lock:
            older, self._pending = self._pending, candidate
        if older is not None:
            older.close()

    def _refuse(self, why: str, exc: Exception) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        message = f"model {self.path} {why}: replacement refused ({reason}); still running {self.describe_running()}"
        self.refused.append(message)
        log.error("%s", message)
