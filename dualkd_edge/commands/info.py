"""`dualkd-edge info MODEL`: what an artifact is and how it decides (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def command(
    model: Path = typer.Argument(..., help="run directory, .onnx file or TensorRT engine"),
    json_out: bool = typer.Option(False, "--json", help="print JSON: model_id, calibrations, history, ..."),
) -> None:
    """An artifact's identity (model_id), preset, input contract, calibrations, thresholds and history."""
    raise typer.Exit(run_info(model, json_out))


def artifact_info(model: Path) -> dict:
    from dualkd_edge.artifacts import kind_of
    from dualkd_edge.decision.calibrations import default_calibration_name
    from dualkd_edge.decision.model_id import compute_model_id
    from dualkd_edge.metadata import TRAINING_CALIBRATION

    kind = kind_of(model)
    meta = kind.read_metadata(Path(model))
    default = default_calibration_name(meta)
    training = {"name": TRAINING_CALIBRATION, "threshold": meta.threshold, "frames": meta.calibration.n_images,
                "source": "held-out training images", "max_fpr": None, "promised_fpr": None, "outliers": 0,
                "created": meta.training.get("finished_at") if isinstance(meta.training, dict) else None,
                "default": default == TRAINING_CALIBRATION}
    named = [{"name": c.name, "threshold": c.threshold, "frames": c.frames, "source": c.source, "max_fpr": c.max_fpr,
              "promised_fpr": c.promised_fpr, "outliers": c.outliers, "created": c.created, "model_id": c.model_id,
              "default": default == c.name} for c in meta.calibrations]
    return {"path": str(model), "kind": kind.name, "model_id": compute_model_id(model),
            "preset": meta.preset.get("name"), "teacher_weights": meta.teacher_weights.label,
            "input": {k: v for k, v in vars(meta.input).items()}, "tool_version": meta.tool_version,
            "schema_version": meta.schema_version, "quantization": meta.export.get("quantization"),
            "default_calibration": default, "calibrations": [training] + named, "history": meta.history}


def format_info(info: dict) -> str:
    from dualkd_edge.decision.history import format_history
    from dualkd_edge.console.tables import text_table

    spec = info["input"]
    geometry = (f"resize {spec['resize']} -> crop {spec['crop']}" if spec.get("crop") else
                f"{spec['height']}x{spec['width']}")
    lines = [f"{info['path']}  ({info['kind']})",
             f"  model_id      {info['model_id']}",
             f"  preset        {info['preset']}   teacher: {info['teacher_weights']}",
             f"  input         {spec['dtype']} {spec['layout']} {spec['color']} {geometry}, batch {spec['batch']}",
             f"  made by       dualkd-edge {info['tool_version']} (metadata schema {info['schema_version']})"]
    rows = [[("* " if c["default"] else "  ") + c["name"], c["threshold"], c["max_fpr"], c["promised_fpr"],
             c["frames"], c["outliers"], c["source"], c["created"]] for c in info["calibrations"]]
    lines += ["", "calibrations (* = the default of `infer`):",
              text_table(["name", "threshold", "budget", "promised", "frames", "set aside", "source", "made"], rows),
              "", f"history ({len(info['history'])} change(s)):"]
    lines += ["  " + line for line in format_history(info["history"])] or ["  (none)"]
    return "\n".join(lines)


def run_info(model: Path, as_json: bool) -> int:
    info = artifact_info(model)
    print(json.dumps(info, indent=2) if as_json else format_info(info))
    return 0
