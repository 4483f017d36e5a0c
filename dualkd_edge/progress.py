"""A dependency-free progress bar (tqdm is not part of the torch-free runtime install)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress line with rate and ETA; redraws in place on a TTY, prints sparse lines otherwise."""

    def __init__(self, total: int, desc: str, unit: str = "it", stream: TextIO | None = None,
                 start: int = 0, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.n = start
        self._start_n = start
        self.enabled = enabled
        self._t0 = time.perf_counter()
        self._last_draw = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        interval = 0.2 if self._tty else 10.0
        if self.n >= self.total or now - self._last_draw >= interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        self._last_draw = now
        elapsed = now - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        frac = min(self.n / self.total, 1.0)
        bar = "#" * int(frac * 20)
        line = (f"{self.desc} [{bar:<20}] {self.n}/{self.total} {rate:.2f} {self.unit}/s "
                f"elapsed {format_seconds(elapsed)} eta {format_seconds(eta)} {self.postfix}")
        if self._tty:
            self.stream.write("\r" + line[:200].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
