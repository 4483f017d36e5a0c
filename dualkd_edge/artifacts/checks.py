"""Artifact metadata is input, not truth: sizes are checked against the tensors and sane bounds before
anything is allocated, and ONNX external data must stay beside the model (docs/security.md)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from dualkd_edge.errors import UserError

MAX_SIDE = 4096  # px: model input height / width / resize, far above any preset (392)
MIN_SIDE = 14  # one ViT patch
MAX_BATCH = 1024
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit


def check_input_spec(spec, source: str) -> None:
    """The input geometry an artifact declares, within what any model of ours can have."""
    for name in ("height", "width"):
        value = getattr(spec, name)
        if not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
            raise UserError(f"{source}: input.{name} = {value!r} is outside {MIN_SIDE}..{MAX_SIDE}; the metadata is damaged")
    if spec.resize is not None and (not isinstance(spec.resize, int) or not MIN_SIDE <= spec.resize <= MAX_SIDE):
        raise UserError(f"{source}: input.resize = {spec.resize!r} is outside {MIN_SIDE}..{MAX_SIDE}; the metadata is damaged")
    if spec.crop is not None and (spec.crop != spec.height or spec.resize is None or spec.crop > spec.resize):
        raise UserError(f"{source}: input.crop = {spec.crop!r} does not fit input.resize {spec.resize!r} and the "
                        f"{spec.height}x{spec.width} input; the metadata is damaged")
    if spec.dtype not in ("float", "uint8"):
        raise UserError(f"{source}: input.dtype = {spec.dtype!r}; expected float or uint8")
    if len(spec.mean) != 3 or len(spec.std) != 3 or not all(0 < s < 1e3 for s in spec.std):
        raise UserError(f"{source}: input.mean / input.std must be 3 values each, std > 0")
    if spec.batch != "dynamic" and (not isinstance(spec.batch, int) or not 1 <= spec.batch <= MAX_BATCH):
        raise UserError(f"{source}: input.batch = {spec.batch!r}; expected 'dynamic' or 1..{MAX_BATCH}")


def check_onnx_input_shape(model, spec, source: str) -> None:
    """The graph's input tensor has the shape the metadata promises (static sides must agree)."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not inputs:
        raise UserError(f"{source}: the graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    sides = (spec.height, spec.width)
    expected = (3, *sides) if spec.dtype == "float" else (*sides, 3)
    got = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    if len(dims) != 4 or any(g is not None and g != e for g, e in zip(got, expected)):
        shape = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
        raise UserError(f"{source}: the graph's input is {shape}, its metadata says {spec.dtype} "
                        f"{spec.height}x{spec.width}; the metadata does not belong to this graph")


def _all_tensors(graph):
    """Initializers and constant tensors of a graph and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def check_external_data(model, path: Path) -> None:
    """Refuse external-data locations outside the model's folder (absolute, `..`, symlinks out):
    older ONNX Runtime releases, common on Jetsons, read whatever file a model names."""
    from onnx import TensorProto

    folder = Path(os.path.realpath(Path(path).parent))
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = Path(os.path.realpath(folder / location))
        if not location or Path(location).is_absolute() or folder not in (target, *target.parents):
            raise UserError(f"{path}: tensor {tensor.name!r} names external data {location!r} outside the model's "
                            "folder; refused (a model may only use files beside it)")


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors file's JSON header, without reading the tensors."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_SAFETENSORS_HEADER:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable weights file ({exc}); it may be truncated") from None
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
