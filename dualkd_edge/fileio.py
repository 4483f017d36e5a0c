"""Atomic file writes and robust image reading shared by every stage."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    """The mode a plain open() would give: the replaced file's own, else 0o666 minus the umask.
    mkstemp creates 0o600 files, which would lock out e.g. the service account on a Jetson."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`.

    A crash or Ctrl-C never leaves a half-written artifact under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _final_mode(target))
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


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
    """Read a ground-truth mask as HxW bool (any non-zero pixel is defective)."""
    import cv2

    raw = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE) if raw.size else None
    return None if img is None else img > 0
