"""`dualkd-edge bench`: parse the options, run, print and write the reports."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import UserError


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--batch: expected comma-separated integers like 1,4,8, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--batch: every batch size must be >= 1, got {text!r}")
    return values


def run_bench(models, batch, warmup, iters, min_time, threads, providers, source, val, json_out, csv_out,
              markdown, plot, onnx=None, cuda_graph: bool = False) -> dict:
    from dualkd_edge.bench.report import to_text, write_reports
    from dualkd_edge.bench.runner import BenchOptions, bench_models

    if plot is not None:
        from dualkd_edge.plotting import check_plot_request

        check_plot_request("--plot", plot)
    opts = BenchOptions(batches=parse_batches(batch), warmup=warmup,
                        iters=iters if iters is not None or min_time is not None else 50, min_time=min_time,
                        threads=threads, providers=providers, source=source, val=Path(val) if val else None,
                        engine_onnx=onnx, cuda_graph=cuda_graph)
    report = bench_models([Path(m) for m in models], opts)
    print(to_text(report))
    write_reports(report, {}, json_out, csv_out, markdown, plot)
    return report
