"""One fused ONNX graph: parity with PyTorch, input modes, both students inside, INT8 and FP16."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from helpers import altered_run, assert_one_line_error, needs_torch, parts, run_cli

pytestmark = needs_torch


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for dtype in ("float", "uint8"):
        for batch in ("1", "dynamic"):
            result = export_onnx(trained_run, out / f"m_{dtype}_{batch}.onnx", ExportOptions(batch=batch, input_dtype=dtype))
            assert result.verified and all(d.ok for d in result.differences)
            paths[(dtype, batch)] = result.path
    return paths


@pytest.mark.parametrize("dtype", ["float", "uint8"])
@pytest.mark.parametrize("batch", ["1", "dynamic"])
def test_onnx_matches_pytorch_in_every_input_mode(trained_run, exports, dtype, batch):
    from dualkd_edge import Detector

    images = parts(4)
    ref = Detector.load(trained_run, device="cpu").predict(images)
    det = Detector.load(exports[(dtype, batch)])
    if batch == "dynamic":  # one call with batch 4
        raw = det.backend.infer(__import__("dualkd_edge.preprocess", fromlist=["x"]).prepare_batch(images, det.meta.input))
        assert raw["score"].shape == (4,) and raw["anomaly_map"].shape == (4, 1, 112, 112)
    got = det.predict(images)
    for r, g in zip(ref, got):
        assert abs(r.score - g.score) < 2e-3
        assert abs(r.score_logit - g.score_logit) < 1.6e-2
        assert abs(r.local_score - g.local_score) < 1e-4
        assert abs(r.semantic_score - g.semantic_score) < 1e-4
        assert np.abs(r.anomaly_map - g.anomaly_map).max() < 1e-4
        assert r.is_anomaly == g.is_anomaly or abs(r.score - det.threshold) < 2e-3


def test_uint8_path_equals_float_path(exports):
    from dualkd_edge import Detector

    images = parts(3)
    a = Detector.load(exports[("float", "1")]).infer_raw(images)
    b = Detector.load(exports[("uint8", "dynamic")]).infer_raw(images)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)
    graph = onnx.load(str(exports[("uint8", "dynamic")]), load_external_data=False).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_graph_outputs_and_metadata_round_trip(trained_run, exports):
    from dualkd_edge.artifacts import read_metadata, update_threshold

    path = exports[("float", "1")]
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["score", "local_score", "semantic_score", "anomaly_map",
                                                    "score_logit"]
    assert {n.op_type for n in model.graph.node} >= {"LayerNormalization", "TopK", "Sigmoid"}
    # simplified losslessly into standard ONNX only (TensorRT's parser sees no vendor domains)
    assert all(n.domain == "" for n in model.graph.node)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    run_meta, onnx_meta = read_metadata(trained_run), read_metadata(path)
    assert onnx_meta.calibration == run_meta.calibration
    assert onnx_meta.threshold == run_meta.threshold
    assert onnx_meta.preset == run_meta.preset
    assert onnx_meta.teacher_weights.label.startswith("NOT PRETRAINED")
    assert onnx_meta.export["opset"] == 17 and onnx_meta.input.batch == 1 and onnx_meta.export["simplified"]
    copy = path.with_name("threshold.onnx")
    shutil.copyfile(path, copy)
    assert update_threshold(copy, 0.7) == run_meta.threshold
    assert read_metadata(copy).threshold == 0.7


def test_map_calibration_round_trips_through_every_export(trained_run, exports, small_dataset, tmp_path):
    """The heat-map scale measured at training reaches every artifact the runtime can load."""
    from dualkd_edge.artifacts import read_metadata, update_threshold
    from dualkd_edge.artifacts.engines import write_sidecar
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    run_meta = read_metadata(trained_run)
    stats = run_meta.calibration.anomaly_map
    n_holdout = run_meta.training["data"]["n_holdout"]
    assert stats is not None and stats.n_pixels == n_holdout * 112 * 112
    assert 0 <= stats.median < stats.high <= stats.max <= 2 and stats.high_quantile == 0.999
    fp16 = export_onnx(trained_run, tmp_path / "m.fp16.onnx", ExportOptions(precision="fp16", verify=False)).path
    sample_calibration_set([small_dataset], 8, tmp_path / "calib")
    int8 = quantize_int8(exports[("float", "1")], tmp_path / "calib", tmp_path / "m.int8.onnx", samples=8).path
    artifacts = [*exports.values(), fp16, int8]
    for path in artifacts:
        assert read_metadata(path).calibration.anomaly_map == stats, path
    engine = tmp_path / "m.engine"  # what `build` writes beside an engine: the ONNX metadata, as a dict
    engine.write_bytes(b"\x00")  # (the engine itself needs TensorRT; its sidecar is what is read here)
    write_sidecar(engine, {"tensorrt_version": "10.3.0", "gpu": {}, "precision": "fp16", "path_taken": "test",
                           "build_options": {}, "metadata": read_metadata(int8).to_dict()})
    assert read_metadata(engine).calibration.anomaly_map == stats
    update_threshold(int8, 0.8)  # re-tuning the threshold keeps the scale
    assert read_metadata(int8).calibration.anomaly_map == stats


@pytest.mark.parametrize("student,changed,unchanged", [("ed_student.blocks", "local_score", "semantic_score"),
                                                         ("ee_student.head", "semantic_score", "local_score")])
def test_graph_holds_both_students(trained_run, exports, tmp_path, student, changed, unchanged):
    from dualkd_edge import Detector
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    broken = export_onnx(altered_run(trained_run, tmp_path, student), tmp_path / "broken.onnx", ExportOptions()).path
    images = parts(3)
    a = Detector.load(exports[("float", "1")]).infer_raw(images)
    b = Detector.load(broken).infer_raw(images)
    assert np.abs(a[changed] - b[changed]).max() > 1e-3
    np.testing.assert_allclose(a[unchanged], b[unchanged], atol=1e-5)


def test_int8_runs_keeps_norms_in_float_and_passes_gate(trained_run, exports, small_dataset, tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.accuracy_gate import accuracy_gate
    from dualkd_edge.compile.int8.quantize import quantize_int8

    calib = tmp_path / "calib"
    assert len(sample_calibration_set([small_dataset], 24, calib)) >= 20
    fp32 = exports[("float", "dynamic")]
    result = quantize_int8(fp32, calib, tmp_path / "m.int8.onnx", "minmax", 24)
    model = onnx.load(str(result.path))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
        if node.op_type == "MatMul" and "/scoring/" not in node.name:
            assert any(producers.get(i) == "DequantizeLinear" for i in node.input), node.name
        if node.name.startswith("/scoring/"):
            assert node.op_type not in ("QuantizeLinear", "DequantizeLinear")
    assert result.quantized_nodes > 50
    preds = Detector.load(result.path).predict(parts(2))
    assert all(0 <= p.score <= 1 for p in preds)
    gate, passed = accuracy_gate(fp32, result.path, small_dataset, max_drop=10.0, max_disagree=1.0)
    assert passed, gate
    assert set(gate["drop_points"]) == {"image_auroc", "pixel_auroc"}
    assert gate["decisions"]["agree"] + gate["decisions"]["disagree"] == len(list(small_dataset.rglob("test/*/*.png")))


def test_gate_fails_for_a_broken_candidate(trained_run, exports, small_dataset, tmp_path):
    from dualkd_edge.compile.int8.accuracy_gate import accuracy_gate
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    broken = export_onnx(altered_run(trained_run, tmp_path, "ed_student.blocks"), tmp_path / "b.onnx", ExportOptions()).path
    gate, passed = accuracy_gate(exports[("float", "1")], broken, small_dataset, max_drop=0.0)
    fp32_auc = gate["fp32"]["pixel_auroc"]
    assert gate["int8"]["pixel_auroc"] != fp32_auc
    assert passed == all(d <= 0.0 for d in gate["drop_points"].values())


def test_cpu_target_uses_uint8_activations_and_tensorrt_refuses_it(exports, small_dataset, tmp_path):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.tensorrt.plan import BuildOptions, plan_build
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.errors import UserError

    sample_calibration_set([small_dataset], 16, tmp_path / "calib")
    result = quantize_int8(exports[("float", "1")], tmp_path / "calib", tmp_path / "cpu.onnx", samples=16, target="cpu")
    model = onnx.load(str(result.path))
    activation_zero_points = [i for i in model.graph.initializer if i.name.endswith("_zero_point")
                              and i.data_type == onnx.TensorProto.UINT8]
    assert activation_zero_points, "UINT8 activations expected for the CPU target"
    # attention's activation x activation MatMuls stay float: no faster in integer on ONNX Runtime's CPU
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    weights = {i.name for i in model.graph.initializer}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    attention = [n for n in model.graph.node if n.op_type == "MatMul" and not set(n.input) & weights]
    assert attention and all(producer.get(i) != "DequantizeLinear" for n in attention for i in n.input)
    assert read_metadata(result.path).export["quantization"]["attention_matmuls"] == "float"
    # ... and each softmax attention is one MultiHeadAttention node fed by float Q, K, V
    fused = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(fused) == read_metadata(result.path).export["quantization"]["fused_attention"] == 8 + 4
    assert all(producer.get(i) != "DequantizeLinear" for n in fused for i in n.input)
    # the output projection after each one is still INT8: its input (the merged heads) is quantized
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    def after_layout(tensor):  # the reader past any Reshape
        reader = consumers[tensor][0]
        return after_layout(reader.output[0]) if reader.op_type == "Reshape" else reader

    quantized = [after_layout(n.output[0]) for n in fused]
    assert all(q.op_type == "QuantizeLinear" for q in quantized)
    assert all([c.op_type for c in consumers[q.output[0]]] == ["MatMulIntegerToFloat"] for q in quantized)
    assert read_metadata(result.path).export["quantization"]["integer_projections"] > 30
    with pytest.raises(UserError, match="--target tensorrt"):
        plan_build(read_metadata(result.path), BuildOptions(precision="int8"), "10.13.0", 1, result.path)


@pytest.mark.parametrize("variant", [{}, {"batch": "dynamic", "input_dtype": "uint8"}])
def test_fp16_export_keeps_io_float32_and_norms_fp32(trained_run, tmp_path, variant):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    result = export_onnx(trained_run, tmp_path / "m.fp16.onnx", ExportOptions(precision="fp16", **variant))
    assert result.verified  # ONNX Runtime CPU loads and runs it within the FP16 tolerances
    model = onnx.load(str(result.path))
    in_type = onnx.TensorProto.UINT8 if variant else onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == in_type
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    fp16_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_inits) > 20
    onnx.checker.check_model(model, full_check=True)  # topologically sorted, as TensorRT's parser needs
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    producer = {o: n for n in model.graph.node for o in n.output}
    round_trips = [n.name for n in model.graph.node if n.op_type == "Cast" and n.input[0] in producer
                   and producer[n.input[0]].op_type == "Cast"
                   and types.get(producer[n.input[0]].input[0]) == onnx.TensorProto.FLOAT]
    assert round_trips == []  # FP32-kept nodes hand FP32 tensors to each other, never through FP16
    assert all(d.ok for d in result.differences)


def test_fp16_conversion_keeps_fp32_chains_out_of_fp16_range():
    """Squared norms in the scoring exceed FP16's 65504: between FP32-kept nodes they must stay FP32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from dualkd_edge.compile.fp16 import to_mixed_fp16

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    nodes = [helper.make_node("MatMul", ["x", "w"], ["f"], name="/model/proj/MatMul"),
             helper.make_node("Mul", ["f", "f"], ["sq"], name="/scoring/Mul"),
             helper.make_node("ReduceSum", ["sq"], ["ss"], name="/scoring/ReduceSum", keepdims=1),
             helper.make_node("Sqrt", ["ss"], ["norm"], name="/scoring/Sqrt")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("norm", TensorProto.FLOAT, [1, 1])], [w])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    mixed = to_mixed_fp16(model)
    onnx.checker.check_model(mixed, full_check=True)
    assert any(i.data_type == TensorProto.FLOAT16 for i in mixed.graph.initializer)  # the MatMul is FP16
    sess = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.full((1, 4), 300.0, np.float32)  # squares 9e4 > 65504
    assert sess.run(None, {"x": x})[0][0, 0] == pytest.approx(600.0, rel=1e-3)


def test_entropy_calibration_clips_outliers_where_minmax_does_not(tmp_path):
    """`--method entropy` must not fall back to the full range (quantize_static's own entropy
    calibrator does, with as many histogram bins as quantized bins)."""
    from onnx import TensorProto, helper
    from onnxruntime.quantization.calibrate import load_tensors_data

    from dualkd_edge.compile.int8.quantize import _entropy_ranges

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 8)).astype(np.float32) for _ in range(200)]
    batches[0][0, 0] = 40.0  # one outlier, 40 sigma out

    class Feed:  # the CalibrationDataReader protocol ONNX Runtime reads
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            self.i += 1
            return {"x": batches[self.i - 1]} if self.i <= len(batches) else None

        def rewind(self) -> None:
            self.i = 0

    ranges = load_tensors_data(_entropy_ranges(path, Feed(), tmp_path, symmetric=True)).data["x"]
    lo, hi = float(np.asarray(ranges.range_value[0])), float(np.asarray(ranges.range_value[1]))
    # the bulk kept, the 40-sigma outlier clipped (minmax gives 40; the quantizer symmetrises the range)
    assert 2.0 < max(-lo, hi) < 20.0


def test_cli_export_quantize_and_errors(trained_run, small_dataset, tmp_path):
    out = tmp_path / "cli.onnx"
    proc = run_cli("export", trained_run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "max abs" in proc.stdout and out.is_file()
    calib = tmp_path / "calib"
    assert run_cli("calib-sample", small_dataset, "--n", "16", "--out", calib).returncode == 0
    proc = run_cli("quantize", out, "--calib", calib, "--out", tmp_path / "q.onnx", "--samples", "16")
    assert proc.returncode == 0, proc.stderr
    assert "score_logit Spearman" in proc.stdout and "OK/NG agree on" in proc.stdout
    assert_one_line_error(run_cli("export", trained_run, "--out", tmp_path / "x.onnx", "--img-size", "224"), "--img-size")
    assert_one_line_error(run_cli("export", trained_run, "--out", tmp_path / "x.onnx", "--opset", "13"), "--opset")
    assert_one_line_error(run_cli("quantize", out, "--calib", tmp_path / "nope", "--out", tmp_path / "q2.onnx"), "--calib")


def test_truncated_and_foreign_onnx_are_clear_errors(exports, small_dataset, tmp_path):
    from onnx import TensorProto, helper

    from dualkd_edge import Detector
    from dualkd_edge.errors import UserError

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exports[("float", "1")].read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated.onnx"):
        Detector.load(truncated)
    assert_one_line_error(run_cli("eval", truncated, small_dataset), "truncated.onnx")

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), str(foreign))
    with pytest.raises(UserError, match="without dualkd-edge metadata"):
        Detector.load(foreign)


def test_wrong_input_size_is_a_clear_error(exports):
    from dualkd_edge import Detector
    from dualkd_edge.errors import UserError

    det = Detector.load(exports[("float", "dynamic")])
    with pytest.raises(UserError, match=r"expected float32 \(2, 3, 112, 112\)"):
        det.backend.infer(np.zeros((2, 3, 224, 224), np.float32))
