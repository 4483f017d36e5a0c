"""Where results go: JSONL lines (flushed as they go), overlay images, overlay videos, a window."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_image_atomic


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "source"


class JsonlSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", buffering=1)  # line-buffered: every frame is on disk at once

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class ImageSink:
    """Overlay images (JPEG) and optionally the binary defect mask of each (PNG 0/255, the frame's
    size) beside it as `<name>_mask.png`."""

    def __init__(self, folder: Path, mode: str) -> None:
        self.folder = folder
        self.mode = mode
        folder.mkdir(parents=True, exist_ok=True)

    def selects(self, is_anomaly: bool) -> bool:
        return self.mode == "all" or (self.mode == "anomalies" and is_anomaly)

    def write(self, overlay: np.ndarray, source_index: int, source_name: str, frame_index: int, is_anomaly: bool,
              mask: np.ndarray | None = None) -> None:
        if not self.selects(is_anomaly):
            return
        stem = f"{source_index:02d}_{safe_name(Path(source_name).stem)}_{frame_index:06d}{'_NG' if is_anomaly else ''}"
        write_image_atomic(self.folder / f"{stem}.jpg", overlay)
        if mask is not None:
            write_image_atomic(self.folder / f"{stem}_mask.png", mask)


class VideoSink:
    """One overlay video per source, written under a temporary name and renamed when closed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.writers: dict[int, tuple] = {}

    def write(self, overlay: np.ndarray, source_index: int, source_name: str, fps: float | None) -> None:
        import cv2

        if source_index not in self.writers:
            final = self.folder / f"{source_index:02d}_{safe_name(Path(source_name).stem)}.mp4"
            tmp = final.with_name(f".{final.name}.partial.mp4")
            h, w = overlay.shape[:2]
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps or 10.0, (w, h))
            if not writer.isOpened():
                raise UserError(f"--save-video: OpenCV cannot write {final}")
            self.writers[source_index] = (writer, tmp, final, (w, h))
        writer, _, _, size = self.writers[source_index]
        if overlay.shape[1::-1] != size:  # frames of a folder may differ in size
            overlay = cv2.resize(overlay, size)
        writer.write(overlay)

    def close(self) -> list[Path]:
        done = []
        for writer, tmp, final, _ in self.writers.values():
            writer.release()
            os.replace(tmp, final)
            done.append(final)
        self.writers.clear()
        return done


class WindowSink:
    def __init__(self) -> None:
        import cv2

        try:
            cv2.namedWindow("dualkd-edge", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError("--show: this OpenCV build has no GUI (opencv-python-headless); "
                            "install opencv-python or use --save-video") from None

    def write(self, overlay: np.ndarray) -> bool:
        """Show the frame; False when the user pressed q or Esc."""
        import cv2

        cv2.imshow("dualkd-edge", overlay)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()
