"""Torch-free runtime: ONNX Runtime backend, provider choice, engine sidecars, calibration batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_one_line_error, needs_torch, run_cli
from torchless import run_cli_torchless, run_torchless


@pytest.fixture
def onnx_model(dynamic_onnx):
    """The shared dynamic-batch export (conftest)."""
    return dynamic_onnx


def test_choose_providers():
    from dualkd_edge.errors import UserError
    from dualkd_edge.runtime.onnx_backend import choose_providers

    all_three = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, all_three) == all_three
    assert choose_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["cuda"], all_three) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(UserError, match="--providers: TensorrtExecutionProvider not available"):
        choose_providers(["tensorrt"], ["CPUExecutionProvider"])


def test_tensorrt_ep_options(tmp_path):
    from dualkd_edge.runtime.onnx_backend import tensorrt_ep_options

    opts = tensorrt_ep_options(fp16=True, cache_dir=str(tmp_path / "cache"))
    assert opts["trt_fp16_enable"] and opts["trt_layer_norm_fp32_fallback"]
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"].endswith("cache")
    assert (tmp_path / "cache").is_dir()


def test_engine_sidecar_compatibility(tmp_path):
    from dualkd_edge.artifacts.engines import (
        check_compatible,
        read_sidecar,
        write_sidecar,
    )
    from dualkd_edge.errors import UserError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    gpu = {"name": "Orin", "compute_capability": "8.7"}
    write_sidecar(engine, {"tensorrt_version": "10.3.0.30", "gpu": gpu, "precision": "fp16",
                           "path_taken": "strongly-typed", "build_options": {}, "metadata": {"a": 1}})
    side = read_sidecar(engine)
    check_compatible(engine, side, "10.3.0.30", gpu)
    with pytest.raises(UserError, match="TensorRT 10.3.0.30 .here 10.13.0.*rebuild"):
        check_compatible(engine, side, "10.13.0.35", gpu)
    with pytest.raises(UserError, match="GPU Orin sm_87 .here NVIDIA H100 sm_90.*rebuild"):
        check_compatible(engine, side, "10.3.0.30", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    (tmp_path / "m.engine.json").write_text("{}")
    with pytest.raises(UserError, match="not a dualkd-edge engine sidecar"):
        read_sidecar(engine)


def test_calibration_batches_match_inference_preprocessing(onnx_model, small_dataset, tmp_path):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.calibration_batches import CalibrationBatches
    from dualkd_edge.fileio import read_image
    from dualkd_edge.preprocess import prepare_batch

    files = sample_calibration_set([small_dataset], 10, tmp_path / "calib")
    meta = read_metadata(onnx_model)
    batcher = CalibrationBatches.from_folder(tmp_path / "calib", meta.input, batch_size=4)
    assert len(batcher) == len(files) // 4
    first = batcher.next_batch()
    assert first.shape == (4, 3, 112, 112) and first.dtype == np.float32 and first.flags.c_contiguous
    expected = prepare_batch([read_image(f) for f in sorted(files)[:4]], meta.input)
    np.testing.assert_array_equal(first, expected)
    batches = [first]
    while (b := batcher.next_batch()) is not None:
        batches.append(b)
    assert len(batches) == len(batcher)
    batcher.reset()
    np.testing.assert_array_equal(batcher.next_batch(), first)


def test_build_errors_without_tensorrt(onnx_model, tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot be shown")
    except ImportError:
        pass
    proc = run_cli("build", onnx_model, "--out", tmp_path / "m.engine")
    assert proc.returncode == 2
    assert_one_line_error(proc, "TensorRT is not installed", "JetPack")
    assert_one_line_error(run_cli("build", tmp_path / "missing.onnx", "--out", tmp_path / "m.engine"), "not found")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(run_cli("build", text, "--out", tmp_path / "m.engine"), "not an .onnx file")
    fake = tmp_path / "fake.onnx"
    fake.write_text("hello")
    assert_one_line_error(run_cli("build", fake, "--out", tmp_path / "m.engine"), "not a readable ONNX file")
    proc = run_cli("build", onnx_model, "--out", tmp_path / "m.engine", "--print-trtexec", "--batch", "1:4:8")
    assert proc.returncode == 0 and proc.stdout.count("--stronglyTyped") == 2, proc.stdout
    assert "export with --precision fp16 and pass that file" in proc.stdout


def _tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401

        from dualkd_edge.runtime.cuda_buffers import gpu_identity

        gpu_identity()
        return True
    except Exception:  # noqa: BLE001 - no TensorRT, no cuda-python or no GPU
        return False


@pytest.mark.skipif(not _tensorrt_usable(), reason="needs TensorRT, cuda-python and a CUDA GPU (absent here)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_onnxruntime(onnx_model, tmp_path, precision):
    from dualkd_edge import Detector
    from dualkd_edge.compile.tensorrt.plan import BuildOptions
    from dualkd_edge.compile.tensorrt.build import build_engine
    from dualkd_edge.data.synth import render_part

    engine = tmp_path / f"m.{precision}.engine"
    build_engine(onnx_model, engine, BuildOptions(precision=precision, batch="1:2:4", workspace_gib=1))
    images = [render_part("washer", i)[0] for i in range(3)]
    ref = Detector.load(onnx_model, providers=["cpu"]).infer_raw(images)
    with Detector.load(engine) as det:
        got = det.infer_raw(images)
        assert set(det.backend.last_timings) >= {"h2d_ms", "compute_ms", "d2h_ms"}
    tol = 1e-3 if precision == "fp32" else 5e-2
    for name in ref:
        assert np.abs(ref[name] - got[name]).max() < tol, name


def test_engine_without_sidecar_is_a_clear_error(tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.errors import UserError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="sidecar m.engine.json is missing .built with trtexec.*--onnx"):
        Detector.load(engine)


def test_detector_on_onnx_without_torch(onnx_model):
    proc = run_torchless(f"""
        from dualkd_edge import Detector
        from dualkd_edge.data.synth import render_part
        det = Detector.load({str(onnx_model)!r})
        preds = det.predict([render_part("washer", 1)[0], render_part("bracket", 2, defect="spot")[0]])
        assert len(preds) == 2 and all(0 <= p.score <= 1 for p in preds)
        assert preds[0].anomaly_map.shape == (128, 128)
        print("ok", det.backend.describe())
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ok onnxruntime (CPU)" in proc.stdout


def test_eval_cli_without_torch(onnx_model, small_dataset, tmp_path):
    proc = run_cli_torchless("eval", onnx_model, small_dataset, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["models"][0]["categories"]) == {"washer", "bracket"}


def test_run_directory_without_torch_is_a_clear_error(trained_run, small_dataset):
    proc = run_cli_torchless("eval", trained_run, small_dataset)
    assert proc.returncode != 0
    assert "needs PyTorch" in proc.stderr and "Traceback" not in proc.stderr


@needs_torch
def test_onnx_backend_equals_torch_backend(trained_run, onnx_model):
    from dualkd_edge.artifacts import open_backend
    from dualkd_edge.data.synth import render_part
    from dualkd_edge.preprocess import prepare_batch

    images = [render_part("washer", i, defect="scratch" if i == 2 else None)[0] for i in range(3)]
    outs = []
    for path in (trained_run, onnx_model):
        with open_backend(path, device="cpu") as backend:
            outs.append(backend.infer(prepare_batch(images, backend.meta.input)))
            assert backend.last_timings["total_ms"] > 0
    from dualkd_edge.evaluation.comparison import FP32_TOLERANCE, compare_outputs

    assert all(d.ok for d in compare_outputs(outs[0], outs[1], FP32_TOLERANCE))
