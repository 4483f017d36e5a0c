"""`dualkd-edge infer`: run a stream, stop cleanly on Ctrl-C / SIGTERM, print and write its summary."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.commands.signals import stop_on_signals
from dualkd_edge.errors import UserError


def source_files(specs) -> list[Path]:
    """The files a run reads (images, videos), which no output may overwrite."""
    return [f for s in specs for f in s.files] + [Path(s.target) for s in specs if s.kind == "video"]


def run_infer(model: Path, source: str, opts, load, threshold: float | None = None) -> int:
    """Exit code: 0; 1 when a source failed, was lost for good or gave nothing usable; 2 (an
    error) when an output failed: the run then stops, and says what it kept."""
    from dualkd_edge.detector import Detector
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.outputs import ResultNotWritten, check_outputs, write_result
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.sources import parse_source

    opts.validate()
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError(f"--threshold: expected a probability in [0, 1], got {threshold}")
    specs = parse_source(source)
    folders, appends = opts.output_locations()
    check_outputs(folders=folders, appends=appends,
                  inputs={"MODEL": model, "SOURCE": [Path(s.target) for s in specs if s.kind == "images"]
                          + source_files(specs)})
    with Detector.load(model, threshold, load) as det:
        runner = StreamRunner(det, specs, opts)
        with stop_on_signals(lambda _name: runner.request_stop()):
            summary = runner.run()
    print(summary.format())
    problems = list(summary.output_errors)
    if opts.out is not None:
        try:
            write_result(opts.out / "summary.json", json_bytes(summary.to_dict()), "--out")
            print(f"summary written to {opts.out / 'summary.json'}")
        except ResultNotWritten as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))
    return 1 if summary.errors else 0
