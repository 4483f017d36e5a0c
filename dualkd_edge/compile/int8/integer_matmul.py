"""INT8 projections as ONNX Runtime `MatMulIntegerToFloat` nodes, for the INT8 CPU target.

`quantize_static` writes each quantized Linear as QuantizeLinear -> DequantizeLinear -> Gemm, with
the INT8 weight and the INT32 bias behind their own DequantizeLinear, between a Reshape to 2-D and
one back (the pre-processing turned MatMul + Add into Gemm). ONNX Runtime's CPU provider fuses that
into QGemm, which starts its INT32 accumulator from the bias broadcast over the whole output. Measured
on this project's 2-core VM (ORT 1.32, AVX512-VNNI/AMX), (257 x 384) x (384 x 1536) with a quantized
input: QGemm 0.29 ms with the INT32 bias and 0.19 ms without it; `com.microsoft.MatMulIntegerToFloat`
computes the same integer product and adds a float bias as it scales the output: 0.20 ms. It also
takes the tokens as (B, N, C), so the Reshape pair around each projection goes where the shapes
prove it is a no-op. ONNX Runtime builds MatMulIntegerToFloat itself only from a bias-less MatMul;
the pre-processing's Gemm fusion comes first, so the lowering is done here.

The arithmetic is the same integer product; only the bias is added after scaling (bias_int32 x
x_scale x w_scale, as the DequantizeLinear of the bias computes it) instead of before, a float
rounding difference. `quantize` checks the lowered graph against the Q/DQ one on a calibration batch
before using it."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dualkd_edge.compile.graph_index import GraphIndex, attribute, drop_dead_nodes

MS_DOMAIN = "com.microsoft"


@dataclass
class _Projection:
    node: onnx.NodeProto  # the Gemm or MatMul
    output: str  # what the lowered node writes: the Gemm's output, or the bias Add's after a MatMul
    quantize: onnx.NodeProto  # QuantizeLinear of the activation
    weight: np.ndarray  # int8 (K, N)
    weight_scale: np.ndarray  # float32 () or (N,)
    weight_zero: np.ndarray  # int8, same shape as weight_scale
    bias: np.ndarray | None  # float32 (N,)


def _dequantized_constant(index: GraphIndex, tensor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int] | None:
    """(values, scale, zero point, axis) of a DequantizeLinear of a constant, else None."""
    node = index.producer.get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in index.constants:
        return None
    scale = index.constants.get(node.input[1])
    zero = index.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or (len(node.input) > 2 and node.input[2] and zero is None):
        return None
    return index.constants[node.input[0]], scale, zero, attribute(node, "axis", 1)


def _quantized_input(index: GraphIndex, node: onnx.NodeProto, exclusive: bool = True) -> onnx.NodeProto | None:
    """The per-tensor QuantizeLinear whose DequantizeLinear is `node`'s first input; when
    `exclusive`, only if nothing else reads either of them."""
    x_dq = index.producer.get(node.input[0])
    if x_dq is None or x_dq.op_type != "DequantizeLinear" or (exclusive and len(index.consumers[x_dq.output[0]]) != 1):
        return None
    quantize = index.producer.get(x_dq.input[0])
    if (quantize is None or quantize.op_type != "QuantizeLinear"
            or (exclusive and len(index.consumers[quantize.output[0]]) != 1)
            or list(quantize.input[1:]) != list(x_dq.input[1:]) or index.scalar(quantize.input[1]) is None):
        return None
    return quantize


def _float_bias(index: GraphIndex, node: onnx.NodeProto, position: int, n_out: int):
    """`node`'s bias input as float32 (n_out,): None when it has none, False when it is not a
    (dequantized) constant of that size."""
    if len(node.input) <= position or not node.input[position]:
        return None
    dequantized = _dequantized_constant(index, node.input[position])
    if dequantized is not None:
        values, scale, zero, _ = dequantized
        offset = 0 if zero is None else zero.astype(np.float32)
        bias = (values.astype(np.float32) - offset) * scale.astype(np.float32)
    else:
        bias = index.constants.get(node.input[position])
    if bias is None or bias.size not in (1, n_out):
        return False
    return np.broadcast_to(bias.reshape(-1), (n_out,)).astype(np.float32)


def _int8_weight(index: GraphIndex, tensor: str, ndim: int, out_axis: int, transposed: bool = False):
    """(weight, scale, zero point) of a per-tensor or per-output-channel INT8 weight behind a
    DequantizeLinear, with the weight transposed first if `transposed`; None otherwise. The scale
    and zero point are float32 / int8 of shape () or (channels,)."""
    found = _dequantized_constant(index, tensor)
    if found is None or found[0].dtype != np.int8 or found[0].ndim != ndim:
        return None
    w, scale, zero, axis = found
    axis %= ndim
    if transposed:
        w, axis = w.T, ndim - 1 - axis
    if scale.size != 1 and (scale.shape != (w.shape[out_axis],) or axis != out_axis):
        return None
    zero = np.zeros(scale.shape, np.int8) if zero is None else zero.reshape(scale.shape)
    return w, scale.astype(np.float32), zero


def _match(index: GraphIndex, node: onnx.NodeProto) -> _Projection | None:
    """A Gemm (what the pre-processing makes of a static-shape Linear) or a MatMul plus its bias Add
    (a dynamic-batch one) with a quantized input and an INT8 weight."""
    if node.op_type == "Gemm" and (attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0
                                   or attribute(node, "beta", 1.0) != 1.0):
        return None
    quantize = _quantized_input(index, node, exclusive=False)  # a Shape may read it too
    weight = _int8_weight(index, node.input[1], 2, 1, transposed=bool(attribute(node, "transB", 0)))
    if quantize is None or weight is None:
        return None
    w, w_scale, w_zero = weight
    n_out = w.shape[1]
    output, bias = node.output[0], None
    if node.op_type == "Gemm":
        bias = _float_bias(index, node, 2, n_out)
    elif (add := index.only_consumer(node.output[0], "Add")) is not None:
        position = 1 - list(add.input).index(node.output[0])
        bias = _float_bias(index, add, position, n_out)
        output, bias = (add.output[0], bias) if bias is not None and bias is not False else (output, None)
    if bias is False:
        return None
    return _Projection(node, output, quantize, np.ascontiguousarray(w), w_scale, w_zero, bias)


def _shapes(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    """Declared shapes (None where a dimension is symbolic or unknown)."""
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*graph.value_info, *graph.input, *graph.output] if v.type.tensor_type.HasField("shape")}


def _resolved_leading_dims(leading: list[int | None], rows: int | None) -> list[int] | None:
    """The leading dims of the tokens, filling at most one unknown from their product `rows`."""
    unknown = [i for i, d in enumerate(leading) if d is None]
    known = math.prod(d for d in leading if d is not None)
    if not unknown:
        return leading if rows in (None, known) else None
    if len(unknown) > 1 or rows is None or known == 0 or rows % known:
        return None
    return [rows // known if d is None else d for d in leading]


def _reshape_target(index: GraphIndex, node: onnx.NodeProto) -> list[int] | None:
    target = index.constants.get(node.input[1]) if node.op_type == "Reshape" else None
    if target is None or 0 in target.tolist() or attribute(node, "allowzero", 0):
        return None
    return target.astype(int).tolist()


def _resolve(target: list[int], size: int) -> list[int] | None:
    """A Reshape target with its -1 filled in for a tensor of `size` elements."""
    if target.count(-1) > 1:
        return None
    fixed = math.prod(d for d in target if d != -1)
    if -1 not in target:
        return target if fixed == size else None
    return [size // fixed if d == -1 else d for d in target] if fixed and size % fixed == 0 else None


def _unflatten(index: GraphIndex, shapes: dict, p: _Projection) -> tuple[str, list[int], list[onnx.NodeProto]] | None:
    """When the projection's input is a 2-D Reshape of (..., K) tokens and every reader of its
    output reshapes it back without 0-dims: the tokens tensor, the (..., N) output shape, and the
    readers whose target is exactly that shape (no-ops once the product is computed on the tokens)."""
    if _quantized_input(index, p.node) is None:  # the quantized tensor changes shape: it must be this node's alone
        return None
    flatten = index.producer.get(p.quantize.input[0])
    if flatten is None or flatten.op_type != "Reshape" or len(index.consumers[flatten.output[0]]) != 1:
        return None
    tokens = flatten.input[0]
    shape = shapes.get(tokens)
    flat = _reshape_target(index, flatten)
    k, n = p.weight.shape
    if not shape or len(shape) < 3 or shape[-1] != k or flat is None or len(flat) != 2 or flat[1] != k:
        return None
    leading = _resolved_leading_dims(shape[:-1], flat[0] if flat[0] > 0 else None)
    readers = [node for node, _ in index.consumers.get(p.node.output[0], [])]
    if leading is None or not readers or any(_reshape_target(index, r) is None for r in readers):
        return None
    out_shape = leading + [n]
    same = [r for r in readers if _resolve(_reshape_target(index, r), math.prod(out_shape)) == out_shape]
    return tokens, out_shape, same


def lower_projections(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of the Q/DQ `model` with each quantized Gemm and patch-embedding Conv as
    MatMulIntegerToFloat, and how many were lowered."""
    model = copy.deepcopy(model)
    graph = model.graph
    n_gemms, ranks = _lower_gemms(graph)
    n_patches = _lower_patch_embeddings(graph)
    if not n_gemms + n_patches:
        return model, 0
    _fold_output_scales(graph)
    _split_projections(graph, ranks)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, n_gemms + n_patches


def _activation(quantize: onnx.NodeProto) -> tuple[str, str, str]:
    """(quantized tensor, scale, zero point) written by a QuantizeLinear."""
    return quantize.output[0], quantize.input[1], quantize.input[2] if len(quantize.input) > 2 else ""


def _lower_gemms(graph: onnx.GraphProto) -> tuple[int, dict[str, int]]:
    """Each matched Gemm or MatMul (+ bias Add) as MatMulIntegerToFloat, a Gemm on the (..., K)
    tokens where the shapes allow; how many, and the rank of each one's output."""
    index = GraphIndex(graph)
    shapes = _shapes(graph)
    replaced: dict[str, onnx.NodeProto] = {}  # Gemm output -> its replacement
    bypassed: dict[str, str] = {}  # output of a Reshape that became a no-op -> the tensor it copied
    stale: set[str] = set()  # tensors whose declared shape changed
    ranks: dict[str, int | None] = {}
    for node in graph.node:
        p = _match(index, node) if node.op_type in ("Gemm", "MatMul") else None
        if p is None:
            continue
        out = p.output
        replaced[out] = _projection(graph, node.name or out, out, _activation(p.quantize), p.weight,
                                    p.weight_scale, p.weight_zero, p.bias)
        ranks[out] = len(shapes[out]) if out in shapes else (2 if node.op_type == "Gemm" else None)
        if node.op_type == "Gemm" and (tokens := _unflatten(index, shapes, p)) is not None:
            tokens_in, out_shape, no_ops = tokens
            p.quantize.input[0] = tokens_in  # QuantizeLinear is elementwise: quantize the tokens as they are
            stale.update({p.quantize.output[0], out})
            bypassed.update({reshape.output[0]: out for reshape in no_ops})
            ranks[out] = len(out_shape)
    if not replaced:
        return 0, ranks
    nodes = [replaced.get(n.output[0], n) for n in graph.node]  # the Gemm, or the bias Add after a MatMul
    nodes = [n for n in nodes if not (n.op_type == "Reshape" and n.output[0] in bypassed)]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in bypassed:
                node.input[i] = bypassed[name]
    for kept_output in {o.name for o in graph.output} & set(bypassed):  # a graph output keeps its name
        nodes.append(helper.make_node("Identity", [bypassed[kept_output]], [kept_output]))
    del graph.node[:]
    graph.node.extend(nodes)
    kept_info = [v for v in graph.value_info if v.name not in stale and v.name not in bypassed]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    drop_dead_nodes(graph, {"DequantizeLinear", "Reshape", "MatMul"})
    return len(replaced), {out: rank for out, rank in ranks.items() if rank is not None}


def _lower_patch_embeddings(graph: onnx.GraphProto) -> int:
    """A quantized Conv whose kernel equals its stride (ViT patch embedding) followed by the flatten
    and transpose to (B, patches, C): the quantized image cut into patches by two Reshapes and a
    Transpose of UINT8 data, then one MatMulIntegerToFloat. Its float form cost ~0.9 ms per
    embedding at 224 px, with the weights dequantized on every run."""
    index = GraphIndex(graph)
    shapes = _shapes(graph)
    lowered: dict[str, list[onnx.NodeProto]] = {}
    patch_rows: dict[tuple, str] = {}  # (quantized image, grid) -> its patches, cut once for every Conv
    for conv in graph.node:
        found = _match_patch_embedding(index, shapes, conv) if conv.op_type == "Conv" else None
        if found is None:
            continue
        quantize, (weight, scale, zero, bias), grid, tokens_out = found
        xq, x_scale, x_zero = _activation(quantize)
        if (xq, grid) not in patch_rows:
            patch_rows[xq, grid] = _cut_patches(graph, lowered.setdefault(xq, [quantize]), xq, grid,
                                                f"{xq}/patches{len(patch_rows)}")
        p = conv.name or conv.output[0]
        lowered[tokens_out] = [_projection(graph, p, tokens_out, (patch_rows[xq, grid], x_scale, x_zero),
                                           weight, scale, zero, bias)]
    _replace(graph, lowered, {"Conv", "Reshape", "Transpose", "DequantizeLinear"})
    return len(lowered) - len({image for image, _ in patch_rows})


def _cut_patches(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], image: str, grid: tuple, name: str) -> str:
    """Append to `nodes` the layout nodes that turn the (B, C, H, W) `image` into (B, patches,
    C x kh x kw) rows in the Conv weight's (C, kh, kw) order; the rows' tensor."""
    batch, channels, grid_h, k_h, grid_w, k_w = grid
    graph.initializer.extend([
        numpy_helper.from_array(np.array(grid, np.int64), f"{name}/grid_shape"),
        numpy_helper.from_array(np.array([batch, grid_h * grid_w, channels * k_h * k_w], np.int64), f"{name}/rows_shape")])
    nodes.extend([
        helper.make_node("Reshape", [image, f"{name}/grid_shape"], [f"{name}/grid"], name=f"{name}/Grid"),
        helper.make_node("Transpose", [f"{name}/grid"], [f"{name}/patch_major"], name=f"{name}/PatchMajor",
                         perm=[0, 2, 4, 1, 3, 5]),
        helper.make_node("Reshape", [f"{name}/patch_major", f"{name}/rows_shape"], [f"{name}/rows"], name=f"{name}/Rows"),
    ])
    return f"{name}/rows"


def _match_patch_embedding(index: GraphIndex, shapes: dict, conv: onnx.NodeProto):
    """(QuantizeLinear, (weight (K, C), scale, zero, bias), 6-D patch grid, tokens tensor) or None."""
    kernel = attribute(conv, "kernel_shape")
    if (kernel is None or len(kernel) != 2 or list(attribute(conv, "strides", [1, 1])) != list(kernel)
            or any(attribute(conv, "pads", [0, 0, 0, 0])) or any(d != 1 for d in attribute(conv, "dilations", [1, 1]))
            or attribute(conv, "group", 1) != 1 or attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return None
    quantize = _quantized_input(index, conv, exclusive=False)  # the image may feed several
    if quantize is None:
        return None
    weight = _int8_weight(index, conv.input[1], 4, 0)
    if weight is None:
        return None
    w, w_scale, w_zero = weight
    c_out = w.shape[0]
    bias = _float_bias(index, conv, 2, c_out)
    shape = shapes.get(quantize.input[0])
    if bias is False or not shape or len(shape) != 4 or None in shape[1:] or shape[1] != w.shape[1]:
        return None
    _, channels, height, width = shape
    (k_h, k_w) = kernel
    if height % k_h or width % k_w:
        return None
    grid_h, grid_w = height // k_h, width // k_w
    flatten = index.only_consumer(conv.output[0], "Reshape")
    target = _reshape_target(index, flatten) if flatten is not None else None
    if target is None or len(target) != 3 or target[1] != c_out or target[2] not in (-1, grid_h * grid_w):
        return None
    transpose = index.only_consumer(flatten.output[0], "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 2, 1]:
        return None
    batch = shape[0] if shape[0] is not None else -1
    if target[0] not in (-1, batch) or (target[0] == -1 and target[2] == -1):
        return None
    return (quantize, (np.ascontiguousarray(w.reshape(c_out, -1).T), w_scale, w_zero, bias),
            (int(batch), channels, grid_h, k_h, grid_w, k_w), transpose.output[0])


def _projection_constants(index: GraphIndex, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """weight (K, N), per-column scale and zero point (N,), bias (N,) or None of a lowered projection."""
    weight = index.constants[node.input[1]]
    n_out = weight.shape[1]
    scale = np.broadcast_to(index.constants[node.input[3]].reshape(-1), (n_out,)).astype(np.float32)
    zero = np.broadcast_to(index.constants[node.input[5]].reshape(-1), (n_out,)).astype(np.int8)
    bias = index.constants[node.input[6]] if len(node.input) > 6 and node.input[6] else None
    return weight, scale, zero, bias


def _projection(graph: onnx.GraphProto, name: str, output: str, activation: tuple[str, str, str],
                weight: np.ndarray, scale: np.ndarray, zero: np.ndarray, bias: np.ndarray | None) -> onnx.NodeProto:
    """One MatMulIntegerToFloat of the quantized `activation` (tensor, scale, zero point), with its
    constants added to the graph under `name`."""
    arrays = {"weight_int8": np.ascontiguousarray(weight), "weight_scale": scale.astype(np.float32),
              "weight_zero_point": np.ascontiguousarray(zero)}
    if bias is not None:
        arrays["bias"] = bias.astype(np.float32)
    graph.initializer.extend(numpy_helper.from_array(a, f"{name}/{k}") for k, a in arrays.items())
    tensor, x_scale, x_zero = activation
    inputs = [tensor, f"{name}/weight_int8", x_scale, f"{name}/weight_scale", x_zero,
              f"{name}/weight_zero_point"] + ([f"{name}/bias"] if bias is not None else [])
    return helper.make_node("MatMulIntegerToFloat", inputs, [output], name=name, domain=MS_DOMAIN)


def _same_activation(node: onnx.NodeProto) -> tuple[str, str, str]:
    return node.input[0], node.input[2], node.input[4]


def _fold_output_scales(graph: onnx.GraphProto) -> None:
    """A projection whose only reader multiplies it by a per-channel constant (ViT layer scale):
    the constant goes into the output scale and the bias, and the Mul goes."""
    index = GraphIndex(graph)
    folded: dict[str, list[onnx.NodeProto]] = {}  # Mul output -> projection writing it directly
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat" or (mul := index.only_consumer(node.output[0], "Mul")) is None:
            continue
        factor = index.constants.get(mul.input[1 - list(mul.input).index(node.output[0])])
        weight, scale, zero, bias = _projection_constants(index, node)
        n_out = weight.shape[1]
        if factor is None or factor.size not in (1, n_out) or (factor.size > 1 and factor.shape[-1] != n_out):
            continue
        factor = np.broadcast_to(factor.reshape(-1), (n_out,)).astype(np.float32)
        folded[mul.output[0]] = [_projection(graph, f"{node.name}/scaled", mul.output[0], _same_activation(node), weight,
                                             scale * factor, zero, None if bias is None else bias * factor)]
    _replace(graph, folded, {"Mul", "MatMulIntegerToFloat"})


def _split_sizes(index: GraphIndex, split: onnx.NodeProto, total: int) -> list[int] | None:
    sizes = index.constants.get(split.input[1]) if len(split.input) > 1 and split.input[1] else None
    sizes = attribute(split, "split") if sizes is None else sizes.tolist()
    if sizes is None:
        width, rest = divmod(total, len(split.output))
        sizes = None if rest else [width] * len(split.output)
    return list(sizes) if sizes is not None and sum(sizes) == total else None


def _split_projections(graph: onnx.GraphProto, ranks: dict[str, int]) -> None:
    """A projection whose parts are split out (the fused QKV): one projection per part, all reading
    the same quantized input, and no Split copying the parts out. Two layouts: a Split along the
    last axis (the fused attention's), and a reshape to (B, N, parts, heads, head_dim) split along
    axis 2 and squeezed (the Encoder-Decoder student's linear attention)."""
    index = GraphIndex(graph)
    parts: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            continue
        weight, scale, zero, bias = _projection_constants(index, node)
        found = _split_along_last_axis(index, node, ranks, weight.shape[1]) or _split_of_heads(index, node, weight.shape[1])
        if found is None:
            continue
        outputs, sizes, shape = found
        bounds = np.cumsum([0, *sizes])
        for i, (out, a, b) in enumerate(zip(outputs, bounds[:-1], bounds[1:])):
            name = f"{node.name}/part{i}"
            part = _projection(graph, name, out if shape is None else f"{name}/tokens", _same_activation(node),
                               weight[:, a:b], scale[a:b], zero[a:b], None if bias is None else bias[a:b])
            parts[out] = [part]
            if shape is not None:  # (B, N, heads x head_dim) -> (B, N, heads, head_dim), as the Squeeze gave
                graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}/heads_shape"))
                parts[out].append(helper.make_node("Reshape", [f"{name}/tokens", f"{name}/heads_shape"], [out],
                                                   name=f"{name}/Heads"))
    _replace(graph, parts, {"Split", "Squeeze", "Gather", "Reshape", "MatMulIntegerToFloat"})


def _split_along_last_axis(index: GraphIndex, node: onnx.NodeProto, ranks: dict[str, int], total: int):
    """(the Split's outputs, their widths, None) or None."""
    split = index.only_consumer(node.output[0], "Split")
    rank = ranks.get(node.output[0])
    if split is None or rank is None or attribute(split, "axis", 0) not in (-1, rank - 1):
        return None
    sizes = _split_sizes(index, split, total)
    return None if sizes is None else (list(split.output), sizes, None)


def _split_of_heads(index: GraphIndex, node: onnx.NodeProto, total: int):
    """Reshape to (B, N, parts, heads, head_dim), then each part taken out along axis 2 (a Gather
    of one index, or a Split into ones and a Squeeze each): (the parts' tensors in order, their
    widths, the (B, N, heads, head_dim) target) or None."""
    reshape = index.only_consumer(node.output[0], "Reshape")
    target = _reshape_target(index, reshape) if reshape is not None else None
    if target is None or len(target) != 5 or min(target[2:]) <= 0 or math.prod(target[2:]) != total:
        return None
    n_parts = target[2]
    readers = [r for r, _ in index.consumers.get(reshape.output[0], [])]
    if readers and all(r.op_type == "Gather" for r in readers):
        taken = {}
        for gather in readers:
            position = index.constants.get(gather.input[1])
            if attribute(gather, "axis", 0) not in (2, -3) or position is None or position.ndim != 0:
                return None
            taken[int(position) % n_parts] = gather.output[0]
        outputs = [taken.get(i) for i in range(n_parts)]
    elif len(readers) == 1 and readers[0].op_type == "Split" and attribute(readers[0], "axis", 0) in (2, -3):
        split = readers[0]
        if len(split.output) != n_parts or _split_sizes(index, split, n_parts) != [1] * n_parts:
            return None
        outputs = [_squeezed(index, out) for out in split.output]
    else:
        return None
    if None in outputs or len(set(outputs)) != n_parts or len(readers) not in (1, n_parts):
        return None
    return outputs, [total // n_parts] * n_parts, target[:2] + target[3:]


def _squeezed(index: GraphIndex, tensor: str) -> str | None:
    """The output of the one Squeeze of axis 2 that reads `tensor`."""
    squeeze = index.only_consumer(tensor, "Squeeze")
    if squeeze is None:
        return None
    axes = attribute(squeeze, "axes")
    if axes is None and len(squeeze.input) > 1:
        axes = index.constants.get(squeeze.input[1])
        axes = None if axes is None else axes.tolist()
    return squeeze.output[0] if axes is not None and list(axes) in ([2], [-3]) else None


def _replace(graph: onnx.GraphProto, new: dict[str, list[onnx.NodeProto]], dead_types: set[str]) -> None:
    """Put the nodes of `new` where the node that wrote their key tensor was, then drop what is unread."""
    if not new:
        return
    nodes = []
    for node in graph.node:
        written = [o for o in node.output if o in new]
        for tensor in written:
            nodes.extend(new[tensor])
        if not written:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    drop_dead_nodes(graph, dead_types)
