"""Mixed-precision FP16 ONNX: matmuls and convolutions in FP16; LayerNorm, Softmax, reductions and
the whole scoring head in FP32; float32 inputs and outputs. This is the graph TensorRT builds a
strongly-typed FP16 engine from.

ONNX Runtime's CPU provider lacks FP16 kernels for several of these ops and inserts casts or
refuses some nodes; run FP16 graphs on the CUDA / TensorRT providers or TensorRT itself."""

from __future__ import annotations

import onnx

# Ops whose FP16 form overflows or loses too much for ViTs (DESIGN.md section 4).
FP32_OPS = {"LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Sqrt", "Pow", "Reciprocal",
            "TopK", "Resize", "AveragePool", "Sigmoid", "Div", "Elu"}
# Node-name prefixes (TorchScript exporter scopes) kept in FP32: the scoring head and input scaling.
FP32_SCOPES = ("/scoring/",)


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.name.startswith(FP32_SCOPES) or "/" not in n.name.strip("/")]


def to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    import logging

    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # The converter logs every shared initializer at INFO; its casts are correct either way.
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)

    return convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | FP32_OPS),
        node_block_list=fp32_nodes(model),
    )
