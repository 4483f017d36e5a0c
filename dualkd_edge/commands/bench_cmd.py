"""`dualkd-edge bench`: parse the options, run, print and write the reports."""

from __future__ import annotations

from dataclasses import dataclass
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
