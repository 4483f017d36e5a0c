"""`dualkd-edge bench`: statistics, report files, torch-free runs, argument errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from torchless import run_cli_torchless


def test_statistics_on_known_inputs():
    from dualkd_edge.bench.stats import latency_stats

    s = latency_stats(list(range(1, 101)), batch=4)  # 1..100 ms
    assert s.n == 100 and s.mean_ms == 50.5 and s.min_ms == 1 and s.max_ms == 100
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s.throughput == pytest.approx(4000 / 50.5)
    assert s.tail_ratio == pytest.approx(99.01 / 50.5)
    one = latency_stats([5.0])
    assert one.std_ms == 0 and one.p99_ms == 5.0
    with pytest.raises(ValueError):
        latency_stats([])


@pytest.fixture(scope="module")
def dynamic_onnx(trained_run, tmp_path_factory):
    from dualkd_edge.export.onnx_export import ExportOptions, export_onnx

    return export_onnx(trained_run, tmp_path_factory.mktemp("bench") / "m.onnx", ExportOptions(batch="dynamic")).path


def test_bench_without_torch_writes_every_report(dynamic_onnx, tmp_path):
    from dualkd_edge.data.synth import write_line_video

    video = write_line_video(tmp_path / "v.mp4", n=20)
    out = tmp_path / "r"
    proc = run_cli_torchless("bench", dynamic_onnx, "--batch", "1,4", "--iters", "5", "--warmup", "1",
                             "--source", video, "--json", out / "b.json", "--csv", out / "b.csv",
                             "--markdown", out / "b.md", "--plot", out / "b.png")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "b.json").read_text())
    assert {"machine", "options", "rows", "end_to_end", "accuracy"} <= set(report)
    assert {"cpu", "cpu_cores", "onnxruntime", "reference_matmul_gflops"} <= set(report["machine"])
    assert [r["batch"] for r in report["rows"]] == [1, 4]
    for row in report["rows"]:
        lat = row["latency_ms"]
        assert {"mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                "throughput_ips"} <= set(lat)
        assert lat["min_ms"] <= lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert row["gmacs_per_image"] > 0 and row["achieved_gflops"] > 0  # GMACs stored at export
        assert row["host_ms"]["preprocess_ms"] > 0
    e2e = report["end_to_end"][str(dynamic_onnx)]
    assert e2e["frames"] == 20 and e2e["ratio"] > 0
    with open(out / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["throughput_ips"]) > 0
    md = (out / "b.md").read_text()
    assert "## Machine" in md and "p99" in md and "end to end" in md
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_accuracy_column(dynamic_onnx, small_dataset, tmp_path):
    proc = run_cli("bench", dynamic_onnx, "--iters", "3", "--warmup", "1", "--val", small_dataset,
                   "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    acc = json.loads((tmp_path / "b.json").read_text())["accuracy"][str(dynamic_onnx)]
    assert 0 <= acc["image_auroc"] <= 1


def test_bench_bad_arguments(dynamic_onnx, tmp_path):
    assert_one_line_error(run_cli("bench", dynamic_onnx, "--batch", "0"), "--batch")
    assert_one_line_error(run_cli("bench", dynamic_onnx, "--batch", "a,b"), "--batch")
    assert_one_line_error(run_cli("bench", tmp_path / "missing.onnx"), "MODEL", "missing.onnx")
    assert_one_line_error(run_cli("bench", dynamic_onnx, "--iters", "2", "--source", tmp_path / "nope.mp4"),
                          "SOURCE", "nope.mp4")
    assert_one_line_error(run_cli("bench", dynamic_onnx, "--iters", "0"), "--iters")
