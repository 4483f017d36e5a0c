"""Where results go. Every sink takes a `FrameResult` in `write` and says what it wrote in `close`:
JSONL lines (flushed as they go), overlay images (+ masks), overlay videos, a window. Sinks that
show pictures come first in a run, the ones that record decisions after them (see pipeline.py)."""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import staging_path, sweep_stale_staging, write_image_atomic
from dualkd_edge.stream.results import FrameResult


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "source"


def new_run_id() -> str:
    """Names one stream run in its JSONL lines and summary: UTC start time and process id."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


class Sink:
    """The protocol: `write(result)` per frame, `close()` once, returning the files it produced.
    An OSError from either (disk full, ...) stops the run; what was written before stays valid."""

    shows_pictures = False  # True: it asks results for their overlay
    stop_requested = False  # a sink may ask the run to stop (e.g. q pressed in the window)
    delivery = None  # DeliveryStats of sinks that send decisions to other machines (delivery.py)
    option = ""  # the CLI option it serves, for messages
    # True: written by the file-output thread (file_worker.py), not between two inferences. A sink of
    # your own runs on the inference thread unless it says so: it sees each frame before the next is
    # scored and may stop the run at an exact frame.
    off_thread = False

    def write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def close(self) -> list[str]:
        return []


class JsonlSink(Sink):
    """One JSON line per frame, appended and handed to the OS at once. Every line starts with the
    run's `run_id`, so runs appended to one file stay apart. A line that cannot be written whole
    (disk full) is taken back: the file only ever holds complete lines."""

    option = "--jsonl"
    off_thread = True

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.run_id = run_id or new_run_id()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.lines = 0
        if not self._ends_cleanly():
            self._append(b"\n")  # keep our first line apart from one an older, killed run left unfinished

    def _ends_cleanly(self) -> bool:
        size = os.fstat(self.fd).st_size
        if size == 0:
            return True
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def _append(self, data: bytes) -> None:
        start = os.fstat(self.fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            os.ftruncate(self.fd, start)  # no half line
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def write(self, result: FrameResult) -> None:
        self._append((json.dumps({"run_id": self.run_id, **result.record()}) + "\n").encode())
        self.lines += 1

    def close(self) -> list[str]:
        os.close(self.fd)
        return [str(self.path)]


class ImageSink(Sink):
    """Overlay images (JPEG) and optionally the binary defect mask of each (PNG 0/255, the frame's
    size) beside it as `<name>_mask.png`."""

    shows_pictures = True
    option = "--save-images"
    off_thread = True

    def __init__(self, folder: Path, mode: str, masks: bool = False) -> None:
        self.folder = folder
        self.mode = mode
        self.masks = masks
        folder.mkdir(parents=True, exist_ok=True)

    def selects(self, is_anomaly: bool) -> bool:
        return self.mode == "all" or (self.mode == "anomalies" and is_anomaly)

    def write(self, result: FrameResult) -> None:
        ng = result.prediction.is_anomaly
        if not self.selects(ng):
            return
        f = result.frame
        stem = f"{f.source:02d}_{safe_name(Path(f.source_name).stem)}_{f.index:06d}{'_NG' if ng else ''}"
        write_image_atomic(self.folder / f"{stem}.jpg", result.overlay())
        if self.masks:
            write_image_atomic(self.folder / f"{stem}_mask.png", result.defect_mask())


class VideoSink(Sink):
    """One overlay video per source, written under a temporary name and renamed when closed.
    OpenCV's writer says nothing when the disk fills up: a full disk is checked at every frame, and
    a video is renamed into place only once it reads back with every frame written."""

    shows_pictures = True
    option = "--save-video"
    off_thread = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        sweep_stale_staging(folder)
        self.writers: dict[int, tuple] = {}
        self.frames: dict[int, int] = {}  # per source: frames handed to its writer

    def write(self, result: FrameResult) -> None:
        import cv2

        overlay = result.overlay()
        index = result.frame.source
        if index not in self.writers:
            final = self.folder / f"{index:02d}_{safe_name(Path(result.source_label).stem)}.mp4"
            tmp = staging_path(final, "partial")
            h, w = overlay.shape[:2]
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), result.source_fps or 10.0, (w, h))
            if not writer.isOpened():
                raise UserError(f"--save-video: OpenCV cannot write {final}")
            self.writers[index] = (writer, tmp, final, (w, h))
            self.frames[index] = 0
        writer, _, final, size = self.writers[index]
        if overlay.shape[1::-1] != size:  # frames of a folder may differ in size
            overlay = cv2.resize(overlay, size)
        if os.statvfs(self.folder).f_bavail == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))
        writer.write(overlay)
        self.frames[index] += 1

    def close(self) -> list[str]:
        done, broken = [], []
        for index, (writer, tmp, final, _) in self.writers.items():
            writer.release()
            if readable_frames(tmp) == self.frames[index]:
                os.replace(tmp, final)
                done.append(str(final))
            else:
                tmp.unlink(missing_ok=True)
                broken.append(final)
        self.writers.clear()
        if broken:
            raise OSError(errno.EIO, "the video could not be written whole (is the disk full?) and was removed",
                          ", ".join(map(str, broken)))
        return done


def readable_frames(video: Path) -> int:
    """How many frames a finished video file announces (0 when it does not open)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


class WindowSink(Sink):
    shows_pictures = True

    def __init__(self) -> None:
        import cv2

        try:
            cv2.namedWindow("dualkd-edge", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError("--show: this OpenCV build has no GUI (opencv-python-headless); "
                            "install opencv-python or use --save-video") from None

    def write(self, result: FrameResult) -> None:
        """Show the frame; q or Esc asks the run to stop."""
        import cv2

        cv2.imshow("dualkd-edge", result.overlay())
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> list[str]:
        import cv2

        cv2.destroyAllWindows()
        return []
