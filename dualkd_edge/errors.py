"""User-facing errors: the CLI prints them as one line and exits non-zero, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us (a path, an argument, a file's content).

    The message names the file or argument and what was expected.
    """

    exit_code = 2


class MissingDependencyError(UserError):
    """An optional dependency (torch, TensorRT, matplotlib...) that this command needs is absent."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM (what `systemctl stop` sends) arrived. The CLI raises it in the main thread so that
    the run unwinds as it does for Ctrl-C: `finally` blocks remove hidden staging files, training
    writes a checkpoint. A BaseException, so that no `except Exception` swallows it."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process ended by it
