"""`dualkd-edge bench`: statistics, report files, torch-free runs, argument errors."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from helpers import assert_one_line_error, assert_real_png, run_cli
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


def test_side_by_side_timing_alternates_rounds_and_skips_each_rounds_first_run(monkeypatch):
    from dualkd_edge.bench import timing

    monkeypatch.setattr(timing, "MIN_ROUND_S", 0.01)
    monkeypatch.setattr(timing, "SETTLE_S", 0.0)
    log: list[str] = []
    a = timing.Contender(lambda: log.append("a"))
    b = timing.Contender(lambda: (log.append("b"), time.sleep(0.002)), batch=4)
    ref = timing.Contender(lambda: log.append("r"), required_runs=2)
    timing.time_side_by_side([a, b, ref], warmup=3, iters=20)
    assert log[:9] == ["a"] * 3 + ["b"] * 3 + ["r"] * 3  # warm-up first, each on its own
    rounds = [name for i, name in enumerate(log[9:]) if i == 0 or log[9 + i - 1] != name]
    assert rounds == ["a", "b", "r"] * (len(rounds) // 3) and len(rounds) >= 6  # strictly in turn
    n_rounds = len(rounds) // 3
    for c, name in ((a, "a"), (b, "b"), (ref, "r")):
        assert len(c.round_p50_ms) == n_rounds
        assert len(c.totals_ms) == log.count(name) - 3 - n_rounds  # warm-up and each round's first run not counted
    assert len(a.totals_ms) >= 20 and len(b.totals_ms) >= 20 and b.stats()[0].batch == 4
    before = log.count("a")
    timing.time_side_by_side([a], warmup=3, iters=len(a.totals_ms) + 2)
    assert log.count("a") - before == 2  # timed before: no second warm-up
    alone = timing.Contender(lambda: None)
    timing.time_side_by_side([alone], warmup=0, iters=7)
    assert len(alone.totals_ms) == 7  # alone: exactly --iters, nothing discarded


def test_paired_speedup_cancels_machine_drift():
    from dualkd_edge.bench.report import speedup
    from dualkd_edge.bench.timing import paired_speedup

    # The machine slows down 1.6x in rounds 2-3; each round the other model is 2x faster.
    base, other = [10.0, 16.0, 16.0, 10.0], [5.0, 8.0, 8.0, 5.0]
    assert paired_speedup(base, other) == pytest.approx(2.0)
    assert paired_speedup(base, other[:2]) == pytest.approx(2.0)  # only rounds in common
    with pytest.raises(ValueError):
        paired_speedup([], other)
    rows = [{"round_p50_ms": base, "latency_ms": {"p50_ms": 13.0}},
            {"round_p50_ms": other, "latency_ms": {"p50_ms": 5.0}}]
    assert speedup(*rows) == pytest.approx(2.0)
    assert speedup({"latency_ms": {"p50_ms": 13.0}}, {"latency_ms": {"p50_ms": 5.0}}) == pytest.approx(2.6)


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
        assert row["round_p50_ms"] and all(v > 0 for v in row["round_p50_ms"])  # alternating rounds, recorded
    e2e = report["end_to_end"][str(dynamic_onnx)]
    assert e2e["frames"] == 20 and e2e["ratio"] > 0
    # footprint from fresh torch-free processes: memory and the time from process start to a decision
    foot = report["footprint"][str(dynamic_onnx)]
    assert any("rss" in k for k in foot) and any("first_decision" in k for k in foot)
    assert 20 < foot["peak_rss_mib"] < 4096 and foot["rss_after_first_decision_mib"] <= foot["peak_rss_mib"]
    assert 0 < foot["first_decision_warm_s"] < 60 and 0 < foot["first_decision_cold_s"] < 60
    assert "footprint of" in proc.stdout and "first decision" in proc.stdout
    with open(out / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["throughput_ips"]) > 0
    md = (out / "b.md").read_text()
    assert "## Machine" in md and "p99" in md and "end to end" in md
    assert_real_png(out / "b.png", (1200, 400))


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
