"""Training run directories: the files they hold and their `run.json` metadata (torch-free; the
weights themselves are read by `model/checkpoint.py`)."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_json_atomic
from dualkd_edge.metadata import ArtifactMetadata

WEIGHTS_FILE = "model.safetensors"
META_FILE = "run.json"
TRAIN_STATE_FILE = "train_state.pt"


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_run_metadata(run_dir: Path) -> ArtifactMetadata:
    meta_path = Path(run_dir) / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no {META_FILE}); train one with `dualkd-edge train`")
    return ArtifactMetadata.from_json(meta_path.read_text(), str(meta_path))


def write_run_metadata(run_dir: Path, meta: ArtifactMetadata) -> None:
    write_json_atomic(Path(run_dir) / META_FILE, meta.to_dict())
