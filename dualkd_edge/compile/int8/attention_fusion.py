"""Attention as ONE ONNX Runtime `MultiHeadAttention` node, for the INT8 CPU target.

The traced graph spells each attention as ~20 layout nodes around two MatMuls: the QKV projection's
output is reshaped to (B, N, 3, heads, head_dim), split, squeezed and transposed into per-head
Q, K, V, scaled, multiplied, soft-maxed, multiplied again and transposed and reshaped back. On a CPU
those Transpose/Reshape/Split/Squeeze nodes cost about as much as the attention arithmetic
(benchmarks/results/int8-profile-*). ONNX Runtime's `com.microsoft.MultiHeadAttention` takes Q, K, V
as (B, N, heads x head_dim), which is exactly the QKV projection's output split in three along its
last axis, and does the rest in one kernel. The projections themselves stay separate Gemm nodes, so
they are still quantized to INT8.

Only the CPU target gets this: the node is ONNX Runtime's own, and TensorRT fuses attention itself
from the standard ops. A site is fused only when its structure matches the timm layout (Q, K, V
reached from parts 0, 1, 2 of a 5-D (B, N, 3, heads, head_dim) reshape of one tensor through layout
nodes only, V unscaled, the heads merged by a (0, 2, 1, 3) transpose); the axes and permutations in
between are not proven here: `quantize` checks the fused FP32 graph against the unfused one on a
calibration batch before using it (`graph_checks.fp32_differences`), which any other layout fails."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dualkd_edge.compile.graph_index import GraphIndex, attribute, drop_dead_nodes

MS_DOMAIN = "com.microsoft"
# Nodes that only move data between the QKV projection and the attention MatMuls.
_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Split", "Squeeze", "Unsqueeze", "Gather"})


@dataclass
class _Path:
    """Where one of Q, K, V comes from: part `part` of the 5-D reshape `reshape`, times `factor`."""
    reshape: onnx.NodeProto
    part: int | None
    factor: float


@dataclass
class AttentionSite:
    qkv: str  # the QKV projection's output
    tokens: int
    heads: int
    head_dim: int
    scale: float
    merge: onnx.NodeProto  # the Reshape that merges the heads back: replaced by the fused node
    name: str  # scope of the site, e.g. /model/teacher/blocks.0/attn


def _strip_scaling(index: GraphIndex, tensor: str) -> tuple[str, float]:
    """Follow Mul/Div by scalar constants upwards; the tensor above them and their product."""
    factor = 1.0
    while (node := index.producer.get(tensor)) is not None and node.op_type in ("Mul", "Div"):
        a, b = node.input
        if node.op_type == "Mul" and index.scalar(a) is not None:
            factor, tensor = factor * index.scalar(a), b
        elif index.scalar(b) is not None:
            value = index.scalar(b)
            factor, tensor = (factor * value if node.op_type == "Mul" else factor / value), a
        else:
            break
    return tensor, factor


def _trace(index: GraphIndex, tensor: str) -> _Path | None:
    """Walk from an attention MatMul input up through layout nodes to the 5-D QKV reshape."""
    tensor, factor = _strip_scaling(index, tensor)
    part = None
    while (node := index.producer.get(tensor)) is not None:
        if node.op_type == "Reshape":
            shape = index.constants.get(node.input[1])
            if shape is not None and shape.size == 5 and int(shape[2]) == 3:
                return _Path(node, part, factor)
        if node.op_type not in _LAYOUT_OPS:
            return None
        if node.op_type == "Split":
            if part is not None:
                return None
            part = list(node.output).index(tensor)
        elif node.op_type == "Gather":
            if part is not None or index.scalar(node.input[1]) is None:
                return None
            part = int(index.scalar(node.input[1]))
        tensor, scale = _strip_scaling(index, node.input[0])
        factor *= scale
    return None


def find_attention_sites(model: onnx.ModelProto) -> list[AttentionSite]:
    """Every softmax attention that matches the timm layout (see the module's docstring)."""
    index = GraphIndex(model.graph)
    sites = []
    for softmax in model.graph.node:
        if softmax.op_type != "Softmax" or attribute(softmax, "axis", -1) not in (-1, 3):
            continue
        scores, score_factor = _strip_scaling(index, softmax.input[0])
        qk = index.producer.get(scores)
        pv = index.only_consumer(softmax.output[0], "MatMul")
        if qk is None or qk.op_type != "MatMul" or pv is None or pv.input[0] != softmax.output[0]:
            continue
        merge_t = index.only_consumer(pv.output[0], "Transpose")
        if merge_t is None or list(attribute(merge_t, "perm", [])) != [0, 2, 1, 3]:
            continue
        merge = index.only_consumer(merge_t.output[0], "Reshape")
        paths = [_trace(index, t) for t in (qk.input[0], qk.input[1], pv.input[1])]
        if merge is None or any(p is None for p in paths):
            continue
        q, k, v = paths
        if {id(q.reshape), id(k.reshape), id(v.reshape)} != {id(q.reshape)} or (q.part, k.part, v.part) != (0, 1, 2):
            continue
        if v.factor != 1.0:
            continue
        shape = [int(d) for d in index.constants[q.reshape.input[1]]]
        tokens, heads, head_dim = shape[1], shape[3], shape[4]
        if min(tokens, heads, head_dim) <= 0:
            continue  # a dynamic token count or head split: not this layout
        scope = softmax.name.rsplit("/", 1)[0] if "/" in softmax.name else softmax.name
        if not scope or any(site.name == scope for site in sites):  # names of the new nodes must be unique
            scope = f"{scope}/attention_{len(sites)}"
        sites.append(AttentionSite(q.reshape.input[0], tokens, heads, head_dim,
                                   q.factor * k.factor * score_factor, merge, scope))
    return sites


def fuse_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every matching attention as one MultiHeadAttention node; the count."""
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    graph = fused.graph
    sites = find_attention_sites(fused)
    if not sites:
        return fused, 0
    del graph.value_info[:]  # intermediate shapes change: inference recomputes them
    replacement = {id(site.merge): _fused_nodes(graph, site) for site in sites}
    nodes = []
    for node in graph.node:
        nodes.extend(replacement.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    drop_dead_nodes(graph)  # the layout chains the fused sites replaced
    if not any(o.domain == MS_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return onnx.shape_inference.infer_shapes(fused), len(sites)


def _fused_nodes(graph: onnx.GraphProto, site: AttentionSite) -> list[onnx.NodeProto]:
    """tokens-major QKV -> Split in three -> MultiHeadAttention -> the merge's own target shape."""
    p = site.name
    width = site.heads * site.head_dim
    # ONNX's shape inference does not know the contrib op: its output's type is declared so that
    # the tensors after it stay typed (the quantizer calibrates only typed float tensors).
    graph.value_info.append(helper.make_tensor_value_info(f"{p}/heads_merged", onnx.TensorProto.FLOAT,
                                                          [None, site.tokens, width]))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1, site.tokens, 3 * width], np.int64), f"{p}/qkv_tokens_shape"),
        numpy_helper.from_array(np.array([width] * 3, np.int64), f"{p}/qkv_split_sizes"),
    ])
    return [
        helper.make_node("Reshape", [site.qkv, f"{p}/qkv_tokens_shape"], [f"{p}/qkv_tokens"], name=f"{p}/QkvTokens"),
        helper.make_node("Split", [f"{p}/qkv_tokens", f"{p}/qkv_split_sizes"], [f"{p}/q", f"{p}/k", f"{p}/v"],
                         name=f"{p}/QkvSplit", axis=2),
        helper.make_node("MultiHeadAttention", [f"{p}/q", f"{p}/k", f"{p}/v"], [f"{p}/heads_merged"],
                         name=f"{p}/MultiHeadAttention", domain=MS_DOMAIN, num_heads=site.heads, scale=site.scale),
        helper.make_node("Reshape", [f"{p}/heads_merged", site.merge.input[1]], list(site.merge.output),
                         name=site.merge.name),
    ]
