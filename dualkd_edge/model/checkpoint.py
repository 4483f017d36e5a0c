"""Run directories: weights as safetensors + run.json metadata, both written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from dualkd_edge.artifacts.run_dirs import (
    META_FILE,
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
        try:
            save_file(state, str(tmp))
        except Exception as exc:  # noqa: BLE001 - safetensors reports a failed write as its own error type
            found = re.search(r"os error (\d+)", str(exc))
            if found is None:
                raise
            raise OSError(int(found[1]), os.strerror(int(found[1])), str(tmp)) from exc
    write_run_metadata(run_dir, meta)


def load_run(run_dir: Path, device: str = "cpu") -> tuple[DualStudentModel, ArtifactMetadata]:
    from safetensors.torch import load_file

    meta = read_run_metadata(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{run_dir}: {WEIGHTS_FILE} is missing (was training interrupted before the first checkpoint?)")
    preset = Preset.from_dict(meta.preset, str(run_dir / META_FILE))
    check_weights_fit_preset(preset, weights, run_dir / META_FILE)
    model = DualStudentModel(preset)
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors reports a cut-short file in several ways
        raise UserError(f"{weights}: not a readable weights file ({str(exc)[:160]}); it may be truncated "
                        "(an interrupted copy, a full disk)") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{weights}: weights do not match the run's preset ({str(exc)[:200]})") from None
    return model.to(device).eval(), meta


def check_weights_fit_preset(preset: Preset, weights: Path, meta_file: Path) -> None:
    """The preset in run.json against the tensor shapes in the weights file's header, on a model built
    on the meta device (no memory): a damaged or hostile preset is refused before anything is allocated."""
    from dualkd_edge.artifacts.checks import safetensors_shapes

    stored = safetensors_shapes(weights)
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in DualStudentModel(preset).state_dict().items()}
    wrong = [k for k in expected if k in stored and stored[k] != expected[k]]
    missing = sorted(set(expected) - set(stored))
    if wrong or missing:
        k = wrong[0] if wrong else missing[0]
        found = f"holds {stored[k]}" if k in stored else "lacks it"
        raise UserError(f"{meta_file}: its preset does not match {weights.name} ({k}: the preset makes "
                        f"{expected[k]}, the file {found}); the run's files do not belong together")


def inference_model(model: DualStudentModel, meta: ArtifactMetadata, input_dtype: str = "float") -> InferenceModel:
    scoring = NoisyOrScoring(model.preset, meta.calibration).to(model.semantic_centre.device)
    return InferenceModel(model, scoring, input_dtype).eval()


def save_train_state(run_dir: Path, state: dict) -> None:
    # Through a Python file object: a full disk is then an OSError, not torch's opaque RuntimeError.
    with atomic_path(run_dir / TRAIN_STATE_FILE) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_train_state(run_dir: Path) -> dict:
    path = run_dir / TRAIN_STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume: {path} not found; nothing to resume")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        int(state["step"]), state["torch_rng"]
    except Exception as exc:  # noqa: BLE001 - zip, pickle and key errors all mean a damaged file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise UserError(f"--resume: {path} is not a readable training state ({reason}); it may be truncated "
                        "(an interrupted copy, a full disk): restore it, or train a new run in another folder") from None
    return state
