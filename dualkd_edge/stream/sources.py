"""Frame sources: image, folder, glob, video file, webcam, RTSP/HTTP URL, GStreamer pipeline, list file."""

from __future__ import annotations

import glob as globlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import IMAGE_SUFFIXES, is_image_file

log = logging.getLogger("dualkd_edge")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".mjpeg", ".mjpg")
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


@dataclass
class SourceSpec:
    kind: str  # image | images | video | camera | url | gstreamer
    target: str  # what OpenCV opens (path, URL, index, pipeline)
    name: str  # safe to print: credentials removed
    live: bool
    files: tuple[Path, ...] = ()

    @property
    def reconnects(self) -> bool:
        return self.live and self.kind in ("url", "camera", "gstreamer")


def redact(text: str) -> str:
    """Remove user:password@ from URLs so credentials never reach logs or files."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


def parse_source(source: str) -> list[SourceSpec]:
    s = source.strip()
    if not s:
        raise UserError("SOURCE: empty")
    if s.isdigit():
        return [SourceSpec("camera", s, f"camera:{s}", live=True)]
    if s.lower().startswith(URL_SCHEMES):
        return [SourceSpec("url", s, redact(s), live=True)]
    if " ! " in s and not Path(s).expanduser().exists():  # liveness is learned from GStreamer (stream/gstreamer.py)
        return [SourceSpec("gstreamer", s, redact(f"gstreamer:{s.split('!')[0].strip()}"), live=True)]
    path = Path(s).expanduser()
    if any(c in s for c in "*?[") and not path.exists():
        files = tuple(sorted(Path(p) for p in globlib.glob(s, recursive=True) if Path(p).is_file()))
        if not files:
            raise UserError(f"SOURCE: the pattern {s!r} matches no files")
        return [SourceSpec("images", s, s, live=False, files=files)]
    if not path.exists():
        raise UserError(f"SOURCE: {s} does not exist (expected an image, folder, glob, video file, camera index, "
                        "rtsp:// or http:// URL, GStreamer pipeline or a .txt list of sources)")
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        if not files:
            raise UserError(f"SOURCE: folder {path} is empty")
        return [SourceSpec("images", str(path), str(path), live=False, files=files)]
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return parse_source_list(path)
    if suffix in IMAGE_SUFFIXES:
        return [SourceSpec("image", str(path), str(path), live=False, files=(path,))]
    if suffix in VIDEO_SUFFIXES:
        return [SourceSpec("video", str(path), str(path), live=False)]
    raise UserError(f"SOURCE: {path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                    f"({', '.join(VIDEO_SUFFIXES)}) nor a .txt list of sources")


def parse_source_list(path: Path) -> list[SourceSpec]:
    specs: list[SourceSpec] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith(".txt") and Path(line).expanduser().is_file():
            raise UserError(f"SOURCE: {path}:{n}: lists may not nest")
        specs.extend(parse_source(line))
    if not specs:
        raise UserError(f"SOURCE: {path} lists no sources")
    return specs


def image_files_only(files: tuple[Path, ...]) -> tuple[list[Path], list[Path]]:
    """Split a folder's files into images and the rest (which are skipped with a warning)."""
    images = [f for f in files if is_image_file(f)]
    others = [f for f in files if not is_image_file(f)]
    return images, others
