"""Read and update the metadata of any artifact: run directory, .onnx file or engine (+ sidecar).

Torch-free: ONNX metadata is read with the onnx package, engines carry a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path, write_json_atomic
from dualkd_edge.metadata import ArtifactMetadata

ONNX_METADATA_KEY = "dualkd_edge"
RUN_META_FILE = "run.json"


def engine_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_onnx_model(path: Path, load_weights: bool = False):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {str(exc)[:120]})") from None


def onnx_metadata(model, path: Path) -> ArtifactMetadata:
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise UserError(f"{path}: an ONNX file without dualkd-edge metadata; export it with `dualkd-edge export`")
    return ArtifactMetadata.from_json(props[ONNX_METADATA_KEY], str(path))


def read_metadata(path: Path) -> ArtifactMetadata:
    path = Path(path)
    if path.is_dir():
        meta_file = path / RUN_META_FILE
        if not meta_file.is_file():
            raise UserError(f"{path}: not a run directory (no {RUN_META_FILE})")
        return ArtifactMetadata.from_json(meta_file.read_text(), str(meta_file))
    if path.suffix.lower() == ".onnx":
        return onnx_metadata(load_onnx_model(path), path)
    sidecar = engine_sidecar(path)
    if not sidecar.is_file():
        raise UserError(f"{path}: engine sidecar {sidecar.name} is missing; rebuild with `dualkd-edge build`")
    data = json.loads(sidecar.read_text())
    return ArtifactMetadata.from_dict(data["metadata"], str(sidecar))


def set_onnx_metadata(model, meta: ArtifactMetadata) -> None:
    for p in list(model.metadata_props):
        if p.key == ONNX_METADATA_KEY:
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = meta.to_json()


def save_onnx_atomic(model, path: Path) -> None:
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def update_threshold(path: Path, threshold: float) -> float:
    """Write a new decision threshold into the artifact's metadata; return the old one."""
    path = Path(path)
    meta = read_metadata(path)
    old = meta.threshold
    meta.threshold = float(threshold)
    if path.is_dir():
        write_json_atomic(path / RUN_META_FILE, meta.to_dict())
    elif path.suffix.lower() == ".onnx":
        model = load_onnx_model(path, load_weights=True)
        set_onnx_metadata(model, meta)
        save_onnx_atomic(model, path)
    else:
        sidecar = engine_sidecar(path)
        data = json.loads(sidecar.read_text())
        data["metadata"] = meta.to_dict()
        write_json_atomic(sidecar, data)
    return old
