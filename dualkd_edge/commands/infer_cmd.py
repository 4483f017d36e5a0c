"""`dualkd-edge infer`: run a stream, stop cleanly on Ctrl-C / SIGTERM, print and write its summary."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_json_atomic

log = logging.getLogger("dualkd_edge")


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM (what `systemctl stop` sends) call `stop` instead of killing the run, so
    the frames in flight finish, files are closed and the summary is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, _frame) -> None:  # noqa: ANN001 - the signal module's signature
        log.warning("received %s: stopping after the frames in flight", signal.Signals(signum).name)
        stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_detector(model, load, threshold: float | None):
    """A local artifact, or a model on a Triton server (`model` is then a triton_backend.Endpoint)."""
    from dualkd_edge.detector import Detector

    if isinstance(model, Path):
        return Detector.load(model, threshold, load)
    from dualkd_edge.runtime.triton_backend import TritonBackend

    return Detector(TritonBackend(model), threshold, f"triton:{model}")


def run_infer(model, source: str, opts, load, threshold: float | None = None, line=None) -> int:
    """Exit code: 0, or 1 when a source failed or a stream was lost for good. `load`: LoadOptions;
    `model`: a Path, or a Triton endpoint; `line`: LineOptions (MQTT, Modbus, webhook, dashboard)."""
    from dualkd_edge.stream.line_outputs import LineOptions
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.sources import parse_source

    line = line or LineOptions()
    opts.validate()
    line.validate()
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError(f"--threshold: expected a probability in [0, 1], got {threshold}")
    specs = parse_source(source)
    with open_detector(model, load, threshold) as det:
        line_sinks = line.open_sinks(det.name, det.threshold)
        try:
            runner = StreamRunner(det, specs, opts, opts.sinks() + line_sinks)
        except BaseException:
            for sink in line_sinks:
                sink.close()
            raise
        for sink in line_sinks:
            if hasattr(sink, "bind"):  # the dashboard shows the capture threads' and the other sinks' counts
                sink.bind(runner)
        with stop_on_signals(runner.request_stop):
            summary = runner.run()
        record = summary.to_dict()
        print(summary.format())
        if hasattr(det.backend, "server_report"):  # Triton: where the inference time went
            from dualkd_edge.runtime.triton_backend import format_server_report

            record["triton"] = det.backend.server_report()
            print(format_server_report(record["triton"]))
    if opts.out is not None:
        write_json_atomic(opts.out / "summary.json", record)
        print(f"summary written to {opts.out / 'summary.json'}")
    return 1 if summary.errors else 0
