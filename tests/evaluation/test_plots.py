"""`bench --plot` and `eval --plot`: real PNGs, decoded with OpenCV; a clear error without matplotlib."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import assert_one_line_error, assert_real_png, run_cli


def _bench_row(model: str, batch: int, p50: float, rounds: list[float]) -> dict:
    lat = {"mean_ms": p50 * 1.05, "std_ms": 1.0, "min_ms": p50 * 0.9, "p50_ms": p50, "p90_ms": p50 * 1.2,
           "p95_ms": p50 * 1.3, "p99_ms": p50 * 1.5, "max_ms": p50 * 2, "throughput_ips": 1000 * batch / p50}
    return {"model": model, "backend": "onnxruntime (CPU)", "batch": batch, "latency_ms": lat, "round_p50_ms": rounds}


MACHINE = {"cpu": "Test CPU", "cpu_cores": 2, "gpu": None, "onnxruntime": "1.0", "date": "2026-01-01"}


@pytest.mark.parametrize("batches", [[1], [1, 4, 8]])
def test_bench_plot_is_a_real_png(tmp_path, batches):
    from dualkd_edge.bench.plot import model_labels, plot

    rows = [_bench_row(m, b, base * b ** 0.8, [base * b ** 0.8] * 3)
            for m, base in (("a/model.onnx", 30.0), ("b/model.onnx", 15.0), ("m.int8.onnx", 10.0)) for b in batches]
    rows.append({**_bench_row("c.engine", 1, 1.0, []), "latency_ms": None})  # not timed (static batch)
    out = tmp_path / "bench.png"
    plot({"machine": MACHINE, "rows": rows}, out)
    assert_real_png(out, (1200, 400))
    labels = model_labels([r for r in rows if r["latency_ms"]])
    # file names that collide keep their folder; the backend is named under each
    assert labels["a/model.onnx"].splitlines() == ["a/model.onnx", "onnxruntime (CPU)"]
    assert labels["m.int8.onnx"].splitlines()[0] == "m.int8.onnx"


def test_eval_plot_is_a_real_png(tmp_path):
    from dualkd_edge.evaluation.plot import plot_eval
    from dualkd_edge.evaluation.evaluate_splits import EvalReport, ImageRecord, image_metrics

    rng = np.random.default_rng(0)
    report = EvalReport(model="run/", threshold=0.5)
    for cat in ("washer", "bracket"):
        for i in range(40):
            label = int(i >= 20)
            score = float(np.clip(rng.normal(0.15 + 0.6 * label, 0.15), 0, 1))
            report.records.append(ImageRecord(f"{cat}/{i}.png", cat, "scratch" if label else "good", label, score,
                                              score, score, score >= 0.5, float(-np.log1p(-min(score, 0.999)))))
        report.rows[cat] = image_metrics([r for r in report.records if r.category == cat])
    report.records.append(ImageRecord("nut/0.png", "nut", "good", 0, 0.1, 0.1, 0.1, False, 0.105))  # one class: n/a
    out = tmp_path / "eval.png"
    plot_eval([report, report], out)  # two models: two rows
    img = assert_real_png(out, (1100, 800))
    assert img.shape[0] > 1.5 * img.shape[1] * 4.6 / 12


def _run_without_matplotlib(*args: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys

        class NoMatplotlib:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "matplotlib":
                    raise ImportError("matplotlib is blocked for this test")

        sys.meta_path.insert(0, NoMatplotlib())
        sys.argv = ["dualkd-edge", *{[str(a) for a in args]!r}]
        from dualkd_edge.cli import main
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_plots_without_matplotlib_or_with_a_wrong_suffix_are_one_line_errors(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the plot option is checked first")
    (tmp_path / "data").mkdir()
    for command in (["bench", model], ["eval", model, tmp_path / "data"]):
        proc = _run_without_matplotlib(*command, "--plot", tmp_path / "p.png")
        assert proc.returncode == 2
        assert_one_line_error(proc, "--plot needs matplotlib", "pip install 'dualkd-edge[plot]'")
        assert_one_line_error(run_cli(*command, "--plot", tmp_path / "p.txt"), "--plot", ".png")
    assert not (tmp_path / "p.png").exists()
