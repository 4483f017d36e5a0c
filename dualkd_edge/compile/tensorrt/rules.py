"""Offline TensorRT conformance check: the ONNX-parser and builder rules that matter for graphs like
ours, per TensorRT version, executable without TensorRT or a GPU (`dualkd-edge check`).

What TensorRT refuses is learned on the device, after a copy and a long build, unless it is
checked before. The rules below come from TensorRT's own documentation: the ONNX parser's operator
matrix and restrictions (onnx-tensorrt docs/operators.md for 10.x), its Q/DQ importer (INT8 / FP8 /
INT4 into DequantizeLinear, zero points 0, positive constant scales, per-channel only for weights on
the output-channel axis), ITopKLayer (K <= 3840), the builder's optimization profiles (we give a
profile for the batch dimension only), strongly-typed networks (one precision per op, as ONNX's type
constraints say) and the DLA guide (static shapes; gone after TensorRT 10.7).
Each rule is one function; a violation names the node, the rule and what was expected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto

from dualkd_edge.compile.graph_index import GraphIndex, attribute

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
QUANTIZED_TYPES = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}
# Types TensorRT tensors can have (UINT8 only as a network input or output).
TENSORRT_TYPES = FLOAT_TYPES | QUANTIZED_TYPES | {TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL,
                                                  TensorProto.UINT8}
TYPE_NAMES = {v: k for k, v in TensorProto.DataType.items()}

# ONNX operators TensorRT 10's parser imports (onnx-tensorrt docs/operators.md, "Y" rows).
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min
Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Upsample Where Xor
""".split())

# Inputs that TensorRT's parser needs as constants ("`axes` must be an initializer").
CONSTANT_INPUTS = {"Pad": (3,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
                   "ReduceProd": (1,), "ReduceL2": (1,), "ReduceSumSquare": (1,), "Slice": (3,), "Squeeze": (1,),
                   "Unsqueeze": (1,), "CumSum": (1,), "TopK": (1,)}
# Ops whose floating-point inputs must share one type (strongly-typed networks; ONNX's own T constraint).
SAME_TYPE_INPUTS = {"Add": None, "Sub": None, "Mul": None, "Div": None, "MatMul": None, "Gemm": None,
                    "Conv": None, "Concat": None, "Max": None, "Min": None, "Sum": None, "Mean": None,
                    "Where": (1, 2), "LayerNormalization": None, "Equal": None, "Less": None, "Greater": None}
RESIZE_COORDINATE_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
TOPK_MAX_K = 3840


@dataclass(frozen=True)
class TensorRTProfile:
    """What one TensorRT release's parser and builder accept."""

    name: str
    max_opset: int
    dla: bool  # DLA support (TensorRT 10.7 was the last 10.x with DLA; none in 11)
    min_opset: int = 9


PROFILES = {
    # The 10.x parser documents opsets 9..20 (JetPack 6 ships 10.3).
    "10.3": TensorRTProfile("10.3", max_opset=20, dla=True),
    "10.13": TensorRTProfile("10.13", max_opset=20, dla=False),
    "11": TensorRTProfile("11", max_opset=24, dla=False),
}


def profile_for_version(version: str) -> TensorRTProfile:
    """The rules of the nearest profile for an installed TensorRT version string ("10.3.0.30")."""
    parts = version.split(".")
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if major < 10:
        from dualkd_edge.errors import UserError

        raise UserError(f"TensorRT {version}: dualkd-edge builds with TensorRT 10 or 11 (JetPack 6 ships 10.3)")
    if major >= 11:
        return PROFILES["11"]
    if (major, minor) >= (10, 8):  # after DLA was dropped
        return PROFILES["10.13"]
    return PROFILES["10.3"]


@dataclass(frozen=True)
class Violation:
    node: str  # node name, or "graph" / an input name for graph-level rules
    op_type: str
    rule: str
    message: str

    def format(self, profile: TensorRTProfile) -> str:
        where = f"node {self.node} ({self.op_type})" if self.op_type else self.node
        return f"TensorRT {profile.name}: {where}: {self.rule}: {self.message}"


class GraphFacts:
    """What the rules need to know about a graph: constants, producers, consumers, inferred types."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        index = GraphIndex(self.graph)
        self.constants, self.producer, self.consumers = index.constants, index.producer, index.consumers
        self.inference_error = ""
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except onnx.shape_inference.InferenceError as exc:
            self.inference_error = str(exc).strip().splitlines()[0][:300]
            inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                       for v in [*g.value_info, *g.input, *g.output] if v.type.tensor_type.HasField("shape")}
        for i in self.graph.initializer:
            self.types[i.name] = i.data_type
            self.shapes[i.name] = list(i.dims)

    def type_of(self, name: str) -> int:
        return self.types.get(name, TensorProto.UNDEFINED)

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        return attribute(node, name, default)


def _violation(node: onnx.NodeProto, rule: str, message: str) -> Violation:
    return Violation(node.name or node.output[0], node.op_type, rule, message)


def _type_name(t: int) -> str:
    return TYPE_NAMES.get(t, str(t))


# -- graph-level rules ------------------------------------------------------------------------------

def rule_opset(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    if not profile.min_opset <= facts.opset <= profile.max_opset:
        yield Violation("graph", "", "opset", f"opset {facts.opset} is outside what the parser supports "
                        f"({profile.min_opset}..{profile.max_opset})")


def rule_dynamic_dims(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    """The optimization profile we build covers the batch dimension only."""
    initializers = {i.name for i in facts.graph.initializer}
    for inp in facts.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if k > 0 and not d.HasField("dim_value"):
                yield Violation(f"input {inp.name}", "", "dynamic-dim",
                                f"dimension {k} is dynamic ({d.dim_param or '?'}); only the batch dimension "
                                "may be dynamic (the build's optimization profile covers it alone)")


def rule_io_types(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for v in [*facts.graph.input, *facts.graph.output]:
        t = v.type.tensor_type.elem_type
        if t not in TENSORRT_TYPES or t in QUANTIZED_TYPES:
            yield Violation(f"tensor {v.name}", "", "io-type", f"{_type_name(t)} is not a TensorRT network I/O type")


def rule_internal_uint8(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    """UINT8 is only a network input or output type: no op may produce it inside the graph, and a
    UINT8 input goes straight into a Cast (TensorRT's Transpose, Slice, ... take no UINT8)."""
    outputs = {o.name for o in facts.graph.output}
    for node in facts.graph.node:
        for out in node.output:
            if facts.type_of(out) == TensorProto.UINT8 and out not in outputs:
                yield _violation(node, "uint8-tensor", f"produces UINT8 tensor {out}; TensorRT allows UINT8 only as "
                                 "a network input or output (quantize to INT8, symmetric)")
    for inp in facts.graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        for consumer, _ in facts.consumers.get(inp.name, []):
            if consumer.op_type != "Cast":
                yield _violation(consumer, "uint8-input", f"reads UINT8 input {inp.name} directly; cast it to float "
                                 "first (TensorRT's only use of a UINT8 input)")


def rule_type_inference(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    if facts.inference_error:
        yield Violation("graph", "", "type-inference", f"ONNX type inference fails: {facts.inference_error}")


def rule_dla(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    """Only with --dla: DLA needs a TensorRT that has it, static shapes and FP16/INT8 compute."""
    if not profile.dla:
        yield Violation("graph", "", "dla", f"TensorRT {profile.name} has no DLA support (10.7 was the last 10.x "
                        "with DLA; JetPack 6 ships 10.3)")
    for inp in facts.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not all(d.HasField("dim_value") for d in dims):
            yield Violation(f"input {inp.name}", "", "dla-static-shape",
                            "DLA needs static shapes; export with a fixed --batch")
    reduced = {TensorProto.FLOAT16, TensorProto.INT8}
    if not any(t in reduced for t in facts.types.values()):
        yield Violation("graph", "", "dla-precision", "DLA runs FP16 or INT8 only and this graph is FP32 throughout; "
                        "export with --precision fp16 or quantize it")


# -- node-level rules -----------------------------------------------------------------------------

def rule_operator_support(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.domain not in ("", "ai.onnx"):
            yield _violation(node, "custom-op", f"domain {node.domain!r} needs a TensorRT plugin; export standard "
                             "ONNX only")
        elif node.op_type not in SUPPORTED_OPS:
            yield _violation(node, "unsupported-op", f"{node.op_type} is not supported by TensorRT's ONNX parser")


def rule_constant_inputs(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if len(node.input) > index and node.input[index] and node.input[index] not in facts.constants:
                yield _violation(node, "constant-input", f"input {index} ({node.input[index]}) must be a constant "
                                 "(initializer)")


def rule_same_float_type(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    """A strongly-typed network takes each op's precision from its inputs: they must agree."""
    for node in facts.graph.node:
        if node.op_type not in SAME_TYPE_INPUTS:
            continue
        picked = SAME_TYPE_INPUTS[node.op_type]
        names = [n for i, n in enumerate(node.input) if n and (picked is None or i in picked)]
        floats = {facts.type_of(n) for n in names} & FLOAT_TYPES
        if len(floats) > 1:
            detail = ", ".join(f"{n}: {_type_name(facts.type_of(n))}" for n in names)
            yield _violation(node, "mixed-precision", f"inputs of different float types ({detail}); a strongly-typed "
                             "network needs a Cast")


def _scale_problem(facts: GraphFacts, node: onnx.NodeProto) -> str | None:
    scale_name = node.input[1] if len(node.input) > 1 else ""
    if scale_name not in facts.constants:
        return f"scale {scale_name or '(missing)'} must be a constant"
    scale = facts.constants[scale_name]
    if scale.size == 0 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        return f"scale {scale_name} must be finite and strictly positive"
    if scale.ndim > 1:
        return f"scale {scale_name} has rank {scale.ndim}; per-tensor (scalar) or per-channel (1-D) expected"
    return None


def _output_channel_axis(consumer: onnx.NodeProto, index: int, rank: int, facts: GraphFacts) -> int | None:
    """The axis of a weight input that holds the consumer's output channels."""
    if consumer.op_type == "Conv" and index == 1:
        return 0
    if consumer.op_type == "ConvTranspose" and index == 1:
        return 1
    if consumer.op_type == "MatMul" and index == 1:
        return rank - 1
    if consumer.op_type == "Gemm" and index == 1:
        return 0 if facts.attr(consumer, "transB", 0) else 1
    return None


def rule_quantize_dequantize(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        problem = _scale_problem(facts, node)
        if problem:
            yield _violation(node, "qdq-scale", problem)
        if len(node.input) > 2 and node.input[2]:
            zp_name = node.input[2]
            if facts.type_of(zp_name) == TensorProto.UINT8:
                yield _violation(node, "qdq-uint8", "UINT8 zero point (asymmetric activations): TensorRT quantizes "
                                 "to signed INT8 only; quantize with --target tensorrt")
            zp = facts.constants.get(zp_name)
            if zp is None:
                yield _violation(node, "qdq-zero-point", f"zero point {zp_name} must be a constant")
            elif np.any(zp.astype(np.float64) != 0):
                yield _violation(node, "qdq-zero-point", "zero points must be 0 (TensorRT supports symmetric "
                                 "quantization only)")
        if node.op_type == "DequantizeLinear":
            yield from _dequantize_rules(facts, node)
        else:
            yield from _quantize_rules(facts, node)


def _quantize_rules(facts: GraphFacts, node: onnx.NodeProto) -> Iterator[Violation]:
    x_type = facts.type_of(node.input[0])
    if x_type not in FLOAT_TYPES:
        yield _violation(node, "qdq-input-type", f"quantizes a {_type_name(x_type)} tensor; FP32/FP16/BF16 expected")
    scale = facts.constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is not None and scale.size > 1:
        yield _violation(node, "qdq-per-channel-activation", "per-channel scales on a QuantizeLinear: TensorRT "
                         "quantizes activations per tensor only")
    if facts.opset >= 19 and len(node.input) > 1 and facts.type_of(node.input[1]) != x_type:
        yield _violation(node, "qdq-scale-type", f"scale type {_type_name(facts.type_of(node.input[1]))} differs from "
                         f"the input's {_type_name(x_type)}")


def _dequantize_rules(facts: GraphFacts, node: onnx.NodeProto) -> Iterator[Violation]:
    x_name = node.input[0]
    x_type = facts.type_of(x_name)
    if x_type not in QUANTIZED_TYPES:
        hint = " (a quantized bias: quantize with QuantizeBias off)" if x_type == TensorProto.INT32 else ""
        yield _violation(node, "dq-input-type", f"dequantizes {_type_name(x_type)}{hint}; TensorRT's parser accepts "
                         "INT8, FP8 or INT4 only")
        return
    scale = facts.constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None or scale.size <= 1:
        return
    if x_name not in facts.constants:
        yield _violation(node, "qdq-per-channel-activation", "per-channel scales on an activation: TensorRT "
                         "quantizes activations per tensor only")
        return
    shape = list(facts.constants[x_name].shape)
    axis = facts.attr(node, "axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape) or shape[axis] != scale.size:
        yield _violation(node, "qdq-axis", f"{scale.size} scales do not match axis {axis} of weight {x_name} {shape}")
        return
    for consumer, index in facts.consumers.get(node.output[0], []):
        expected = _output_channel_axis(consumer, index, len(shape), facts)
        if expected is None:
            yield _violation(node, "qdq-per-channel-consumer", f"per-channel weight feeds {consumer.op_type} "
                             f"{consumer.name} input {index}, which takes per-tensor scales only")
        elif expected != axis:
            yield _violation(node, "qdq-axis", f"per-channel axis {axis} of weight {x_name} is not the output-channel "
                             f"axis {expected} of {consumer.op_type} {consumer.name}")


def rule_topk(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type != "TopK":
            continue
        k = facts.constants.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            continue  # rule_constant_inputs reports it
        k_value = int(np.asarray(k).reshape(-1)[0])
        if k_value > TOPK_MAX_K:
            yield _violation(node, "topk-k", f"K = {k_value} exceeds TensorRT's limit of {TOPK_MAX_K}; take the top "
                             "values of a reduced map")
        shape = facts.shapes.get(node.input[0])
        axis = facts.attr(node, "axis", -1)
        if shape:
            axis_n = axis + len(shape) if axis < 0 else axis
            if shape[axis_n] is not None and k_value > shape[axis_n]:
                yield _violation(node, "topk-k", f"K = {k_value} exceeds the axis size {shape[axis_n]}")
            if axis_n < len(shape) - 4:
                yield _violation(node, "topk-axis", "TensorRT reduces over one of the last four dimensions only")
        if facts.attr(node, "sorted", 1) != 1:
            yield _violation(node, "topk-sorted", "sorted must be 1")


def rule_resize(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type != "Resize":
            continue
        mode = facts.attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        coord = facts.attr(node, "coordinate_transformation_mode", b"half_pixel")
        coord = coord.decode() if isinstance(coord, bytes) else coord
        if mode not in ("nearest", "linear"):
            yield _violation(node, "resize-mode", f"mode {mode!r}; TensorRT resizes with nearest or linear only")
        if coord not in RESIZE_COORDINATE_MODES:
            yield _violation(node, "resize-mode", f"coordinate transformation {coord!r} is not supported")
        if facts.attr(node, "antialias", 0):
            yield _violation(node, "resize-mode", "antialiasing is not supported")


def rule_pooling(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type not in ("AveragePool", "MaxPool"):
            continue
        kernel = facts.attr(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            yield _violation(node, "pool-rank", f"{len(kernel)}-D pooling; TensorRT pools 2-D or 3-D only")
        if any(d != 1 for d in facts.attr(node, "dilations", [])):
            yield _violation(node, "pool-dilation", "dilations must be empty or all ones")


def rule_layernorm_outputs(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type == "LayerNormalization" and any(o and o in facts.consumers for o in node.output[1:]):
            yield _violation(node, "layernorm-outputs", "only the first output (Y) is supported")


def rule_cast_types(facts: GraphFacts, profile: TensorRTProfile) -> Iterator[Violation]:
    for node in facts.graph.node:
        if node.op_type == "Cast" and facts.attr(node, "to") not in TENSORRT_TYPES:
            yield _violation(node, "cast-type", f"casts to {_type_name(facts.attr(node, 'to'))}, not a TensorRT type")


Rule = Callable[[GraphFacts, TensorRTProfile], Iterator[Violation]]
RULES: tuple[Rule, ...] = (rule_opset, rule_type_inference, rule_io_types, rule_dynamic_dims, rule_internal_uint8,
                           rule_operator_support, rule_constant_inputs, rule_same_float_type, rule_quantize_dequantize,
                           rule_topk, rule_resize, rule_pooling, rule_layernorm_outputs, rule_cast_types)


def check_graph(model: onnx.ModelProto, profile: TensorRTProfile, dla: bool = False) -> list[Violation]:
    """Every rule violation of `model` for the TensorRT release `profile` (empty: TensorRT accepts it as far
    as these rules know)."""
    facts = GraphFacts(model)
    rules = RULES + ((rule_dla,) if dla else ())
    return [v for rule in rules for v in rule(facts, profile)]


def check_versions(model: onnx.ModelProto, versions: list[str], dla: bool = False) -> list[str]:
    """Formatted violation lines for each named profile ("10.3", "10.13", "11")."""
    lines = []
    for name in versions:
        profile = PROFILES[name]
        lines += [v.format(profile) for v in check_graph(model, profile, dla)]
    return lines
