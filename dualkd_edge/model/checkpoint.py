"""Run directories: weights as safetensors + run.json metadata, both written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from dualkd_edge.artifacts.run_dirs import (
    TRAIN_STATE_FILE,
    WEIGHTS_FILE,
    is_run_dir,
    read_run_metadata,
    write_run_metadata,
)
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path
from dualkd_edge.metadata import ArtifactMetadata
from dualkd_edge.model.dual_student import (
    DualStudentModel,
    InferenceModel,
    NoisyOrScoring,
)
from dualkd_edge.presets import Preset

__all__ = ["is_run_dir", "load_run", "read_run_metadata", "save_run", "inference_model", "load_train_state",
           "save_train_state"]


def save_run(run_dir: Path, model: DualStudentModel, meta: ArtifactMetadata) -> None:
    from safetensors.torch import save_file

    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_run_metadata(run_dir, meta)


def load_run(run_dir: Path, device: str = "cpu") -> tuple[DualStudentModel, ArtifactMetadata]:
    from safetensors.torch import load_file

    meta = read_run_metadata(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{run_dir}: {WEIGHTS_FILE} is missing (was training interrupted before the first checkpoint?)")
    model = DualStudentModel(Preset.from_dict(meta.preset))
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{weights}: weights do not match the run's preset ({str(exc)[:200]})") from None
    return model.to(device).eval(), meta


def inference_model(model: DualStudentModel, meta: ArtifactMetadata, input_dtype: str = "float") -> InferenceModel:
    scoring = NoisyOrScoring(model.preset, meta.calibration).to(model.semantic_centre.device)
    return InferenceModel(model, scoring, input_dtype).eval()


def save_train_state(run_dir: Path, state: dict) -> None:
    with atomic_path(run_dir / TRAIN_STATE_FILE) as tmp:
        torch.save(state, str(tmp))


def load_train_state(run_dir: Path) -> dict:
    path = run_dir / TRAIN_STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume: {path} not found; nothing to resume")
    return torch.load(str(path), map_location="cpu", weights_only=True)
