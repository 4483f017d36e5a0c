"""Progress of long loops (training, evaluation): a rich progress bar on a terminal, a plain line
every 10 s otherwise (logs of CI jobs and services stay readable and small)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_INTERVAL_S = 10.0


class Progress:
    """`update(n, postfix)` as work is done; `total` may change (a training fitted to a time budget)."""

    def __init__(self, total: int, desc: str, unit: str = "it", stream: TextIO | None = None,
                 start: int = 0, enabled: bool = True) -> None:
        self.desc, self.unit = desc, unit
        self.stream = stream or sys.stderr
        self.n = start
        self._total = max(total, 1)
        self._start_n = start
        self._t0 = self._last_line = time.perf_counter()
        self._bar = None
        self.postfix = ""
        self.enabled = enabled
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                     console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task(desc, total=self._total, completed=start, postfix="")
            self._bar.start()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = max(value, 1)
        if self._bar is not None:
            self._bar.update(self._task, total=self._total)

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self._bar is not None:
            self._bar.update(self._task, advance=n, postfix=self.postfix)
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last_line >= LOG_INTERVAL_S or self.n >= self._total):
            self._last_line = now
            elapsed = now - self._t0
            rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
            eta = (self._total - self.n) / rate if rate > 0 else 0.0
            self.stream.write(f"{self.desc} {self.n}/{self._total} {rate:.2f} {self.unit}/s elapsed {elapsed:.0f} s "
                              f"eta {eta:.0f} s {self.postfix}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
