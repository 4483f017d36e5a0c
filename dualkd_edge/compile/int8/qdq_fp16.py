"""INT8 Q/DQ graphs whose unquantized layers are FP16: what a strongly-typed TensorRT build runs fast.

TensorRT's strongly-typed networks take every layer's precision from the graph. A Q/DQ model made
from the FP32 export runs all the layers between the INT8 matmuls in FP32 (slower than TensorRT
10.3's weak-typed INT8 + FP16). This pass lowers such a model the way NVIDIA's ModelOpt quantizes by
default, with FP16 as the high precision:
- the opset goes to 19, the first in which QuantizeLinear / DequantizeLinear take FP16 scales;
- the mixed-FP16 conversion of `fp16.py` runs with Q/DQ left out (LayerNorm, Softmax,
  reductions and the scoring stay FP32 as in the FP16 export);
- the casts it leaves around Q/DQ are folded into them: DequantizeLinear with an FP16 scale emits
  FP16 directly, and QuantizeLinear reads FP16 activations with an FP16 scale.
ONNX Runtime's CPU provider runs the result (for the accuracy gate), and `check` verifies it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from dualkd_edge.compile.graph_index import drop_dead_nodes

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
FP16_QDQ_OPSET = 19


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def drop_unused_domains(model: onnx.ModelProto) -> None:
    """ONNX Runtime's tools declare all of their vendor domains; keep only those the graph uses
    (TensorRT's parser and other runtimes need not know them)."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def upgrade_opset(model: onnx.ModelProto, version: int = FP16_QDQ_OPSET) -> onnx.ModelProto:
    """Convert the default domain to `version` (ONNX's converter rewrites e.g. ReduceMean's axes
    attribute into an input at 18); unused vendor domains are dropped on the way."""
    from onnx import version_converter

    drop_unused_domains(model)
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current >= version:
        return model
    upgraded = version_converter.convert_version(model, version)
    upgraded.metadata_props.extend(p for p in model.metadata_props if p not in upgraded.metadata_props)
    return upgraded


class _Fp16Scales:
    """FP16 copies of FP32 scale initializers, made once per scale."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.by_name = {i.name: i for i in graph.initializer}

    def fp16(self, name: str) -> str:
        new = f"{name}_fp16"
        if new not in self.by_name:
            values = numpy_helper.to_array(self.by_name[name]).astype(np.float16)
            if not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise ValueError(f"scale {name} does not fit FP16")
            tensor = numpy_helper.from_array(values, new)
            self.graph.initializer.append(tensor)
            self.by_name[new] = tensor
        return new


def fold_casts_into_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """DequantizeLinear -> Cast(fp16) becomes one DequantizeLinear with an FP16 scale; Cast(fp32) ->
    QuantizeLinear reads the FP16 tensor with an FP16 scale. Returns the model and the folds made."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    types.update({i.name: i.data_type for i in graph.initializer})
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    scales = _Fp16Scales(graph)
    graph_outputs = {o.name for o in graph.output}
    redirect: dict[str, str] = {}
    folds = 0
    for node in list(graph.node):
        if node.op_type == "DequantizeLinear":
            users = consumers.get(node.output[0], [])
            if users and node.output[0] not in graph_outputs and all(_cast_to(u) == TensorProto.FLOAT16 for u in users):
                node.input[1] = scales.fp16(node.input[1])
                redirect.update({u.output[0]: node.output[0] for u in users})
                folds += 1
        elif node.op_type == "QuantizeLinear":
            src = producer.get(node.input[0])
            if src is not None and _cast_to(src) == TensorProto.FLOAT and types.get(src.input[0]) == TensorProto.FLOAT16:
                node.input[0] = src.input[0]
                node.input[1] = scales.fp16(node.input[1])
                folds += 1
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in redirect:
                node.input[i] = redirect[name]
    drop_dead_nodes(graph, op_types={"Cast"})  # the Casts the folds left without a reader
    del graph.value_info[:]  # the folds changed types: let inference recompute them
    return onnx.shape_inference.infer_shapes(model), folds


def lower_qdq_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32-high Q/DQ model -> the same quantization with FP16 as the high precision (opset 19)."""
    from dualkd_edge.compile.fp16 import to_mixed_fp16

    upgraded = upgrade_opset(model)
    upgraded = onnx.shape_inference.infer_shapes(upgraded)
    mixed = to_mixed_fp16(upgraded, keep_ops=QDQ_OPS)
    lowered, _ = fold_casts_into_qdq(mixed)
    return lowered
