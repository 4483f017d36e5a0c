"""Where a command's results go: checked before the work starts, kept when a late write fails.

- `check_outputs(...)`: before a command does its work (a 20-minute `train` or `eval`), every
  output location must be writable: no folder where a file is expected (or the reverse), no parent
  that is a file, a writable filesystem, room for a first block, and no output that is one of the
  command's own inputs (`quantize m.onnx --out m.onnx`, `calib-sample data/ --out data/`).
- `write_result(...)` / `ResultWrites`: the results are written at the end; a file that cannot be
  written then (disk full, remounted read-only) is not lost: its content goes to a fallback file
  in the temporary folder, the other results are still written, and one error names each failed
  path and where its content was kept.
- `describe_os_error(...)`: any OSError as one line naming the path (the CLI's last line of defence).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Union

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import is_image_file, write_bytes_atomic

PROBE_BYTES = 64 * 1024  # a first block of output must fit, or the disk is as good as full
# Files a run directory consists of: an output may not land on one of an input run's files.
RUN_FILES = ("model.safetensors", "run.json", "train_state.pt")

PathsArg = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]], None]


class ResultNotWritten(UserError):
    """A result file could not be written after the work was done; the message says where its
    content was kept instead."""


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """`<path>: <reason>` (both paths for a rename), one line."""
    reason = os_reason(exc)
    if exc.filename is None:
        return reason
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}"


# -- before the work ---------------------------------------------------------------------------

def check_outputs(files: Mapping[str, PathsArg] | None = None, folders: Mapping[str, PathsArg] | None = None,
                  appends: Mapping[str, PathsArg] | None = None, inputs: Mapping[str, PathsArg] | None = None) -> None:
    """Refuse, with one UserError naming the option and path, what would fail or destroy an input
    once the work is done. `files` are replaced atomically, `folders` are created or filled,
    `appends` are files written at their end (JSONL); `inputs` maps an argument name to its paths."""
    outputs = [(option, Path(p), kind) for kind, group in (("file", files), ("folder", folders), ("append", appends))
               for option, paths in (group or {}).items() for p in _paths(paths)]
    for option, path, kind in outputs:
        _check_writable(option, path, kind)
    _refuse_inputs(outputs, inputs or {})
    for i, (opt_a, a, _) in enumerate(outputs):
        for opt_b, b, _ in outputs[i + 1:]:
            if _same_path(a, b):
                raise UserError(f"{opt_b}: {b} is also {opt_a}; give each output its own path")


def _paths(arg: PathsArg) -> list[Path]:
    if arg is None:
        return []
    if isinstance(arg, (str, os.PathLike)):
        return [Path(arg)]
    return [Path(p) for p in arg if p is not None]


def _check_writable(option: str, path: Path, kind: str) -> None:
    if kind == "folder":
        if path.exists() and not path.is_dir():
            raise UserError(f"{option}: {path} is a file; expected a folder")
        folder = path
    else:
        if path.is_dir():
            raise UserError(f"{option}: {path} is a folder; expected a file name")
        if kind == "file" and path.exists() and not path.is_file():  # appending to /dev/null is fine
            raise UserError(f"{option}: {path} is a device, pipe or socket; expected a file name")
        folder = path.parent
    existing = _nearest_existing(option, path, folder)
    if kind == "append" and path.exists():
        try:  # appending needs the file writable, not its folder
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise UserError(f"{option}: cannot append to {path}: {os_reason(exc)}") from None
        return
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option}: {path} is read-only; make it writable or write elsewhere")
    _probe(option, path, existing)


def _nearest_existing(option: str, path: Path, folder: Path) -> Path:
    """The folder itself, or the closest ancestor that exists (the folders between are created)."""
    current = folder if str(folder) else Path(".")
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise UserError(f"{option}: cannot write {path}: {current} is a file, not a folder")
    return current


def _probe(option: str, path: Path, folder: Path) -> None:
    """Create, fill with one block and remove a hidden file in `folder` (named like our staging
    files, so even a kill -9 in between leaves nothing that is not swept later)."""
    probe = folder / f".{path.name or 'output'}.tmp-{os.getpid()}-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            block = bytes(PROBE_BYTES)
            written = 0
            while written < len(block):
                written += os.write(fd, block[written:])
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{option}: cannot write {path}: {os_reason(exc)}") from None


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(child: Path, folder: Path) -> bool:
    return os.path.realpath(child).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep)


def _refuse_inputs(outputs: list[tuple[str, Path, str]], inputs: Mapping[str, PathsArg]) -> None:
    for option, out, kind in outputs:
        for name, paths in inputs.items():
            for source in _paths(paths):
                if _same_path(out, source):
                    raise UserError(f"{option}: {out} is {name} itself; write to another "
                                    f"{'folder' if kind == 'folder' else 'file'}")
                part_of_input = out.is_file() and (is_image_file(out) or out.name in RUN_FILES)
                if kind != "folder" and source.is_dir() and part_of_input and _inside(out, source):
                    raise UserError(f"{option}: {out} is a file of {name} ({source}); write to a file outside it")


# -- after the work ----------------------------------------------------------------------------

def fallback_path(target: Path) -> Path:
    """Where a result that could not be written to `target` is kept: the temporary folder
    ($TMPDIR), one folder per process."""
    return Path(tempfile.gettempdir()) / f"dualkd-edge-kept-{os.getpid()}" / Path(target).name


def keep_elsewhere(target: Path, write: Callable[[Path], object]) -> str:
    """Write the result to its fallback path; say where it went (or that it could not be kept)."""
    fallback = fallback_path(target)
    try:
        fallback.parent.mkdir(parents=True, exist_ok=True)
        write(fallback)
    except OSError as exc:
        return f"it could not be kept elsewhere either ({describe_os_error(exc)})"
    return f"it was kept in {fallback}"


def not_written(option: str, target: Path, exc: OSError, kept: str = "") -> ResultNotWritten:
    return ResultNotWritten(f"{option}: could not write {target} ({os_reason(exc)})" + (f"; {kept}" if kept else ""))


def write_result(target: str | os.PathLike, data: bytes, option: str) -> None:
    """Write a result file atomically; when that fails, keep its content in the fallback folder
    and raise ResultNotWritten saying where."""
    target = Path(target)
    try:
        write_bytes_atomic(target, data)
    except OSError as exc:
        raise not_written(option, target, exc, keep_elsewhere(target, lambda p: write_bytes_atomic(p, data))) from None


@contextmanager
def writing(option: str, target: Path) -> Iterator[None]:
    """A file that is produced, not computed and kept (an export, a quantized model): an OSError
    while writing it (a disk that filled up meanwhile) is one error naming the option and the file
    the user asked for, not our hidden staging name; what was at `target` before is untouched."""
    existed = Path(target).exists()
    try:
        yield
    except OSError as exc:
        kept = f"{target} was left as it was" if existed else "no file was left there"
        raise UserError(f"{option}: could not write {target} ({os_reason(exc)}); {kept}") from None


class ResultWrites:
    """Runs a command's result writes so that one that fails does not stop the others, then
    raises one error naming every failure."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def run(self, write: Callable[[], object]) -> None:
        try:
            write()
        except ResultNotWritten as exc:
            self.failures.append(str(exc))

    def finish(self) -> None:
        if self.failures:
            raise ResultNotWritten("; ".join(self.failures))
