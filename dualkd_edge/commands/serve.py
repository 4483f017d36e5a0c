"""`dualkd-edge serve`: run Triton from its PyPI wheel on a repository written by `dualkd-edge triton`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def command(
    repo: Path = typer.Argument(..., help="model repository from `dualkd-edge triton --backend python`"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    http_port: int = typer.Option(8000, "--http-port"),
    grpc_port: int = typer.Option(8001, "--grpc-port"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Prometheus metrics (off by default)"),
) -> None:
    """Run Triton Inference Server from PyPI's wheel (`[serve]` extra, Python backend) until Ctrl-C."""
    from dualkd_edge.serving.triton_server import ServeOptions

    raise typer.Exit(run_serve(repo, ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port,
                                                  metrics_port=metrics_port)))


def run_serve(repo: Path, opts) -> int:
    """`opts`: serving.triton_server.ServeOptions."""
    from dualkd_edge.serving.triton_server import serve

    return serve(repo, opts)
