"""The INT8 gate judges confidence bounds, not point estimates (issue 27): on real tiny models, the
gate's report and lines, and `quantize --val` end to end (PASSED / FAILED only when a gate ran)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import needs_torch, run_cli

pytestmark = needs_torch


@pytest.fixture(scope="module")
def fp32_row(dynamic_onnx, small_dataset):
    from dualkd_edge.compile.int8.accuracy_gate import evaluate_for_gate
    from dualkd_edge.data.discovery import discover_all

    return evaluate_for_gate(dynamic_onnx, discover_all([small_dataset]))


@pytest.fixture(scope="module")
def calib(small_dataset, tmp_path_factory):
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set

    out = tmp_path_factory.mktemp("calib") / "calib"
    sample_calibration_set([small_dataset], 8, out)
    return out


def test_the_same_model_passes_where_the_data_can_prove_it(fp32_row):
    from dualkd_edge.compile.int8.accuracy_gate import gate_lines, judge

    n = len(fp32_row.scores)
    assert n == 36 and fp32_row.labels.sum() == 24  # small_dataset: 2 kinds x (6 good + 4 x 3 defective)
    gate, passed = judge(fp32_row, fp32_row, max_drop=0.0, max_disagree=0.2)
    assert passed and gate["passed"] and gate["provable"]
    assert gate["image_auroc_bound"]["point"] == 0.0 and gate["image_auroc_bound"]["upper"] == 0.0
    d = gate["decisions"]
    assert (d["disagree"], d["n"]) == (0, 36) and d["upper"] == pytest.approx(1 - 0.05 ** (1 / 36))
    lines = gate_lines(gate)
    assert "image AUROC drop 0.00 points (95% upper bound 0.00, budget 0.00): passed" in lines
    assert "OK/NG disagreement 0/36 (95% upper bound 8.0%, budget 20%): passed" in lines


def test_too_few_images_for_any_candidate_is_said_with_the_number_needed(fp32_row):
    from dualkd_edge.compile.int8.accuracy_gate import gate_lines, judge

    gate, passed = judge(fp32_row, fp32_row, max_drop=0.5, max_disagree=0.03)
    assert not passed and not gate["provable"]
    assert gate["point_estimate_passed"]  # the old gate would have accepted it
    text = "\n".join(gate_lines(gate))
    assert "OK/NG disagreement 0/36 (95% upper bound 8.0%, budget 3%): FAILED" in text
    assert "too small for ANY candidate" in text and "at least 99 images are needed" in text
    gate, _ = judge(fp32_row, fp32_row, max_drop=0.5, max_disagree=0.0)
    assert "a zero budget cannot be proven by any number of images" in "\n".join(gate_lines(gate))


def test_a_worse_candidate_fails_on_its_bound_and_says_why(fp32_row):
    """The real FP32 scores, with the defective parts of one kind scored like good ones: a candidate
    that misses defects. Its bound sits above its drop; over the budget, no data can prove it."""
    from dualkd_edge.compile.int8.accuracy_gate import GateRow, gate_lines, judge

    logits = fp32_row.logits.copy()
    hit = (fp32_row.labels == 1) & (fp32_row.categories == fp32_row.categories[0])
    good = fp32_row.logits[fp32_row.labels == 0]
    logits[hit] = np.random.default_rng(0).choice(good, hit.sum())
    worse = GateRow({}, fp32_row.scores, fp32_row.threshold, 1.0, fp32_row.labels, logits, fp32_row.categories)
    gate, passed = judge(fp32_row, worse, max_drop=0.5, max_disagree=1.0)
    b = gate["image_auroc_bound"]
    assert not passed and b["point"] > 0.5 and b["upper"] > b["point"]
    assert b["images_needed"] is None
    text = "\n".join(gate_lines(gate))
    assert re.search(rf"image AUROC drop {b['point']:.2f} points \(95% upper bound {b['upper']:.2f}, budget 0.50\): "
                     r"FAILED", text)
    assert "no number of validation images can prove this candidate" in text
    # a budget above the drop: how many images would prove it
    gate, _ = judge(fp32_row, worse, max_drop=b["point"] + (b["upper"] - b["point"]) / 2, max_disagree=1.0)
    needed = gate["image_auroc_bound"]["images_needed"]
    assert needed == pytest.approx(4 * 36, rel=0.05)
    assert f"about {needed} validation images" in "\n".join(gate_lines(gate))


def _interval_line(stdout: str) -> re.Match:
    m = re.search(r"image AUROC drop (-?\d+\.\d\d) points \(95% upper bound (-?\d+\.\d\d), budget (\d+\.\d\d)\): "
                  r"(passed|FAILED)", stdout)
    assert m, stdout
    return m


def test_quantize_with_val_prints_the_interval_and_the_verdict(dynamic_onnx, small_dataset, calib, tmp_path):
    out = tmp_path / "q.onnx"
    proc = run_cli("quantize", dynamic_onnx, "--calib", calib, "--out", out, "--val", small_dataset, "--target",
                   "cpu", "--samples", "8", "--keep-float", "none", "--max-drop", "50", "--max-disagree", "0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = _interval_line(proc.stdout)
    assert float(m[2]) >= float(m[1]) and m[3] == "50.00" and m[4] == "passed"
    assert re.search(r"OK/NG disagreement \d+/36 \(95% upper bound \d+\.\d%, budget 50%\): passed", proc.stdout)
    assert "accuracy gate: PASSED" in proc.stdout and "FAILED" not in proc.stdout and out.is_file()


def test_quantize_on_too_few_images_fails_and_stops_the_search(dynamic_onnx, small_dataset, calib, tmp_path):
    """Default budgets (0.5 points, 3%) on 36 images: no candidate can be proven, so the
    mixed-precision search stops after all-INT8, and the gate says how many images it needs."""
    out = tmp_path / "q.onnx"
    proc = run_cli("quantize", dynamic_onnx, "--calib", calib, "--out", out, "--val", small_dataset, "--target",
                   "cpu", "--samples", "8")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _interval_line(proc.stdout)
    assert re.search(r"OK/NG disagreement \d+/36 \(95% upper bound \d+\.\d%, budget 3%\): FAILED", proc.stdout)
    assert "too small for ANY candidate" in proc.stdout and "at least 99 images are needed" in proc.stdout
    steps = [line for line in proc.stdout.splitlines() if line.strip().startswith("step ")]
    assert len(steps) == 1 and "(all-int8)" in steps[0] and steps[0].endswith("failed")
    assert "accuracy gate: FAILED" in proc.stdout and "PASSED" not in proc.stdout and not out.exists()


def test_quantize_without_val_is_not_gated(dynamic_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    proc = run_cli("quantize", dynamic_onnx, "--calib", calib, "--out", out, "--target", "cpu", "--samples", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not gated" in proc.stdout and "PASSED" not in proc.stdout and "FAILED" not in proc.stdout
    assert out.is_file()
