"""What a dualkd-edge artifact is, in one place: the kinds (run directory, ONNX file, TensorRT
engine), how each carries its metadata, which backend opens it and which install it needs, and the
input/output contract every one of them honours. Torch-free; heavy imports happen inside."""

from dualkd_edge.artifacts.contract import (
    INPUT_NAME,
    OUTPUT_NAMES,
    REQUIRED_OUTPUTS,
    model_outputs,
)
from dualkd_edge.artifacts.kinds import (
    ENGINE,
    ENGINE_SUFFIXES,
    KINDS,
    ONNX,
    RUN,
    ArtifactKind,
    LoadOptions,
    kind_of,
    metadata_file,
    open_backend,
    read_metadata,
    update_metadata,
    update_threshold,
)

__all__ = ["ENGINE", "ENGINE_SUFFIXES", "INPUT_NAME", "KINDS", "ONNX", "OUTPUT_NAMES", "REQUIRED_OUTPUTS", "RUN",
           "ArtifactKind", "LoadOptions", "kind_of", "metadata_file", "model_outputs", "open_backend", "read_metadata",
           "update_metadata", "update_threshold"]
