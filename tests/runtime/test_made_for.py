"""A model made for TensorRT that runs on ONNX Runtime's CPU provider (and the reverse) says so once,
naming the fix; the bench table says what each model was made for."""

from __future__ import annotations

import json

from helpers import needs_torch, run_cli

pytestmark = needs_torch

WARNING = "quantized for TensorRT (FP16 between INT8 layers)"


def test_a_tensorrt_target_model_on_the_cpu_warns_once_and_bench_shows_the_target(dynamic_onnx, small_dataset,
                                                                                    tmp_path):
    calib = tmp_path / "calib"
    assert run_cli("calib-sample", small_dataset, "--n", "16", "--out", calib).returncode == 0
    for target in ("tensorrt", "cpu"):
        proc = run_cli("quantize", dynamic_onnx, "--calib", calib, "--out", tmp_path / f"{target}.onnx",
                       "--samples", "16", "--target", target)
        assert proc.returncode == 0, proc.stderr
    report = tmp_path / "bench.json"
    proc = run_cli("bench", dynamic_onnx, tmp_path / "tensorrt.onnx", tmp_path / "cpu.onnx", "--batch", "1",
                   "--iters", "3", "--json", report)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1, proc.stderr  # once, although bench opens each model more than once
    assert "tensorrt.onnx" in warnings[0] and "quantize --target cpu" in warnings[0]
    assert "cpu.onnx: quantized" not in proc.stderr  # the CPU-target model fits the CPU provider
    rows = {r["model"].rsplit("/", 1)[-1]: r["made_for"] for r in json.loads(report.read_text())["rows"]}
    assert rows == {dynamic_onnx.name: "fp32", "tensorrt.onnx": "int8-tensorrt", "cpu.onnx": "int8-cpu"}
    assert "made for" in proc.stdout and "int8-tensorrt" in proc.stdout


def test_the_reverse_mismatch_is_named_too(dynamic_onnx):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.runtime.made_for import mismatch

    meta = read_metadata(dynamic_onnx)
    assert mismatch(meta, "CPUExecutionProvider") is None  # FP32 runs anywhere
    meta.export["quantization"] = {"target": "cpu"}
    assert "quantize --target tensorrt" in mismatch(meta, "CUDAExecutionProvider")
    assert mismatch(meta, "CPUExecutionProvider") is None
    meta.export["quantization"] = {"target": "tensorrt"}
    assert "quantize --target cpu" in mismatch(meta, "CPUExecutionProvider")
    assert mismatch(meta, "TensorrtExecutionProvider") is None
