"""The review folder of `infer --review DIR`: flagged frames kept for an operator's answer.

  DIR/review.json                 which model the frames came from (model_id, input contract), defect types
  DIR/items/ID.json               the decision record (model_id, calibration, scores, source, time, why kept)
  DIR/items/ID.jpg, ID.overlay.jpg   the frame as the camera gave it, and with its heat map
  DIR/labels.jsonl                the answers, appended: {"id", "label": good|defect, "defect_type", "who", "time"}

An item without an answer is in the queue; the last answer to an item counts (a second one says so
in its `replaces` field). Torch-free."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.decision.history import utc_now
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import locked, write_json_atomic

LABELS = ("good", "defect")
ITEM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class Answer:
    id: str
    label: str
    defect_type: str | None
    who: str
    time: str
    replaces: str | None = None  # the earlier answer this one overrides


class ReviewStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.items = self.folder / "items"
        self.labels_file = self.folder / "labels.jsonl"

    # -- the folder and its model ----------------------------------------------------------------------
    def header(self) -> dict:
        path = self.folder / "review.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"--review: {self.folder} is not a review folder (no review.json; made by "
                            "`infer --review DIR`)") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"--review: cannot read {path} ({exc})") from None

    def open_for(self, model_id: str, input_spec: dict, defect_types: list[str]) -> None:
        """Start (or continue) a review folder for this model; one of another model is refused."""
        self.items.mkdir(parents=True, exist_ok=True)
        path = self.folder / "review.json"
        if path.exists():
            self.check_model(model_id, input_spec)
            header = self.header()
            if defect_types and defect_types != header.get("defect_types"):
                header["defect_types"] = defect_types
                write_json_atomic(path, header)
            return
        write_json_atomic(path, {"model_id": model_id, "input": input_spec, "defect_types": defect_types,
                                 "created": utc_now()})

    def check_model(self, model_id: str, input_spec: dict) -> None:
        header = self.header()
        if header.get("model_id") != model_id:
            raise UserError(f"--review: {self.folder} holds frames of model_id {header.get('model_id')}, not "
                            f"{model_id}; use a review folder per model")
        if header.get("input") != input_spec:
            raise UserError(f"--review: {self.folder} was made for another input contract ({header.get('input')})")

    # -- items ---------------------------------------------------------------------------------------
    def item_path(self, item_id: str, suffix: str) -> Path:
        if not ITEM_ID.fullmatch(item_id):
            raise KeyError(item_id)
        return self.items / f"{item_id}{suffix}"

    def add(self, record: dict, image_jpg: bytes, overlay_jpg: bytes) -> None:
        """An item's pictures first, its record last: a record on disk means a complete item."""
        from dualkd_edge.fileio import write_bytes_atomic

        write_bytes_atomic(self.item_path(record["id"], ".jpg"), image_jpg)
        write_bytes_atomic(self.item_path(record["id"], ".overlay.jpg"), overlay_jpg)
        write_json_atomic(self.item_path(record["id"], ".json"), record)

    def record(self, item_id: str) -> dict | None:
        try:
            return json.loads(self.item_path(item_id, ".json").read_text())
        except (KeyError, OSError, ValueError):
            return None

    def records(self) -> list[dict]:
        out = []
        for path in sorted(self.items.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a record being replaced: it is back next time
        return sorted(out, key=lambda r: (r.get("time", 0), r["id"]))

    # -- answers -------------------------------------------------------------------------------------
    def answers(self) -> dict[str, Answer]:
        """The last answer per item."""
        last: dict[str, Answer] = {}
        if not self.labels_file.exists():
            return last
        for line in self.labels_file.read_text().splitlines():
            try:
                a = json.loads(line)
                last[a["id"]] = Answer(a["id"], a["label"], a.get("defect_type"), a.get("who", "?"), a.get("time", ""),
                                       a.get("replaces"))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash
        return last

    def answer(self, item_id: str, label: str, who: str, defect_type: str | None = None) -> Answer:
        if label not in LABELS:
            raise ValueError(f"label: expected one of {', '.join(LABELS)}")
        if self.record(item_id) is None:
            raise KeyError(item_id)
        defect_types = self.header().get("defect_types") or []
        if defect_type is not None and (label != "defect" or defect_type not in defect_types):
            raise ValueError(f"defect_type: expected one of {', '.join(defect_types) or '(none set)'} with label defect")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels_file.touch(exist_ok=True)
        with locked(self.labels_file):
            earlier = self.answers().get(item_id)
            answer = Answer(item_id, label, defect_type, who, utc_now(),
                            replaces=f"{earlier.label} by {earlier.who} at {earlier.time}" if earlier else None)
            line = json.dumps(vars(answer)) + "\n"
            fd = os.open(self.labels_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return answer

    def queue(self, limit: int = 50) -> list[dict]:
        """Unanswered items, oldest first."""
        answered = self.answers()
        return [r for r in self.records() if r["id"] not in answered][:limit]


def images_of(store: ReviewStore, records: list[dict]) -> list[np.ndarray]:
    from dualkd_edge.fileio import read_image

    images = [read_image(store.item_path(r["id"], ".jpg")) for r in records]
    return [img for img in images if img is not None]
