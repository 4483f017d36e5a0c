"""`dualkd-edge triton`, `serve` and `deepstream`: write what a server or a DeepStream pipeline
needs from one exported model, and run Triton from its PyPI wheel."""

from __future__ import annotations

from pathlib import Path


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


def run_serve(repo: Path, opts) -> int:
    """`opts`: serving.triton_server.ServeOptions."""
    from dualkd_edge.serving.triton_server import serve

    return serve(repo, opts)


def run_deepstream(model: Path, out: Path, opts) -> list[Path]:
    """`opts`: serving.deepstream.DeepStreamOptions."""
    from dualkd_edge.serving.deepstream import PROBE_FILE, write_deepstream

    files = write_deepstream(model, out, opts)
    print(f"wrote {', '.join(f.name for f in files)} to {out}")
    print(f"on the Jetson (DeepStream + pyds): python3 {PROBE_FILE} rtsp://CAMERA-1/stream ... ({opts.sources} camera(s)); "
          "nvinfer builds the engine on the first start")
    return files
