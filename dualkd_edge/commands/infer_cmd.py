"""`dualkd-edge infer`: run a stream and print / write its summary."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.fileio import write_json_atomic
from dualkd_edge.tables import text_table


def format_summary(summary) -> str:
    d = summary.to_dict()
    lines = [f"frames {d['frames']}  anomalies {d['anomalies']}  dropped {d['dropped']}  corrupted {d['corrupted']}  "
             f"skipped files {d['skipped_files']}  reconnects {d['reconnects']}  errors {len(d['errors'])}  "
             f"{d['fps']:.1f} FPS over {d['seconds']:.1f} s" + ("  (interrupted)" if d["interrupted"] else "")]
    rows = [[stage.replace("_ms", ""), s.get("mean"), s.get("p50"), s.get("p99"), s.get("max")]
            for stage, s in d["latency_ms"].items() if s]
    if rows:
        lines.append(text_table(["stage (ms)", "mean", "p50", "p99", "max"], rows))
    lines += [f"error: {e}" for e in d["errors"]]
    return "\n".join(lines)


def run_infer(model: Path, source: str, opts, providers, device: str, onnx: Path | None = None,
              cuda_graph: bool = False) -> int:
    """Exit code: 0, or 1 when a source failed or a stream was lost for good."""
    from dualkd_edge.detector import Detector
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.sources import parse_source

    opts.validate()
    specs = parse_source(source)
    with Detector.load(model, device=device, providers=providers, onnx=onnx, cuda_graph=cuda_graph) as det:
        runner = StreamRunner(det, specs, opts)
        summary = runner.run()
    print(format_summary(summary))
    if opts.out is not None:
        write_json_atomic(opts.out / "summary.json", summary.to_dict())
        print(f"summary written to {opts.out / 'summary.json'}")
    return 1 if summary.errors else 0
