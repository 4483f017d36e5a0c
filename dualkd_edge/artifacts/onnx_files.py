"""ONNX files: reading them (a clear error for anything that is not one), their metadata in
`metadata_props`, atomic saving."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path
from dualkd_edge.metadata import ArtifactMetadata

ONNX_METADATA_KEY = "dualkd_edge"


def load_onnx_model(path: Path, load_weights: bool = False):
    """The model proto; its external data (weights in other files) is checked to lie beside it before
    anything reads it (artifacts/checks.py), then loaded when `load_weights`."""
    import onnx

    from dualkd_edge.artifacts.checks import check_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {str(exc)[:120]})") from None
    check_external_data(model, Path(path))
    if load_weights:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(Path(path).parent))
        except OSError as exc:
            raise UserError(f"{path}: cannot read its external data ({exc.strerror or exc})") from None
    return model


def onnx_metadata(model, path: Path) -> ArtifactMetadata:
    from dualkd_edge.artifacts.checks import check_onnx_input_shape

    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise UserError(f"{path}: an ONNX file without dualkd-edge metadata; export it with `dualkd-edge export`")
    meta = ArtifactMetadata.from_json(props[ONNX_METADATA_KEY], str(path))
    check_onnx_input_shape(model, meta.input, str(path))
    return meta


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
