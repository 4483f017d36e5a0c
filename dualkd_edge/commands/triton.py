"""`dualkd-edge triton`: write a Triton Inference Server model repository from one exported model."""

from __future__ import annotations

from pathlib import Path

import typer

from dualkd_edge.commands.options import Choice, value


class Backend(Choice):
    """`--backend`: serving/triton_repository.BACKENDS."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    PYTHON = "python"


def command(
    model: Path = typer.Argument(..., help=".onnx file (dynamic batch for batching) or TensorRT engine"),
    out: Path = typer.Option(..., "--out", help="model repository folder (REPO/NAME/config.pbtxt, REPO/NAME/1/...)"),
    name: str = typer.Option("dualkd", "--name", help="model name on the server"),
    max_batch: int = typer.Option(8, "--max-batch", help="max_batch_size: the most images the server batches into one call"),
    backend: Backend = typer.Option("auto", "--backend", help="auto (onnxruntime for .onnx, tensorrt for engines) | onnxruntime | "
                                    "tensorrt | python (our runtime inside Triton: runs anywhere, incl. `dualkd-edge serve`)"),
    queue_delay_us: int = typer.Option(2000, "--queue-delay-us", help="dynamic batching: how long a request may wait for others"),
    instances: int = typer.Option(1, "--instances", help="model instances (instance_group count)"),
) -> None:
    """Write a Triton Inference Server model repository: tensors, dynamic batching, instances, our metadata."""
    from dualkd_edge.serving.triton_repository import TritonRepoOptions

    run_triton(model, out, TritonRepoOptions(name=name, max_batch=max_batch, backend=value(backend),
                                             queue_delay_us=queue_delay_us, instances=instances))


def run_triton(model: Path, repo: Path, opts) -> Path:
    """`opts`: serving.triton_repository.TritonRepoOptions."""
    from dualkd_edge.serving.triton_repository import write_triton_repository

    written = write_triton_repository(model, repo, opts)
    folder = written.folder
    print(f"wrote {folder} (backend {written.backend}): config.pbtxt, 1/{', 1/'.join(written.files)}")
    if written.backend == "python":
        print(f"serve it here: dualkd-edge serve {repo}   (pip install 'dualkd-edge[serve]')")
    print(f"on a GPU server: docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v {Path(repo).resolve()}:/models "
          "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models   (docs/scaling.md)")
    print(f"clients: dualkd-edge infer --triton HOST:8001/{opts.name} SOURCE ...")
    return folder
