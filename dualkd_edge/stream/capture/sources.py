"""Frame sources: image, folder, glob, video file, webcam, RTSP/HTTP URL, GStreamer pipeline, list file."""

from __future__ import annotations

import glob as globlib
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import IMAGE_SUFFIXES, is_image_file

log = logging.getLogger("dualkd_edge")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".mjpeg", ".mjpg")
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


@dataclass
class SourceSpec:
    kind: str  # image | images | video | camera | url | gstreamer | unavailable (a bad line of a list)
    target: str  # what OpenCV opens (path, URL, index, pipeline)
    name: str  # safe to print: credentials removed
    live: bool
    files: tuple[Path, ...] = ()
    problem: str = ""  # kind "unavailable": why, naming the list file and line
    calibration: str | None = None  # a list line `calibration=NAME SOURCE`: this source's calibration

    @property
    def reconnects(self) -> bool:
        return self.live and self.kind in ("url", "camera", "gstreamer")


# A URL's user information: from the scheme to the LAST '@' before the URL ends (whitespace, a
# quote, an angle bracket), so a password holding '@', '/', ':' or '%40' is hidden whole; inside
# quotes (a GStreamer `location="..."`) the URL runs to the closing quote.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s\"'<>]*@")
_QUOTED_URL_USERINFO = re.compile(r"(?P<quote>[\"'])(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\"']*@(?=[^\"']*(?P=quote))")
# Credentials given as key=value: GStreamer's rtspsrc `user-id=` / `user-pw=` properties, the query
# strings of IP cameras (`/video.cgi?user=admin&pwd=...`, `loginuse=`/`loginpas=`), signed URLs
# (`sig=`, `code=`, `signature=`), and an `Authorization=` value with its scheme (`Basic xyz`).
_SECRET_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:user-?pw|user-?id|user(?:name)?|usr|pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|"
    r"access[-_]?token|auth|authorization|login(?:pas|pass|pw|use|user)|sig|signature|code|key|session(?:id)?|"
    r"credentials?|client[-_]?secret|x-amz-[a-z-]+)=)(?P<quote>[\"']?)"
    r"(?:(?<=[\"'])[^\"']*|(?:(?:Basic|Bearer|Digest)\s+)?[^\s&;!\"']*)(?P=quote)")
# RTMP(S) URLs end in the stream key (rtmp://host/app/KEY): everything after the application.
_RTMP_KEY = re.compile(r"(?i)(?P<head>\brtmps?://[^/\s\"']+/[^/\s\"']+/)[^\s\"']+")


def redact(text: str) -> str:
    """Hide every credential in `text`: the user information of every URL in it (also inside
    GStreamer pipelines), RTMP stream keys, and password-, user-, token- and signature-like
    `key=value` settings."""
    text = _QUOTED_URL_USERINFO.sub(lambda m: f"{m['quote']}{m['scheme']}***@", text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    text = _RTMP_KEY.sub(lambda m: f"{m['head']}***", text)
    return _SECRET_VALUE.sub(lambda m: f"{m['key']}{m['quote']}***{m['quote']}", text)


def redact_url(url: str) -> str:
    """A source that is one URL: everything up to its last '@' is user information, even where
    the password holds characters a URL may not (a space)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return redact(f"{scheme}://***@{rest.rsplit('@', 1)[1]}")
    return redact(url)


def warn_about_unencoded_credentials(url: str) -> None:
    """FFmpeg ends a URL's host part at the first '/', '?' or '#', so a password holding one of
    them sends it to a wrong host (and its messages may show part of the password as a host name).
    It decodes %XX in credentials: that is the way to write them."""
    rest = url.partition("://")[2]
    if "@" in rest and any(c in rest.rsplit("@", 1)[0] for c in "/?#"):
        log.warning("SOURCE %s: the part before its last '@' holds '/', '?' or '#'; if that is the password, write "
                    "them as %%2F, %%3F, %%23 (FFmpeg decodes them), or it connects to a wrong host", redact_url(url))


class RedactingFilter(logging.Filter):
    """Hides credentials in every message of the `dualkd_edge` logger, whatever formatted it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


if not any(isinstance(f, RedactingFilter) for f in log.filters):
    log.addFilter(RedactingFilter())


def parse_source(source: str) -> list[SourceSpec]:
    s = source.strip()
    if not s:
        raise UserError("SOURCE: empty")
    if s.isdigit():
        return [SourceSpec("camera", s, f"camera:{s}", live=True)]
    if s.lower().startswith(URL_SCHEMES):
        warn_about_unencoded_credentials(s)
        return [SourceSpec("url", s, redact_url(s), live=True)]
    if " ! " in s and not Path(s).expanduser().exists():  # liveness is learned from GStreamer (stream/gstreamer.py)
        return [SourceSpec("gstreamer", s, redact(f"gstreamer:{s.split('!')[0].strip()}"), live=True)]
    path = Path(s).expanduser()
    if any(c in s for c in "*?[") and not path.exists():
        files = tuple(sorted(Path(p) for p in globlib.glob(s, recursive=True) if Path(p).is_file()))
        if not files:
            raise UserError(f"SOURCE: the pattern {s!r} matches no files")
        return [SourceSpec("images", s, s, live=False, files=files)]
    if not path.exists():
        raise UserError(f"SOURCE: {redact(s)} does not exist (expected an image, folder, glob, video file, camera index, "
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
    """One source per line (# comments). A line that names nothing usable (a missing file, a
    nested list) does not stop the others: it becomes an unavailable source, reported with the
    list file and line like a camera that cannot be opened."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"SOURCE: cannot read the source list {path}: {exc}") from None
    specs: list[SourceSpec] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            calibration, line = split_calibration(line)
            if line.endswith(".txt") and Path(line).expanduser().is_file():
                raise UserError("lists may not nest")
            specs.extend(replace(s, calibration=calibration) for s in parse_source(line))
        except UserError as exc:
            problem = f"{path}:{n}: {redact(str(exc)).removeprefix('SOURCE: ')}"
            log.warning("SOURCE %s", problem)
            specs.append(SourceSpec("unavailable", line, redact_url(line), live=False, problem=problem))
    if not specs:
        raise UserError(f"SOURCE: {path} lists no sources")
    if all(s.kind == "unavailable" for s in specs):
        raise UserError(f"SOURCE: none of the sources in {path} is usable: " + "; ".join(s.problem for s in specs))
    return specs


def split_calibration(line: str) -> tuple[str | None, str]:
    """`calibration=NAME SOURCE` -> (NAME, SOURCE): a station calibration for one source of a list."""
    if not line.startswith("calibration="):
        return None, line
    head, _, rest = line.partition(" ")
    from dualkd_edge.decision.calibrations import check_calibration_name

    name = check_calibration_name(head.removeprefix("calibration="), "calibration=", allow_training=True)
    if not rest.strip():
        raise UserError(f"{head}: names no source after it")
    return name, rest.strip()


def image_files_only(files: tuple[Path, ...]) -> tuple[list[Path], list[Path]]:
    """Split a folder's files into images and the rest (which are skipped with a warning)."""
    images = [f for f in files if is_image_file(f)]
    others = [f for f in files if not is_image_file(f)]
    return images, others
