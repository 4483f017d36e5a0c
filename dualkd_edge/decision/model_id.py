"""`model_id`: a hash of what a model computes (graph and weights), not of its metadata, so a new
calibration or threshold keeps the id and a re-export, quantization or rebuild changes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

ID_LENGTH = 16  # hex digits of SHA-256 shown and stored: 64 bits tell artifacts apart
_CHUNK = 1 << 20
# ModelProto's metadata_props (field 14): where dualkd-edge keeps its metadata in an ONNX file.
_ONNX_METADATA_FIELD = 14


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _onnx_digest(path: Path) -> "hashlib._Hash":
    """SHA-256 of an ONNX file's top-level protobuf fields except metadata_props. Protobuf writes
    fields in number order, so re-saving a model with other metadata leaves the other bytes as
    they were; walking the wire format avoids parsing the graph (fast on large models)."""
    digest = hashlib.sha256()
    data = memoryview(path.read_bytes())
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        if field != _ONNX_METADATA_FIELD:
            digest.update(data[start:pos])
    return digest


def _file_digest(paths: list[Path], extra: bytes = b"") -> "hashlib._Hash":
    digest = hashlib.sha256(extra)
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest


def compute_model_id(path: str | Path) -> str:
    """The id of the model at `path` (ONNX file, TensorRT engine or run directory)."""
    import json

    from dualkd_edge.artifacts.kinds import ENGINE, ONNX, RUN, kind_of

    path = Path(path)
    kind = kind_of(path)
    if kind is ONNX:
        digest = _onnx_digest(path)
    elif kind is ENGINE:
        digest = _file_digest([path])  # the plan itself; its metadata is in the sidecar
    elif kind is RUN:
        from dualkd_edge.artifacts.run_dirs import WEIGHTS_FILE

        preset = json.dumps(kind.read_metadata(path).preset, sort_keys=True).encode()
        digest = _file_digest([path / WEIGHTS_FILE], preset)
    else:  # pragma: no cover - kinds are the three above
        raise ValueError(f"no model id for {kind.name}")
    return digest.hexdigest()[:ID_LENGTH]
