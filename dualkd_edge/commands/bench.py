"""`dualkd-edge bench`: parse the options, run, print and write the reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from dualkd_edge.commands.options import CudaGraph, EngineOnnx, FloatOption, Providers, Threads, load_options
from dualkd_edge.errors import UserError


def command(
    models: Optional[List[Path]] = typer.Argument(None, help="run directories, .onnx files or engines, compared side by side"),
    batch: str = typer.Option("1", "--batch", help="comma-separated batch sizes, e.g. 1,4,8"),
    warmup: int = typer.Option(10, "--warmup", help="untimed iterations first"),
    iters: Optional[int] = typer.Option(None, "--iters", help="timed runs per model, at least (default 50); several models are timed in alternating rounds"),
    min_time: Optional[float] = FloatOption(None, "--min-time", help="time each model at least this many seconds instead"),
    threads: Threads = None,
    providers: Providers = None,
    source: Optional[str] = typer.Option(None, "--source", help="video or stream for end-to-end timing of the infer pipeline"),
    val: Optional[Path] = typer.Option(None, "--val", help="labelled data: adds the accuracy of each model"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    csv_out: Optional[Path] = typer.Option(None, "--csv"),
    markdown: Optional[Path] = typer.Option(None, "--markdown"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG with latency percentiles and throughput (matplotlib)"),
    onnx: EngineOnnx = None,
    cuda_graph: CudaGraph = False,
    triton: Optional[List[str]] = typer.Option(None, "--triton", help="HOST:PORT/NAME of a model on a Triton server, "
                                               "timed like the local models (repeatable); the round trip is split into "
                                               "network, server queue and compute with the server's statistics"),
) -> None:
    """Latency and throughput per model and batch size, machine description, end-to-end ratio."""
    from dualkd_edge.bench.runner import BenchOptions

    opts = BenchOptions(batches=parse_batches(batch), warmup=warmup,
                        iters=iters if iters is not None or min_time is not None else 50, min_time=min_time,
                        source=source, val=val, triton=list(triton or []),
                        load=load_options(providers=providers, threads=threads, onnx=onnx, cuda_graph=cuda_graph))
    run_bench(list(models or []), opts, BenchOutputs(json=json_out, csv=csv_out, markdown=markdown, plot=plot))


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--batch: expected comma-separated integers like 1,4,8, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--batch: every batch size must be >= 1, got {text!r}")
    return values


def _local_file(source: str | None) -> Path | None:
    return Path(source) if source and Path(source).exists() else None


@dataclass
class BenchOutputs:
    json: Path | None = None
    csv: Path | None = None
    markdown: Path | None = None
    plot: Path | None = None


def run_bench(models: list[Path], opts, outputs: BenchOutputs) -> dict:
    """`opts`: bench.runner.BenchOptions."""
    from dualkd_edge.bench.report import to_text, write_reports
    from dualkd_edge.bench.runner import bench_models
    from dualkd_edge.output_paths import check_outputs

    if outputs.plot is not None:
        from dualkd_edge.pictures.plotting import check_plot_request

        check_plot_request("--plot", outputs.plot)
    check_outputs(files={"--json": outputs.json, "--csv": outputs.csv, "--markdown": outputs.markdown,
                         "--plot": outputs.plot}, inputs={"MODEL": models, "--val": opts.val,
                                                          "--source": _local_file(opts.source)})
    report = bench_models([Path(m) for m in models], opts)
    print(to_text(report))
    write_reports(report, outputs.json, outputs.csv, outputs.markdown, outputs.plot)
    return report
