"""The NVIDIA path without NVIDIA hardware: TensorRT's rules as an executable check, the build plan
per TensorRT version, INT8 graphs TensorRT's parser accepts, and the comparator that gates exports,
quantization and engines."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import altered_run, assert_one_line_error, needs_torch, run_cli
from onnx import TensorProto, helper, numpy_helper

VERSIONS = ["10.3", "10.13", "11"]


# -- hand-built graphs, one per rule ------------------------------------------------------------------

def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _matmul_qdq(weight_dtype=np.int8, weight_axis=1, zero_point=0, act_zp_dtype=np.int8, scale=0.1,
                bias_int32=False):
    """x -> Q -> DQ -> MatMul(W: DQ(int8 weight)) [+ Add(DQ(int32 bias))]."""
    w = np.arange(12, dtype=np.int64).reshape(3, 4).astype(weight_dtype)
    n_scales = w.shape[weight_axis]
    inits = [_const("w_q", w), _const("w_s", np.full(n_scales, 0.01, np.float32)),
             _const("w_zp", np.zeros(n_scales, weight_dtype)), _const("x_s", np.float32(scale)),
             _const("x_zp", np.array(zero_point, act_zp_dtype))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"], name="dequant_x"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], name="dequant_w", axis=weight_axis),
             helper.make_node("MatMul", ["xd", "wd"], ["y0"], name="matmul")]
    out = "y0"
    if bias_int32:
        inits += [_const("b_q", np.arange(4, dtype=np.int32)), _const("b_s", np.full(4, 1e-3, np.float32)),
                  _const("b_zp", np.zeros(4, np.int32))]
        nodes += [helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["bd"], name="dequant_bias", axis=0),
                  helper.make_node("Add", ["y0", "bd"], ["y1"], name="add_bias")]
        out = "y1"
    nodes.append(helper.make_node("Identity", [out], ["y"], name="out"))
    return _model(nodes, [_f("x", [1, 3])], [_f("y", [1, 4])], inits)


def _topk(k: int, n: int = 5000):
    return _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk_node", axis=1)],
                  [_f("x", [1, n])], [_f("v", [1, k]), _f("i", [1, k], TensorProto.INT64)],
                  [_const("k", np.array([k], np.int64))])


def _bad_graphs():
    """(rule, node named in the message, model) for every rule `check` enforces."""
    mixed = _model([helper.make_node("Cast", ["x"], ["x16"], name="to_half", to=TensorProto.FLOAT16),
                    helper.make_node("Add", ["x16", "b"], ["y"], name="mixed_add")],
                   [_f("x", [1, 4])], [_f("y", [1, 4])], [_const("b", np.ones((1, 4), np.float32))])
    dynamic = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                     [_f("x", ["batch", 3, "height", 8])], [_f("y", ["batch", 3, "height", 8])])
    custom = _model([helper.make_node("FusedGelu", ["x"], ["y"], name="vendor_gelu", domain="com.microsoft")],
                    [_f("x", [1, 4])], [_f("y", [1, 4])])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    unsupported = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_f("x", [4])], [_f("y", [4])])
    cubic = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize_cubic", mode="cubic")],
                   [_f("x", [1, 1, 4, 4])], [_f("y", [1, 1, 8, 8])],
                   [_const("scales", np.array([1, 1, 2, 2], np.float32))])
    axes_input = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum_dynamic_axes")],
                        [_f("x", [1, 4]), _f("axes", [1], TensorProto.INT64)], [_f("y", [1, 1])])
    old_opset = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_f("x", [1, 4])], [_f("y", [1, 4])],
                       opset=7)
    per_channel_act = _matmul_qdq()
    per_channel_act.graph.initializer.remove(next(i for i in per_channel_act.graph.initializer if i.name == "x_s"))
    per_channel_act.graph.initializer.remove(next(i for i in per_channel_act.graph.initializer if i.name == "x_zp"))
    per_channel_act.graph.initializer.extend([_const("x_s", np.full(3, 0.1, np.float32)), _const("x_zp", np.zeros(3, np.int8))])
    for node in per_channel_act.graph.node:
        if node.name in ("quant_x", "dequant_x"):
            node.attribute.append(helper.make_attribute("axis", 1))
    uint8_transpose = _model([helper.make_node("Transpose", ["x"], ["t"], name="transpose_u8", perm=[0, 3, 1, 2]),
                              helper.make_node("Cast", ["t"], ["y"], name="to_float", to=TensorProto.FLOAT)],
                             [_f("x", [1, 8, 8, 3], TensorProto.UINT8)], [_f("y", [1, 3, 8, 8])])
    return [
        ("uint8-input", "transpose_u8", uint8_transpose),
        ("uint8-tensor", "transpose_u8", uint8_transpose),
        ("dq-input-type", "dequant_bias", _matmul_qdq(bias_int32=True)),
        ("qdq-uint8", "quant_x", _matmul_qdq(act_zp_dtype=np.uint8, zero_point=128)),
        ("qdq-zero-point", "quant_x", _matmul_qdq(zero_point=3)),
        ("qdq-scale", "quant_x", _matmul_qdq(scale=-0.5)),
        ("qdq-axis", "dequant_w", _matmul_qdq(weight_axis=0)),
        ("qdq-per-channel-activation", "quant_x", per_channel_act),
        ("topk-k", "topk_node", _topk(4000)),
        ("mixed-precision", "mixed_add", mixed),
        ("dynamic-dim", "input x", dynamic),
        ("custom-op", "vendor_gelu", custom),
        ("unsupported-op", "uniq", unsupported),
        ("resize-mode", "resize_cubic", cubic),
        ("constant-input", "sum_dynamic_axes", axes_input),
        ("opset", "graph", old_opset),
    ]


@pytest.mark.parametrize("rule,node,model", _bad_graphs(), ids=[r for r, _, _ in _bad_graphs()])
def test_check_refuses_each_known_bad_graph_naming_node_and_rule(rule, node, model):
    from dualkd_edge.compile.tensorrt.rules import PROFILES, check_graph

    for version in VERSIONS:
        found = [v for v in check_graph(model, PROFILES[version]) if v.rule == rule]
        assert found, f"{rule} not reported for TensorRT {version}"
        line = found[0].format(PROFILES[version])
        assert node in line and rule in line and f"TensorRT {version}" in line


def test_clean_hand_built_graphs_pass():
    from dualkd_edge.compile.tensorrt.rules import PROFILES, check_graph

    for model in (_matmul_qdq(), _topk(3840)):
        for version in VERSIONS:
            assert check_graph(model, PROFILES[version]) == []


def test_dla_rules():
    from dualkd_edge.compile.tensorrt.rules import PROFILES, check_graph

    dynamic_fp32 = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_f("x", ["b", 4])], [_f("y", ["b", 4])])
    rules = {v.rule for v in check_graph(dynamic_fp32, PROFILES["10.3"], dla=True)}
    assert {"dla-static-shape", "dla-precision"} <= rules and "dla" not in rules
    assert "dla" in {v.rule for v in check_graph(dynamic_fp32, PROFILES["10.13"], dla=True)}
    assert "dla" in {v.rule for v in check_graph(dynamic_fp32, PROFILES["11"], dla=True)}


def test_check_cli_lines_exit_codes_and_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(_matmul_qdq(bias_int32=True), str(bad))
    proc = run_cli("check", bad, "--tensorrt", "10.3")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines and all(line.startswith("TensorRT 10.3: node dequant_bias") for line in lines), lines
    good = tmp_path / "good.onnx"
    onnx.save(_matmul_qdq(), str(good))
    proc = run_cli("check", good)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout
    assert run_cli("check", good, "--tensorrt", "10.3.0.30").returncode == 0  # a full version picks its profile
    assert_one_line_error(run_cli("check", good, "--tensorrt", "9"), "--tensorrt")
    assert_one_line_error(run_cli("check", tmp_path / "missing.onnx"), "not found")


# -- our own artifacts ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def variants(trained_run, small_dataset, tmp_path_factory):
    """Every export variant we produce, and both INT8 targets."""
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("variants")
    calib = out / "calib"
    sample_calibration_set([small_dataset], 16, calib)
    made = {
        "fp32": export_onnx(trained_run, out / "fp32.onnx", ExportOptions()).path,
        "fp32-dynamic-uint8": export_onnx(trained_run, out / "u8.onnx", ExportOptions(batch="dynamic",
                                                                                      input_dtype="uint8")).path,
        "fp16": export_onnx(trained_run, out / "fp16.onnx", ExportOptions(precision="fp16")).path,
        "fp16-dynamic-uint8": export_onnx(trained_run, out / "fp16u8.onnx", ExportOptions(
            precision="fp16", batch="dynamic", input_dtype="uint8")).path,
    }
    made["int8-tensorrt"] = quantize_int8(made["fp32"], calib, out / "int8.onnx", samples=16).path
    made["int8-tensorrt-uint8"] = quantize_int8(made["fp32-dynamic-uint8"], calib, out / "int8u8.onnx", samples=16).path
    made["int8-tensorrt-fp32-high"] = quantize_int8(made["fp32"], calib, out / "int8hi32.onnx", samples=16,
                                                    high_precision="fp32").path
    made["int8-cpu"] = quantize_int8(made["fp32"], calib, out / "int8cpu.onnx", samples=16, target="cpu").path
    return made


@needs_torch
def test_every_variant_we_write_for_tensorrt_passes_check_for_every_version(variants):
    from dualkd_edge.compile.tensorrt.rules import check_versions

    for name, path in variants.items():
        if name == "int8-cpu":
            continue
        lines = check_versions(onnx.load(str(path)), VERSIONS)
        assert lines == [], f"{name}: {lines[:3]}"


@needs_torch
def test_cpu_target_is_refused_by_check(variants):
    from dualkd_edge.compile.tensorrt.rules import PROFILES, check_graph

    rules = {v.rule for v in check_graph(onnx.load(str(variants["int8-cpu"])), PROFILES["10.3"])}
    assert "qdq-uint8" in rules


@needs_torch
def test_tensorrt_int8_graph_follows_the_qdq_rules_and_runs_fp16_between(variants):
    """DQ inputs INT8 only (no INT32 bias), zero points 0, FP16 scales so the layers between the INT8
    matmuls are FP16 in a strongly-typed build; norms and the scoring stay FP32."""
    model = onnx.load(str(variants["int8-tensorrt"]))
    inits = {i.name: i for i in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) > 50
    assert {types[n.input[0]] for n in dq} == {TensorProto.INT8}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not numpy_helper.to_array(inits[n.input[2]]).any(), n.name
    assert {inits[n.input[1]].data_type for n in dq} == {TensorProto.FLOAT16}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and not n.name.startswith("/scoring/")]
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in matmuls)
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.output[0]] == TensorProto.FLOAT for n in norms)
    assert all(types[n.output[0]] == TensorProto.FLOAT for n in model.graph.node if n.name.startswith("/scoring/")
               and n.op_type not in ("Shape", "Gather", "Cast"))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 19)]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["dualkd_edge"])
    assert meta["export"]["quantization"]["high_precision"] == "fp16" and meta["export"]["opset"] == 19


@needs_torch
def test_fp16_int8_graph_scores_like_the_fp32_high_one(variants, small_dataset):
    """Lowering the unquantized layers to FP16 costs little next to INT8 itself."""
    from dualkd_edge import Detector
    from dualkd_edge.evaluation.comparison import comparison_images

    images, _ = comparison_images(small_dataset, 24)
    ref = Detector.load(variants["fp32"]).infer_raw(images)
    fp16_high = Detector.load(variants["int8-tensorrt"]).infer_raw(images)
    fp32_high = Detector.load(variants["int8-tensorrt-fp32-high"]).infer_raw(images)
    for name in ("local_score", "semantic_score"):
        err16 = np.abs(fp16_high[name] - ref[name]).max()
        err32 = np.abs(fp32_high[name] - ref[name]).max()
        assert err16 <= 3 * err32 + 1e-3, (name, err16, err32)


@needs_torch
def test_compare_passes_a_run_against_its_export_and_catches_altered_weights(trained_run, variants, small_dataset,
                                                                              tmp_path):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    proc = run_cli("compare", trained_run, variants["fp32"], variants["fp16"], "--images", small_dataset,
                   "--json", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["labelled"] and len(report["comparisons"]) == 2
    first = report["comparisons"][0]
    assert first["passed"] and first["auroc"]["drop_points"] == pytest.approx(0.0, abs=1e-6)
    assert first["decisions"]["disagree"] == 0 and first["score_spearman"] > 0.999
    assert {o["name"] for o in first["outputs"]} >= {"score", "local_score", "semantic_score", "anomaly_map"}

    altered = altered_run(trained_run, tmp_path, "ed_student.blocks")
    altered_onnx = export_onnx(altered, tmp_path / "altered.onnx", ExportOptions(verify=False)).path
    proc = run_cli("compare", variants["fp32"], altered_onnx, "--images", small_dataset)
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout and "local_score differs" in proc.stdout


def test_compare_errors(tmp_path):
    assert_one_line_error(run_cli("compare", tmp_path / "a.onnx", "--images", tmp_path), "at least two models")
    assert_one_line_error(run_cli("compare", tmp_path / "a.onnx", tmp_path / "b.onnx", "--images", tmp_path),
                          "not found")


def test_comparison_tolerances_by_precision_and_nonfinite_values():
    from dualkd_edge.evaluation.comparison import (
        FP16_TOLERANCE,
        Tolerance,
        compare_outputs,
        decision_agreement,
    )

    assert Tolerance.for_precisions(["fp32", "int8"]).atol is None
    assert Tolerance.for_precisions(["fp32", "fp16"]).atol == FP16_TOLERANCE
    ref = {"score": np.array([0.1, 0.9]), "anomaly_map": np.zeros((2, 1, 4, 4))}
    bad = {"score": np.array([0.1, np.nan]), "anomaly_map": np.zeros((2, 1, 4, 4))}
    diffs = {d.name: d for d in compare_outputs(ref, bad, Tolerance.for_precisions(["fp32"]).atol)}
    assert diffs["score"].nonfinite == 1 and not diffs["score"].ok and diffs["anomaly_map"].ok
    agreement = decision_agreement(np.array([0.49, 0.9, 0.1]), 0.5, np.array([0.51, 0.2, 0.1]), 0.5, 0.02)
    assert (agreement.agree, agreement.disagree, agreement.borderline) == (1, 1, 1)


# -- build plan per TensorRT version (what `build` does, decided without TensorRT) ----------------------

def _meta(precision="fp32", target=None):
    from dualkd_edge.metadata import (
        ArtifactMetadata,
        BranchCalibration,
        Calibration,
        InputSpec,
        TeacherWeights,
    )

    export = {"precision": precision}
    if target:
        export["quantization"] = {"target": target}
    return ArtifactMetadata(preset={}, input=InputSpec(112, 112), teacher_weights=TeacherWeights("none", False),
                            calibration=Calibration(BranchCalibration(0, 1), BranchCalibration(0, 1)), export=export)


@pytest.mark.parametrize("version", ["10.3.0.30", "10.13.3.9", "11.4.0.106"])
def test_fp16_and_qdq_int8_are_strongly_typed_on_every_version(version, tmp_path):
    from pathlib import Path

    from dualkd_edge.compile.tensorrt.plan import BuildOptions, plan_build

    m = Path("m.onnx")
    plan = plan_build(_meta("fp32"), BuildOptions(precision="fp16"), version, 1, m)
    assert plan.strongly_typed and plan.graph == "to-fp16" and plan.precision == "fp16"
    assert plan_build(_meta("fp16"), BuildOptions(precision="fp16"), version, 1, m).graph == "as-is"
    plan = plan_build(_meta("int8", "tensorrt"), BuildOptions(precision="int8"), version, None, m)
    assert plan.strongly_typed and plan.graph == "as-is"
    assert plan_build(_meta("int8", "tensorrt"), BuildOptions(precision="best"), version, 1, m).precision == "int8"
    plan = plan_build(_meta("fp32"), BuildOptions(precision="int8", calib=tmp_path), version, 1, m)
    if version.startswith("10.3"):  # implicit calibration: the one weak-typed path left
        assert not plan.strongly_typed and plan.calibrator
    else:
        assert plan.strongly_typed and plan.graph == "quantize"


def test_build_plan_refusals(tmp_path):
    from pathlib import Path

    from dualkd_edge.compile.tensorrt.plan import BuildOptions, plan_build
    from dualkd_edge.errors import UserError

    m = Path("m.onnx")
    cases = [
        (_meta("fp32"), BuildOptions(precision="int8"), 1, "give the Q/DQ model"),
        (_meta("int8", "cpu"), BuildOptions(precision="int8"), 1, "--target tensorrt"),
        (_meta("int8", "tensorrt"), BuildOptions(precision="fp16"), 1, "builds as int8"),
        (_meta("fp16"), BuildOptions(precision="fp32"), 1, "build from the FP32 export"),
        (_meta("fp32"), BuildOptions(precision="fp16", dla_core=0), None, "DLA needs static shapes"),
        (_meta("fp32"), BuildOptions(precision="fp16", batch="1:2:4"), 1, "static batch of 1"),
    ]
    for meta, opts, static_batch, message in cases:
        with pytest.raises(UserError, match=message):
            plan_build(meta, opts, "10.3.0", static_batch, m)


@needs_torch
def test_trtexec_for_weak_int8_pins_the_scoring_and_names_a_content_keyed_cache(variants, small_dataset, tmp_path):
    import shutil

    from dualkd_edge.compile.tensorrt.plan import calibration_cache_path

    calib = tmp_path / "calib"
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set

    sample_calibration_set([small_dataset], 8, calib)
    proc = run_cli("build", variants["fp32"], "--out", tmp_path / "m.engine", "--precision", "int8", "--calib", calib,
                   "--print-trtexec")
    assert proc.returncode == 0, proc.stderr
    weak, strong = proc.stdout.split("# TensorRT >= 10.12")
    assert "--int8 --fp16 --calib=" in weak and "--layerPrecisions=" in weak and "/scoring/TopK:fp32" in weak
    assert "cannot calibrate from images" in weak
    output_types = weak.split("--layerOutputTypes=")[1].split()[0]
    assert "/scoring/Sigmoid:fp32" in output_types and "TopK" not in output_types  # indices keep their type
    assert "--stronglyTyped" in strong and "pass the Q/DQ model" in strong
    # the cache name changes with the model's content, and with the calibration images
    first = calibration_cache_path(variants["fp32"], calib, tmp_path / "m.engine")
    other = tmp_path / "fp32b.onnx"
    shutil.copyfile(variants["fp16"], other)
    assert calibration_cache_path(other, calib, tmp_path / "m.engine").name.split(".")[1] != first.name.split(".")[1]
    (calib / "extra.png").write_bytes((calib / sorted(p.name for p in calib.iterdir())[0]).read_bytes())
    assert calibration_cache_path(variants["fp32"], calib, tmp_path / "m.engine") != first


def test_engine_built_outside_dualkd_edge_is_adopted_with_its_onnx(tmp_path):
    """Without a sidecar the metadata comes from the ONNX named with --onnx (the sidecar is written
    once TensorRT has loaded the engine, which needs a GPU)."""
    from dualkd_edge.artifacts.engines import read_sidecar
    from dualkd_edge.errors import UserError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="--onnx"):
        read_sidecar(engine)
    with pytest.raises(UserError, match="--onnx: expected the .onnx file"):
        read_sidecar(engine, tmp_path / "nope.onnx")


@needs_torch
def test_engine_adoption_reads_metadata_from_the_onnx(variants, tmp_path):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.artifacts.engines import read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    side = read_sidecar(engine, variants["fp16"])
    assert side["adopted"] and side["precision"] == "fp16"
    assert side["metadata"]["calibration"] == read_metadata(variants["fp16"]).to_dict()["calibration"]


# -- the quantize gate never loses a model ----------------------------------------------------------------

@needs_torch
def test_quantize_refuses_to_overwrite_its_input(variants, tmp_path):
    import shutil

    src = tmp_path / "m.onnx"
    shutil.copyfile(variants["fp32"], src)
    before = src.read_bytes()
    assert_one_line_error(run_cli("quantize", src, "--calib", tmp_path, "--out", src), "--out", "FP32 input itself")
    assert src.read_bytes() == before


@needs_torch
def test_failed_gate_keeps_the_deployed_model(variants, small_dataset, tmp_path):
    """Calibrated on blank frames, INT8 clips real parts' activations: the gate must fail, the model
    already at --out must stay, and the candidate goes to *.rejected.onnx."""
    import cv2

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(8):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((64, 64, 3), 255, np.uint8))
    deployed = tmp_path / "line.int8.onnx"
    deployed.write_bytes(b"the model running on the line")
    proc = run_cli("quantize", variants["fp32"], "--calib", blank, "--out", deployed, "--val", small_dataset,
                   "--max-drop", "0", "--max-disagree", "0", "--samples", "8", "--keep-float", "none")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "accuracy gate: FAILED" in proc.stdout and "was left as it was" in proc.stdout
    assert deployed.read_bytes() == b"the model running on the line"
    assert (tmp_path / "line.int8.rejected.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left behind


# -- accuracy-driven mixed precision ------------------------------------------------------------------

def test_layer_groups_follow_the_three_networks(variants):
    from dualkd_edge.compile.int8.layer_groups import group_of, layer_groups

    assert group_of("/model/teacher/blocks.3/attn/qkv/MatMul/MatMulAddFusion") == "teacher.blocks.3"
    assert group_of("/model/ee_student/blocks/blocks.1/mlp/fc1/MatMul") == "ee_student.blocks.1"
    assert group_of("/model/ed_student/bottleneck/net/net.1/MatMul") == "ed_student.bottleneck"
    assert group_of("/scoring/Conv") is None
    names = [g.name for g in layer_groups(onnx.load(str(variants["fp32"])))]
    assert {f"teacher.blocks.{i}" for i in range(8)} <= set(names)
    assert {"teacher.patch_embed", "ed_student.bottleneck", "ee_student.head"} <= set(names)
    assert len(names) == len(set(names)) == 20


@needs_torch
def test_mixed_precision_recovers_a_badly_calibrated_model(variants, small_dataset, tmp_path):
    """Calibrated on blank frames, all-INT8 loses accuracy; the search returns the most sensitive
    groups to float until the gate passes, and the file records which."""
    import cv2

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(8):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((64, 64, 3), 255, np.uint8))
    out = tmp_path / "mixed.onnx"
    proc = run_cli("quantize", variants["fp32"], "--calib", blank, "--out", out, "--val", small_dataset,
                   # an upper bound of a rate is never 0: the bound gate needs a budget above it
                   "--max-drop", "0", "--max-disagree", "0.1", "--samples", "8", "--target", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.strip().startswith("step ")]
    assert steps[0].endswith("failed") and "(all-int8)" in steps[0] and len(steps) >= 2
    assert any("(search)" in s and s.endswith("PASSED") for s in steps)
    assert "x FP32 speed" in steps[0]  # the price of each step, measured on this machine (CPU target)
    assert "sensitivity (error in calibration sigmas" in proc.stdout and "accuracy gate: PASSED" in proc.stdout
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["dualkd_edge"])
    kept = meta["export"]["quantization"]["kept_float"]
    assert kept and meta["export"]["quantization"]["quantized_groups"] == 20 - len(kept)
    last_passing = [s for s in steps if s.endswith("PASSED")][-1]  # after pruning, the smallest passing set
    assert sorted(last_passing.split("float: ")[1].split(" |")[0].split(", ")) == kept
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(node.name.startswith(f"/model/{g.replace('.blocks.', '/blocks.')}/")
                                                      for g in kept if ".blocks." in g):
            # activation and weight in float (a bias shared with a quantized layer may still be dequantized)
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input[:2]), node.name


@needs_torch
def test_keep_float_by_name(variants, small_dataset, tmp_path):
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set

    calib = tmp_path / "calib"
    sample_calibration_set([small_dataset], 8, calib)
    out = tmp_path / "named.onnx"
    proc = run_cli("quantize", variants["fp32"], "--calib", calib, "--out", out, "--keep-float", "ee_student",
                   "--samples", "8")
    assert proc.returncode == 0, proc.stderr
    kept = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["dualkd_edge"])["export"][
        "quantization"]["kept_float"]
    assert kept == sorted(["ee_student.patch_embed", "ee_student.head"] + [f"ee_student.blocks.{i}" for i in range(4)])
    assert_one_line_error(run_cli("quantize", variants["fp32"], "--calib", calib, "--out", tmp_path / "x.onnx",
                                  "--keep-float", "decoder"), "--keep-float", "no layer group 'decoder'")
    assert_one_line_error(run_cli("quantize", variants["fp32"], "--calib", calib, "--out", tmp_path / "x.onnx",
                                  "--method", "auto"), "--val")


@needs_torch
def test_smoothing_is_exact_in_float_and_reaches_every_layernorm_linear(variants, small_dataset, tmp_path):
    import copy

    import onnxruntime as ort

    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.evaluation.comparison import comparison_images
    from dualkd_edge.compile.int8.calibration_batches import CalibrationBatches
    from dualkd_edge.compile.int8.smoothing import channel_absmax, find_targets, smooth

    model = onnx.load(str(variants["fp32"]))
    targets = find_targets(model)
    # pre-norm ViTs: two LayerNorm -> linear pairs per block (attention, MLP) in every network
    n_blocks = 8 + 4 + 4
    assert len(targets) == 2 * n_blocks
    images, _ = comparison_images(small_dataset, 8)
    batches = CalibrationBatches(images, read_metadata(variants["fp32"]).input, 1)
    absmax = channel_absmax(str(variants["fp32"]), [t.tensor for t in targets], batches)
    smoothed = copy.deepcopy(model)
    assert smooth(smoothed, targets, absmax, 0.5) == len(targets)
    norms = {n.name: n for n in smoothed.graph.node if n.op_type == "LayerNormalization"}
    gammas = {norms[t.norm].input[1] for t in targets}
    assert len(gammas) == len(targets)  # each smoothed norm has its own (rescaled) parameters
    x = batches.next_batch()
    a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    b = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-4)
