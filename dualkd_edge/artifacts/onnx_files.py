"""ONNX files: reading them (a clear error for anything that is not one), their metadata in
`metadata_props`, atomic saving."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path
from dualkd_edge.metadata import ArtifactMetadata

ONNX_METADATA_KEY = "dualkd_edge"


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
