"""INT8 projections as ONNX Runtime MatMulIntegerToFloat for the CPU target (issue 27, item 3): on
real tiny exports quantized for the CPU, every quantized Gemm and patch-embedding Conv is lowered,
the QKV projections are split and the layer scales folded, the lowered graph gives the Q/DQ graph's
outputs on real images (static and dynamic batch), and a wiring error is caught by the check that
`quantize` runs before using the lowering."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import needs_torch

pytestmark = needs_torch


def _session(model_path, small_dataset, tmp_path, name):
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.compile.int8.quantize import QuantizationSession, QuantizeOptions

    calib = tmp_path / f"calib_{name}"
    sample_calibration_set([small_dataset], 16, calib)
    work = tmp_path / f"work_{name}"
    work.mkdir()
    return QuantizationSession(model_path, QuantizeOptions(calib, "minmax", 16, "cpu"), work)


def _feeds(model_path, small_dataset, batch):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.evaluation.comparison import comparison_images
    from dualkd_edge.preprocess import prepare_batch

    images, _ = comparison_images(small_dataset, 2 * batch)
    spec = read_metadata(model_path).input
    return [{"images": prepare_batch(images[i:i + batch], spec)} for i in range(0, len(images), batch)]


def _readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


@pytest.mark.parametrize("batch", ["1", "dynamic"])
def test_projections_are_lowered_and_agree_with_the_qdq_graph(trained_run, small_dataset, tmp_path, batch):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.compile.int8.graph_checks import cpu_outputs, lowering_differences
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    fp32 = export_onnx(trained_run, tmp_path / "m.onnx", ExportOptions(batch=batch)).path
    session = _session(fp32, small_dataset, tmp_path, batch)
    lowered = session.candidate("minmax")
    qdq = onnx.load(str(session.last_qdq))
    # a dynamic-batch export computes its patch flatten at run time: its two patch embeddings stay Q/DQ
    lowered_ops = ("Gemm", "MatMul", "Conv") if batch == "1" else ("Gemm", "MatMul")
    qdq_producer = {o: n for n in qdq.graph.node for o in n.output}
    quantized = [n for n in qdq.graph.node if n.op_type in lowered_ops
                 and getattr(qdq_producer.get(n.input[1]), "op_type", "") == "DequantizeLinear"]
    assert session.integer_projections == len(quantized) > 30
    producer = {o: n for n in lowered.graph.node for o in n.output}
    readers = _readers(lowered)
    # nothing of those is left to run in float on dequantized weights
    assert not [n.name for n in lowered.graph.node if n.op_type in lowered_ops
                and any(getattr(producer.get(i), "op_type", "") == "DequantizeLinear" for i in n.input)]
    integer = [n for n in lowered.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert all(producer[n.input[0]].op_type in ("QuantizeLinear", "Reshape") for n in integer)
    after = [r for n in integer for r in readers.get(n.output[0], [])]
    constants = {i.name for i in lowered.graph.initializer}
    # static export: the fused QKV split into three projections (a dynamic one reshapes it at run time)
    assert "Split" not in [r.op_type for r in after] or batch == "dynamic"
    assert not [r.name for r in after if r.op_type == "Mul" and set(r.input) & constants]  # layer scales folded
    # the Encoder-Decoder student's linear attention: Q, K, V are three projections, each reshaped to heads
    heads = [r for r in after if r.op_type == "Reshape" and batch == "1"]  # dynamic: shapes made at run time
    assert not [g.name for r in heads for g in readers.get(r.output[0], []) if g.op_type in ("Gather", "Split")]
    if batch == "1":
        attention = [n for n in lowered.graph.node if n.op_type == "MultiHeadAttention"]
        assert attention and all(producer[i].op_type == "MatMulIntegerToFloat" for n in attention for i in n.input)
    metadata = read_metadata(session.model_path)  # the source; the candidate's own metadata is set on save
    assert metadata.export.get("precision", "fp32") == "fp32"
    lowered_path = tmp_path / f"lowered_{batch}.onnx"
    save_onnx_atomic(lowered, lowered_path)
    assert read_metadata(lowered_path).export["quantization"]["integer_projections"] == session.integer_projections
    for feed in _feeds(fp32, small_dataset, 1 if batch == "1" else 3):
        assert lowering_differences(cpu_outputs(session.pre, feed), session.last_qdq, lowered_path, feed) == ""
        a, b = cpu_outputs(session.last_qdq, feed), cpu_outputs(lowered_path, feed)
        assert a["score"].shape == b["score"].shape == (feed["images"].shape[0],)
        np.testing.assert_allclose(a["score"], b["score"], atol=5e-3)


def test_a_wiring_error_is_caught(trained_run, small_dataset, tmp_path):
    from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
    from dualkd_edge.compile.int8.graph_checks import cpu_outputs, lowering_differences
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from onnx import numpy_helper

    fp32 = export_onnx(trained_run, tmp_path / "m.onnx", ExportOptions()).path
    session = _session(fp32, small_dataset, tmp_path, "wiring")
    lowered = session.candidate("minmax")
    # patches cut in the wrong order: the (kh, kw) axes of the image grid swapped
    cut = next(n for n in lowered.graph.node if n.op_type == "Transpose" and n.name.endswith("/PatchMajor"))
    assert list(onnx.helper.get_attribute_value(cut.attribute[0])) == [0, 2, 4, 1, 3, 5]
    del cut.attribute[:]
    cut.attribute.append(onnx.helper.make_attribute("perm", [0, 2, 4, 1, 5, 3]))
    save_onnx_atomic(lowered, tmp_path / "wrong_patches.onnx")
    feed = _feeds(fp32, small_dataset, 1)[0]
    fp32_outputs = cpu_outputs(session.pre, feed)
    assert "by" in lowering_differences(fp32_outputs, session.last_qdq, tmp_path / "wrong_patches.onnx", feed)
    # one projection's output channels reversed
    lowered = session.candidate("minmax")
    weight = next(i for i in lowered.graph.initializer if i.name.endswith("/weight_int8"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[:, ::-1].copy(), weight.name))
    save_onnx_atomic(lowered, tmp_path / "wrong_columns.onnx")
    assert "by" in lowering_differences(fp32_outputs, session.last_qdq, tmp_path / "wrong_columns.onnx", feed)
