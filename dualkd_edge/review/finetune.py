"""Fine-tuning for `improve` (needs torch): more steps of a copy of the run on the training data plus
the frames operators confirmed good (the teacher stays frozen, as in training), then an export that
matches the model being improved."""

from __future__ import annotations

import shutil
from pathlib import Path

from dualkd_edge.errors import UserError


def finetune_run(run_dir: Path, data: list[Path], out: Path, steps: int) -> Path:
    from dualkd_edge.artifacts.run_dirs import read_run_metadata
    from dualkd_edge.train.loop import TrainConfig, train

    if steps < 1:
        raise UserError(f"--steps: expected >= 1, got {steps}")
    shutil.copytree(run_dir, out)
    done = int(read_run_metadata(out).training.get("steps", 0))
    train(TrainConfig(data=data, out=out, resume=True, steps=done + steps, progress=False, device="cpu"))
    return out


def export_like(run_dir: Path, model: Path, meta, out: Path) -> Path:
    """The fine-tuned run as the same kind of artifact as `model` (an ONNX with its input type,
    batch and precision; a run directory as it is). Engines are built on their device: refused here."""
    from dualkd_edge.artifacts import kind_of

    kind = kind_of(model).name
    if kind == "run":
        return run_dir
    if kind != "onnx":
        raise UserError(f"MODEL: {model} is a TensorRT engine: improve the ONNX it was built from, then "
                        "`dualkd-edge build` the result on the device")
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    batch = "dynamic" if meta.input.batch == "dynamic" else str(meta.input.batch)
    opts = ExportOptions(batch=batch, input_dtype=meta.input.dtype, opset=int(meta.export.get("opset", 17)),
                         precision=meta.export.get("precision", "fp32"))
    return export_onnx(run_dir, out, opts).path
