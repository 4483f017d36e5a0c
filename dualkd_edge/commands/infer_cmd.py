"""`dualkd-edge infer`: run a stream, stop cleanly on Ctrl-C / SIGTERM, print and write its summary."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.commands.signals import reload_on_sighup, stop_on_signals
from dualkd_edge.errors import UserError


def source_files(specs) -> list[Path]:
    """The files a run reads (images, videos), which no output may overwrite."""
    return [f for s in specs for f in s.files] + [Path(s.target) for s in specs if s.kind == "video"]


def open_detector(model, load, threshold: float | None, calibration: str | None = None):
    """A local artifact, or a model on a Triton server (`model` is then a triton_backend.Endpoint)."""
    from dualkd_edge.detector import Detector

    if isinstance(model, Path):
        return Detector.load(model, threshold, load, calibration=calibration)
    from dualkd_edge.runtime.triton_backend import TritonBackend

    backend = TritonBackend(model)
    try:
        return Detector(backend, threshold, f"triton:{model}", calibration)
    except BaseException:
        backend.close()
        raise


def run_infer(model, source: str, opts, load, threshold: float | None = None, line=None, watch: bool = True) -> int:
    """Exit code: 0; 1 when a source failed, was lost for good or gave nothing usable; 2 (an
    error) when an output failed: the run then stops, and says what it kept. `model`: a Path, or a
    Triton endpoint; `line`: LineOptions (MQTT, Modbus, webhook, dashboard)."""
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.output_paths import ResultNotWritten, check_outputs, write_result
    from dualkd_edge.stream.outputs.line import LineOptions
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    from dualkd_edge.stream.outputs.credentials import warn_source_credentials

    line = line or LineOptions()
    opts.validate()
    line.resolve_secrets()
    line.validate()
    warn_source_credentials(source)
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError(f"--threshold: expected a probability in [0, 1], got {threshold}")
    specs = parse_source(source)
    folders, appends = opts.output_locations()
    inputs = {"SOURCE": [Path(s.target) for s in specs if s.kind == "images"] + source_files(specs)}
    if isinstance(model, Path):
        inputs["MODEL"] = model
    check_outputs(folders=folders, appends=appends, inputs=inputs)
    det = open_detector(model, load, threshold, opts.calibration)
    runner = None
    try:
        runner = start_runner(det, specs, opts, line)
        if isinstance(model, Path) and watch:  # hot swap (decision/hot_swap.py)
            runner.watch(lambda: open_detector(model, load, threshold, opts.calibration))
        with stop_on_signals(lambda _name: runner.request_stop()), \
                reload_on_sighup(runner.watcher.request_reload if runner.watcher else None):
            summary = runner.run()
        det = runner.det  # the model that decided last (a hot swap closed the one before)
        record = summary.to_dict()
        print(summary.format())
        if hasattr(det.backend, "server_report"):  # Triton: where the inference time went
            from dualkd_edge.runtime.triton_backend import format_server_report

            record["triton"] = det.backend.server_report()
            print(format_server_report(record["triton"]))
        review = next((s for s in runner.sinks if getattr(s, "store", None) is not None), None)
        if review is not None:
            record["review"] = review.stats.summary()
    finally:
        (runner.det if runner is not None else det).close()
    problems = list(summary.output_errors)
    if opts.out is not None:
        try:
            write_result(opts.out / "summary.json", json_bytes(record), "--out")
            print(f"summary written to {opts.out / 'summary.json'}")
        except ResultNotWritten as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))
    return 1 if summary.errors else 0


def start_runner(det, specs, opts, line):
    """The stream runner with the file sinks and the line-side ones (closed again if it cannot start)."""
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.outputs.sinks import new_run_id

    run_id = new_run_id()
    line_sinks = line.open_sinks(det.name, det.threshold)
    if opts.review is not None:
        from dualkd_edge.review.sink import ReviewSink

        line_sinks.append(ReviewSink(opts.review, run_id, det, opts.review_ok_rate, opts.defect_types))
    try:
        runner = StreamRunner(det, specs, opts, opts.sinks(run_id) + line_sinks, run_id=run_id)
    except BaseException:
        for sink in line_sinks:
            sink.close()
        raise
    for sink in line_sinks:
        if hasattr(sink, "bind"):  # the dashboard shows the capture threads' and the other sinks' counts
            sink.bind(runner)
    return runner
