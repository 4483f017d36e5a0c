"""Mixed-precision FP16 ONNX: matmuls and convolutions in FP16; LayerNorm, Softmax, reductions and
the whole scoring head in FP32; float32 inputs and outputs. This is the graph TensorRT builds a
strongly-typed FP16 engine from.

ONNX Runtime's CPU provider lacks FP16 kernels for several of these ops and inserts casts or
refuses some nodes; run FP16 graphs on the CUDA / TensorRT providers or TensorRT itself."""

from __future__ import annotations

import onnx

# Ops whose FP16 form overflows or loses too much for ViTs (docs/design.md section 4).
FP32_OPS = {"LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Sqrt", "Pow", "Reciprocal",
            "TopK", "Resize", "AveragePool", "Sigmoid", "Div", "Elu"}
# Node-name prefixes (TorchScript exporter scopes) kept in FP32: the scoring head and input scaling.
FP32_SCOPES = ("/scoring/",)


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """The scoring head and the top-level input scaling of the uint8 path ("/Mul", "/Sub": the
    TorchScript exporter's root scope). Nodes named by ONNX Runtime's simplification
    ("gemm_output_reshape...", "Transpose_token...") are ordinary model nodes and go to FP16."""
    return [n.name for n in model.graph.node
            if n.name.startswith(FP32_SCOPES) or (n.name.startswith("/") and n.name.count("/") == 1)]


def to_mixed_fp16(model: onnx.ModelProto, keep_ops: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """`keep_ops`: further op types left in FP32 (the Q/DQ lowering keeps QuantizeLinear and
    DequantizeLinear out of the converter and fixes their types itself)."""
    import logging

    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )
    from onnxruntime.transformers.onnx_model import OnnxModel

    # The converter logs every shared initializer at INFO; its casts are correct either way.
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)

    mixed = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | FP32_OPS | keep_ops),
        node_block_list=fp32_nodes(model),
    )
    # The converter appends its input casts at the end, which onnx's checker and TensorRT's parser
    # reject: ONNX Runtime's own sort puts every node after its inputs' producers (types are then
    # inferred in order), deterministically.
    OnnxModel.graph_topological_sort(mixed.graph, is_deterministic=True)
    return drop_fp16_round_trips(mixed)


def drop_fp16_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Cast(to fp16) -> Cast(to fp32) pairs. The converter puts one between two FP32-kept
    nodes that follow each other, and before each float32 output, so FP32 tensors pass through FP16
    anyway: the scoring's squared feature norms (~1e5 on real images) overflowed to inf there and
    scores came out 1.0."""
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem_type = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    elem_type.update({i.name: i.data_type for i in inferred.initializer})
    graph_outputs = {o.name for o in graph.output}
    renamed: dict[str, str] = {}  # fp32 tensor coming out of a round trip -> the fp32 tensor before it
    dropped: set[str] = set()  # by output name: protobuf wrappers are not stable objects to id()
    for node in graph.node:
        first = producer.get(node.input[0]) if cast_to(node) == FLOAT else None
        if first is None or cast_to(first) != FLOAT16:
            continue
        if elem_type.get(first.input[0]) != FLOAT:
            continue  # e.g. an int64 shape cast to FP16 and back: a real conversion, not a round trip
        if node.output[0] in graph_outputs:  # keep the output's name: an identity from the FP32 tensor
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
        else:
            renamed[node.output[0]] = first.input[0]
            dropped.add(node.output[0])
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    keep = [n for n in graph.node if n.output[0] not in dropped]
    used = {i for n in keep for i in n.input} | graph_outputs
    keep = [n for n in keep if not (cast_to(n) == FLOAT16 and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(keep)  # still in order: inputs were only redirected to earlier tensors
    return model
