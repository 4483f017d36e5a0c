"""Attention fused into ONNX Runtime's MultiHeadAttention for the INT8 CPU target (issue 27, item 3):
on a real tiny export, every softmax attention is found and fused, the fused graph gives the traced
graph's outputs on real images, and anything outside the layout is left alone."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from helpers import needs_torch

pytestmark = needs_torch

# The tiny preset: an 8-block teacher and a 4-block class-token student use softmax attention.
SOFTMAX_ATTENTIONS = 8 + 4


@pytest.fixture(scope="module")
def static_onnx(trained_run, tmp_path_factory):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    return export_onnx(trained_run, tmp_path_factory.mktemp("fusion") / "m.onnx", ExportOptions()).path


@pytest.fixture(scope="module")
def feeds(static_onnx, small_dataset):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.evaluation.comparison import comparison_images
    from dualkd_edge.preprocess import prepare_batch

    images, _ = comparison_images(small_dataset, 4)
    spec = read_metadata(static_onnx).input
    return [{"images": prepare_batch([image], spec)} for image in images]


def _run(model: onnx.ModelProto, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def test_every_softmax_attention_is_fused_and_the_outputs_agree(static_onnx, feeds):
    from dualkd_edge.compile.int8.attention_fusion import find_attention_sites, fuse_attention
    from dualkd_edge.evaluation.comparison import FP32_TOLERANCE, compare_outputs

    model = onnx.load(str(static_onnx))
    sites = find_attention_sites(model)
    assert len(sites) == SOFTMAX_ATTENTIONS
    assert all(s.scale == pytest.approx(s.head_dim ** -0.5) for s in sites)  # timm's default scale

    fused, n = fuse_attention(model)
    assert n == SOFTMAX_ATTENTIONS
    ops = [node.op_type for node in fused.graph.node]
    assert ops.count("MultiHeadAttention") == n and "Softmax" not in ops
    assert len(fused.graph.node) < len(model.graph.node) - 10 * n  # the layout chain is gone
    onnx.checker.check_model(fused)
    for feed in feeds:
        diffs = compare_outputs(_run(model, feed), _run(fused, feed), FP32_TOLERANCE)
        assert diffs and all(d.ok for d in diffs), [(d.name, d.max_abs) for d in diffs]


def test_a_graph_outside_the_layout_is_left_alone(static_onnx, dynamic_onnx):
    from dualkd_edge.compile.int8.attention_fusion import find_attention_sites

    model = onnx.load(str(static_onnx))
    # Q.K^T written as K.Q^T at one site: not the timm layout any more (Q, K, V must be parts 0, 1, 2)
    first_softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    qk = next(n for n in model.graph.node if n.output[0] == first_softmax.input[0])
    qk.input[0], qk.input[1] = qk.input[1], qk.input[0]
    names = [s.name for s in find_attention_sites(model)]
    assert len(names) == SOFTMAX_ATTENTIONS - 1
    assert first_softmax.name.rsplit("/", 1)[0] not in names
    # A dynamic-batch export computes its head split from runtime shapes: kept as traced.
    assert find_attention_sites(onnx.load(str(dynamic_onnx))) == []


def test_a_wrong_fusion_is_reported_by_the_parity_check(static_onnx, feeds, tmp_path):
    from dualkd_edge.compile.int8.attention_fusion import fuse_attention
    from dualkd_edge.compile.int8.graph_checks import fp32_differences

    fused, _ = fuse_attention(onnx.load(str(static_onnx)))
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    assert fp32_differences(static_onnx, tmp_path / "fused.onnx", feeds[0]) == ""
    mha = next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
    scale = next(a for a in mha.attribute if a.name == "scale")
    scale.f *= 2
    onnx.save(fused, str(tmp_path / "wrong.onnx"))
    assert "anomaly_map by" in fp32_differences(static_onnx, tmp_path / "wrong.onnx", feeds[0])
