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
