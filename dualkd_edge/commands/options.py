"""Options that several commands share, declared once, and the fixed choices of options as Enums.

An option group is an `Annotated` alias: `device: Device = "auto"` gives a command the same
`--device` (name, help) as every other; the default stays at the command, as Typer wants it.
A fixed choice is a `Choice` Enum: Typer refuses any other value (one `error:` line naming the
option) and `--help` lists the values. The library keeps taking plain strings: pass `.value`
(`value()` below), and it keeps its own checks for callers of the Python API.

Imports: typer and the standard library only, so `dualkd-edge --help` stays instant."""

from __future__ import annotations

import math
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def finite(value: float | None) -> float | None:
    """nan and infinity pass float() but mean nothing as a time, a rate or a tolerance (and
    `bench --min-time nan` would never end): refuse them like any other bad number."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"expected a finite number, got {value}")
    return value


FloatOption = partial(typer.Option, callback=finite)  # every float option of the CLI


# --- fixed choices -------------------------------------------------------------------------------

class Choice(str, Enum):
    """A value out of a fixed list; shown and compared as its value."""

    def __str__(self) -> str:
        return self.value


def value(choice):
    """The plain string the library takes (None stays None; a list becomes a list of strings)."""
    if isinstance(choice, (list, tuple)):
        return [value(c) for c in choice]
    return choice.value if isinstance(choice, Enum) else choice


class FloatPrecision(Choice):
    """Float precisions of a graph: `export --precision`, `quantize --high-precision`."""

    FP32 = "fp32"
    FP16 = "fp16"


class Decoder(Choice):
    """How rtsp:// URLs are decoded (stream/capture/threads.py): `infer`, `calibrate`."""

    OPENCV = "opencv"
    GSTREAMER = "gstreamer"


# --- option groups -------------------------------------------------------------------------------

# Loading a model (artifacts.LoadOptions): eval, infer, calibrate, compare, bench.
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (PyTorch run directories)")]
# Free text, not an Enum: full ONNX Runtime names (CUDAExecutionProvider) and `trt` are accepted too;
# runtime/onnx_backend.choose_providers checks them against the installed onnxruntime, naming --providers.
Providers = Annotated[Optional[List[str]], typer.Option(
    "--providers", help="ONNX Runtime providers: tensorrt, cuda, cpu")]

# CPU threads of the model: fewer than the cores leaves room to the camera decoder and the file outputs.
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="ONNX Runtime intra-op threads of .onnx models (bench: also PyTorch's for run "
    "directories); default: one per physical core")]

# TensorRT engines: the ONNX file an outside engine came from, and CUDA graphs.
EngineOnnx = Annotated[Optional[Path], typer.Option(
    "--onnx", help="for a TensorRT engine built outside dualkd-edge (trtexec): the ONNX file it was built from; "
    "its metadata is used and the engine's sidecar written")]
CudaGraph = Annotated[bool, typer.Option(
    "--cuda-graph", help="TensorRT engines with a static batch: replay the inference as a CUDA graph (less "
    "launch overhead)")]

# Training and evaluation runs.
Seed = Annotated[int, typer.Option("--seed")]
BatchSize = Annotated[int, typer.Option("--batch-size")]


def load_options(device: str = "auto", providers=None, onnx: Path | None = None, cuda_graph: bool = False,
                 threads: int | None = None):
    """artifacts.LoadOptions from the model-loading options (imported here, not at the top: torch-
    and numpy-free as it is, the artifacts package is not needed for --help)."""
    from dualkd_edge.artifacts import LoadOptions

    return LoadOptions(device=device, providers=value(providers) or None, threads=threads, cuda_graph=cuda_graph,
                       onnx=onnx)
