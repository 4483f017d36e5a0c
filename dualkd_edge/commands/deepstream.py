"""`dualkd-edge deepstream`: what a DeepStream pipeline on a Jetson needs from one exported model."""

from __future__ import annotations

from pathlib import Path

import typer

from dualkd_edge.commands.options import Choice, value


class Precision(Choice):
    """`--precision` of nvinfer (serving/deepstream.DeepStreamOptions)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def command(
    model: Path = typer.Argument(..., help=".onnx export (dynamic batch, or a static batch equal to --sources)"),
    out: Path = typer.Option(..., "--out", help="folder for the graph, the nvinfer and deepstream-app configs and the probe"),
    sources: int = typer.Option(1, "--sources", help="cameras batched by nvstreammux into one inference call"),
    precision: Precision = typer.Option("fp16", "--precision", help="fp32 | fp16 | int8 (a Q/DQ graph from quantize --target tensorrt)"),
) -> None:
    """DeepStream on a Jetson: nvinfer config (tensor output), deepstream-app config for N RTSP cameras, a pyds probe."""
    from dualkd_edge.serving.deepstream import DeepStreamOptions

    run_deepstream(model, out, DeepStreamOptions(sources=sources, precision=value(precision)))


def run_deepstream(model: Path, out: Path, opts) -> list[Path]:
    """`opts`: serving.deepstream.DeepStreamOptions."""
    from dualkd_edge.serving.deepstream import PROBE_FILE, write_deepstream

    files = write_deepstream(model, out, opts)
    print(f"wrote {', '.join(f.name for f in files)} to {out}")
    print(f"on the Jetson (DeepStream + pyds): python3 {PROBE_FILE} rtsp://CAMERA-1/stream ... ({opts.sources} camera(s)); "
          "nvinfer builds the engine on the first start")
    return files
