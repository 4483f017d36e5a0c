"""Ctrl-C and SIGTERM for commands that can stop cleanly part-way (a stream, a training run).

Elsewhere the CLI turns SIGTERM into an exception that unwinds like Ctrl-C (cli.main), so staging
files are removed; these commands instead finish the unit of work in flight (the frames being
scored, the optimisation step) and then stop, keeping everything they wrote valid."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger("dualkd_edge")

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, what a shell reports


@contextmanager
def stop_on_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """SIGINT and SIGTERM (what `systemctl stop` sends) call `stop(signal name)` instead of
    interrupting whatever runs at that moment."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, _frame) -> None:  # noqa: ANN001 - the signal module's signature
        name = signal.Signals(signum).name
        log.warning("received %s: stopping after the work in flight", name)
        stop(name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def reload_on_sighup(reload: Callable[[], None] | None) -> Iterator[None]:
    """SIGHUP (`systemctl reload`, `kill -HUP`) calls `reload()`: load the model file again."""
    if reload is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield
        return

    def handle(_signum, _frame) -> None:  # noqa: ANN001 - the signal module's signature
        log.info("received SIGHUP: loading the model again")
        reload()

    previous = signal.signal(signal.SIGHUP, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
