"""Atomic file writes, our hidden staging names (and sweeping those a killed process left), a
lock for read-modify-write of one file, and robust image reading shared by every stage."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("dualkd_edge")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Every hidden file or folder we write before renaming it into place is named
# `.<stem>.<role>-<pid>[-<random>][<suffix>...]`, so that one left by a killed process (kill -9,
# power loss) can be told from anything else and swept on the next write to its folder.
STAGING_ROLES = ("tmp", "unverified", "candidate", "partial", "staging", "retired")
_STAGING = re.compile(r"^\..+\.(?:%s)-(?P<pid>\d+)(?:-[a-z0-9_]+)?(?:\.[A-Za-z0-9]+)*$" % "|".join(STAGING_ROLES))
# The names dualkd-edge used before the pid was part of them (swept when older than this process).
_LEGACY_STAGING = re.compile(r"^\..+\.(?:[a-z0-9_]{8}\.tmp|unverified(?:\.[A-Za-z0-9]+)*|candidate\.onnx|partial\.mp4)$")
PROCESS_START = time.time()  # a staging file older than this process cannot be one it is writing
_swept: set[str] = set()


def staging_path(target: str | os.PathLike, role: str) -> Path:
    """The hidden name beside `target` that this process stages it under: `m.onnx` ->
    `.m.candidate-<pid>.onnx` (the suffix is kept: some tools choose the format by it)."""
    target = Path(target)
    assert role in STAGING_ROLES, role
    return target.with_name(f".{target.stem}.{role}-{os.getpid()}{target.suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_staging(path: Path) -> bool:
    """One of our staging names, left by a process that is gone: written before this process
    started, and (for the current naming) by a pid that no longer runs."""
    legacy = _LEGACY_STAGING.match(path.name)
    current = _STAGING.match(path.name)
    if not (legacy or current):
        return False
    try:
        if path.lstat().st_mtime >= PROCESS_START:
            return False
    except FileNotFoundError:
        return False
    return legacy is not None or not _pid_alive(int(current["pid"]))


def sweep_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove staging files/folders of our own naming that a killed process left in `folder`
    (once per folder and process). Never touches anything else."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(".") or not is_stale_staging(entry):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    if removed:
        log.info("removed %d staging file(s) left by an interrupted run in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed[:5]))
    return removed


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _take_over_attributes(tmp: Path, target: Path) -> None:
    """Give `tmp` what a plain overwrite of `target` would keep: its mode (else 0o666 minus the
    umask: mkstemp creates 0o600 files, which would lock out e.g. a service account on a Jetson)
    and, where we may set them, its owner and group."""
    try:
        st = target.stat()
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())
        return
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    mine = tmp.stat()
    if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:  # not root: keep at least the group where we belong to it
            try:
                os.chown(tmp, -1, st.st_gid)
            except PermissionError:
                pass


def _naming(target: Path, exc: OSError) -> OSError:
    """The same error, naming the file the user asked for rather than our hidden temporary one."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`.

    A crash or Ctrl-C never leaves a half-written artifact under the final name; a replaced file
    keeps its mode and (where permitted) its owner. Like a plain open(), a symlink is written
    through (`latest.json -> v3.json` replaces v3.json, the link stays); a device, pipe or socket
    (`/dev/null`, `/dev/stdout`) is never replaced by a file.
    """
    target = Path(os.path.realpath(target)) if Path(target).is_symlink() else Path(target)
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise OSError(errno.EINVAL, "not a regular file (a device, pipe or socket); name a file", str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_staging(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _naming(target, exc) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _take_over_attributes(tmp_path, target)
        os.replace(tmp_path, target)
    except OSError as exc:
        raise _naming(target, exc) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of `path`, which is replaced atomically meanwhile:
    the lock is taken on the file the path names *now* (a waiter that wakes up on a file another
    process has since replaced takes the lock again on the new one), so an update is never lost."""
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, now = os.fstat(fd), os.stat(path)
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj: Any) -> bytes:
    """How every JSON artifact and report is written: indented, one trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(target, json_bytes(obj))


def write_image_atomic(target: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 90) -> None:
    """Encode by the file's suffix (.png, .jpg) and write atomically."""
    import cv2

    suffix = Path(target).suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"{target}: OpenCV could not encode the image as {suffix}")
    write_bytes_atomic(target, buf.tobytes())


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Read an image as HxWx3 uint8 BGR; None when the file is not a decodable image."""
    import cv2

    from dualkd_edge.preprocess import ensure_bgr

    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if raw.size == 0:
        return None
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    try:
        return ensure_bgr(img, from_file=True)
    except ValueError:
        return None


def read_mask(path: str | os.PathLike) -> np.ndarray | None:
    """Read a ground-truth mask as HxW bool (any non-zero pixel is defective); None when the file
    is missing, empty or not a decodable image."""
    import cv2

    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE) if raw.size else None
    return None if img is None else img > 0
