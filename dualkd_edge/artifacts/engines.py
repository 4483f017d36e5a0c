"""TensorRT engines: the JSON sidecar beside every one, and the check that an engine fits this machine.

Engines are tied to the TensorRT version and the GPU they were built on; loading one elsewhere
must fail with a clear instruction to rebuild, not with a deserialisation crash."""

from __future__ import annotations

import json
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_json_atomic

SIDECAR_SCHEMA = 1


def sidecar_path(engine: Path) -> Path:
    """`m.engine` -> `m.engine.json`."""
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: Path, fields: dict) -> Path:
    """`fields`: tensorrt_version, gpu, precision, metadata (the ONNX file's), and what the build
    recorded (path taken, options, the engine-vs-ONNX comparison)."""
    side = sidecar_path(engine)
    write_json_atomic(side, {"schema_version": SIDECAR_SCHEMA, **fields})
    return side


def read_sidecar(engine: Path, onnx: Path | None = None) -> dict:
    """The engine's sidecar. An engine without one (built with trtexec) is accepted when `onnx`
    names the file it was built from: its metadata comes from there, marked "adopted" so the
    backend writes the sidecar once the engine loads."""
    side = sidecar_path(engine)
    if not side.is_file():
        if onnx is None:
            raise UserError(f"{engine}: sidecar {side.name} is missing (built with trtexec?); pass --onnx with the "
                            "ONNX file it was built from, or rebuild it with `dualkd-edge build`")
        from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata

        if Path(onnx).suffix.lower() != ".onnx" or not Path(onnx).is_file():
            raise UserError(f"--onnx: expected the .onnx file the engine was built from, got {onnx}")
        meta = onnx_metadata(load_onnx_model(Path(onnx)), Path(onnx))
        return {"adopted": True, "metadata": meta.to_dict(), "precision": meta.export.get("precision", "?"),
                "path_taken": "built outside dualkd-edge (e.g. trtexec)", "build_options": {},
                "onnx": str(Path(onnx).resolve())}
    try:
        data = json.loads(side.read_text())
        data["tensorrt_version"], data["gpu"], data["metadata"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{side}: not a dualkd-edge engine sidecar ({exc})") from None
    return data


def check_compatible(engine: Path, sidecar: dict, tensorrt_version: str, gpu: dict) -> None:
    """Same TensorRT major.minor.patch and the same GPU model and compute capability."""
    built_trt = sidecar["tensorrt_version"]
    built_gpu = sidecar["gpu"]
    problems = []
    if built_trt.split(".")[:3] != tensorrt_version.split(".")[:3]:
        problems.append(f"TensorRT {built_trt} (here {tensorrt_version})")
    if built_gpu.get("compute_capability") != gpu.get("compute_capability") or built_gpu.get("name") != gpu.get("name"):
        problems.append(f"GPU {built_gpu.get('name')} sm_{built_gpu.get('compute_capability', '?').replace('.', '')} "
                        f"(here {gpu.get('name')} sm_{gpu.get('compute_capability', '?').replace('.', '')})")
    if problems:
        raise UserError(f"{engine}: built for {' and '.join(problems)}; engines are not portable: rebuild it on "
                        f"this machine with `dualkd-edge build <model.onnx> --out {engine.name}`")
