"""The graph contract every artifact honours (see export/README.md): one input, named outputs."""

from __future__ import annotations

from dataclasses import dataclass

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import InputSpec

INPUT_NAME = "images"
OUTPUT_NAMES = ("score", "local_score", "semantic_score", "anomaly_map", "score_logit")
# What every export has; those made before `score_logit` existed lack it and the runtime computes
# it on the host from the branch scores and the metadata's calibration.
REQUIRED_OUTPUTS = OUTPUT_NAMES[:4]


def model_outputs(present: set[str], what: str) -> list[str]:
    """The known outputs a model file has, in OUTPUT_NAMES order; an error if a required one is missing."""
    missing = [n for n in REQUIRED_OUTPUTS if n not in present]
    if missing:
        raise UserError(f"{what}: outputs {', '.join(missing)} missing; not a dualkd-edge export")
    return [n for n in OUTPUT_NAMES if n in present]


def static_batch_of(proto) -> int | None:
    """The ONNX graph's fixed batch size, or None when the batch dimension is dynamic."""
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim0.dim_value if dim0.HasField("dim_value") else None


@dataclass(frozen=True)
class TensorSpec:
    """One graph tensor as a serving config names it: per-image shape, without the batch dimension
    (`()`: one value per image)."""

    name: str
    dtype: str  # numpy's name: "float32" | "uint8"
    shape: tuple[int, ...]


def input_tensor(spec: InputSpec) -> TensorSpec:
    """uint8 graphs take NHWC BGR frames; float graphs NCHW normalised RGB (export/README.md)."""
    if spec.dtype == "uint8":
        return TensorSpec(INPUT_NAME, "uint8", (spec.height, spec.width, 3))
    return TensorSpec(INPUT_NAME, "float32", (3, spec.height, spec.width))


def output_tensors(spec: InputSpec, names: tuple[str, ...] = OUTPUT_NAMES) -> list[TensorSpec]:
    """The outputs, all float32: scores one value per image, the map 1 x H x W."""
    return [TensorSpec(n, "float32", (1, spec.height, spec.width) if n == "anomaly_map" else ()) for n in names]
