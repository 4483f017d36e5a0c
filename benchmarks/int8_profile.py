"""Where does an ONNX model spend its time in ONNX Runtime (CPU)? Per operator type, side by side:

    python benchmarks/int8_profile.py FP32.onnx INT8.onnx [--iters 20] [--threads N] [--report F.md]

For each model: the graph ONNX Runtime actually runs after its optimisations (how many
QuantizeLinear / DequantizeLinear are left unfused, which integer kernels it chose) and its
profiler's node times grouped by operator type, per inference at batch 1. The speed-up itself is
measured by `dualkd-edge bench FP32.onnx INT8.onnx` (models in alternating rounds); this script
says where the time goes, so the graph can be changed where ONNX Runtime does not fuse."""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def session_options(threads: int | None):
    """What the runtime uses (runtime/onnx_backend.py): every graph optimisation, `threads` intra-op."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return so


def optimized_op_counts(model: Path, threads: int | None, tmp: Path) -> collections.Counter:
    """Operator types of the graph ONNX Runtime runs (written out and read back)."""
    import onnx
    import onnxruntime as ort

    so = session_options(threads)
    so.optimized_model_filepath = str(tmp / f"{model.stem}.optimized.onnx")
    ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    return collections.Counter(n.op_type for n in graph.node)


def profile(model: Path, iters: int, threads: int | None, tmp: Path) -> tuple[dict[str, list[float]], float]:
    """Operator type -> [calls, microseconds] per inference, and the mean wall ms per inference."""
    import onnxruntime as ort

    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.preprocess import prepare_batch

    spec = read_metadata(model).input
    image = np.random.default_rng(0).integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)
    batch = prepare_batch([image], spec)
    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / model.stem)
    session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch}
    for _ in range(3):  # warm-up runs are in the profile too: skipped below by their run index
        session.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(iters):
        session.run(None, feed)
    wall_ms = (time.perf_counter() - t0) * 1e3 / iters
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    timed_from = runs[3]["ts"] if len(runs) > 3 else 0
    per_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed_from:
            row = per_op[e["args"]["op_name"]]
            row[0] += 1 / iters
            row[1] += e["dur"] / iters
    return dict(per_op), wall_ms


def report(models: list[Path], iters: int, threads: int | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        counts = {m: optimized_op_counts(m, threads, tmp) for m in models}
        profiles = {m: profile(m, iters, threads, tmp) for m in models}
    lines = [f"machine: {platform.processor() or platform.machine()}, {platform.platform()}; threads: "
             f"{threads or 'all cores'}; {iters} profiled runs per model at batch 1", ""]
    for m in models:
        per_op, wall = profiles[m]
        kernel_ms = sum(us for _, us in per_op.values()) / 1e3
        lines += [f"## {m.name}: {wall:.1f} ms per inference (profiler on), kernels {kernel_ms:.1f} ms", "",
                  "Graph after ONNX Runtime's optimisations: " +
                  ", ".join(f"{op} {n}" for op, n in counts[m].most_common()), "",
                  "| operator | calls | ms per inference | share of kernel time |", "|---|---|---|---|"]
        for op, (calls, us) in sorted(per_op.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| {op} | {calls:.0f} | {us / 1e3:.2f} | {100 * us / 1e3 / kernel_ms:.1f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    for m in args.models:
        if not m.is_file():
            print(f"error: {m}: no such ONNX file", file=sys.stderr)
            return 2
    text = report(args.models, args.iters, args.threads)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
