"""SmoothQuant-style smoothing (Xiao et al., 2023) folded into the preceding LayerNorm.

A ViT's activations entering the attention and MLP projections have a few channels with large
values: per-tensor INT8 ranges then waste most of their levels on them. Dividing channel j of the
LayerNorm output by s_j (folded into the LayerNorm's gamma and beta) and multiplying row j of the
following weight by s_j changes nothing in FP32 and moves the range problem from activations (per
tensor) to weights (per channel, where it costs little):
    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha).
Applied to the FP32 graph before quantization; `quantize --smooth ALPHA` turns it on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from dualkd_edge.compile.graph_index import GraphIndex, attribute


@dataclass
class SmoothTarget:
    norm: str  # LayerNormalization node name
    tensor: str  # its output, whose channels get rescaled
    gamma: str
    beta: str | None
    weights: list[tuple[str, int]] = field(default_factory=list)  # (initializer, axis of the input channels)


def find_targets(proto) -> list[SmoothTarget]:
    """LayerNorms whose output feeds only linear layers (directly or through Reshape), with weights
    used nowhere else: there the rescaling is exact. (Norm parameters shared with other LayerNorms,
    as simplification leaves identical ones, get a private copy when smoothed.)"""
    inits = {i.name for i in proto.graph.initializer}
    uses = GraphIndex(proto.graph).consumers
    targets = []
    for node in proto.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        beta = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if beta is not None and beta not in inits:
            continue
        weights = _linear_weights(node.output[0], uses, inits)
        if weights:
            targets.append(SmoothTarget(node.name, node.output[0], node.input[1], beta, weights))
    return targets


def _linear_weights(tensor: str, uses, inits) -> list[tuple[str, int]] | None:
    """(weight, input-channel axis) of every linear layer reading `tensor`; None if anything else reads it."""
    found = []
    for consumer, index in uses.get(tensor, []):
        if consumer.op_type == "Reshape" and index == 0:
            deeper = _linear_weights(consumer.output[0], uses, inits)
            if deeper is None:
                return None
            found += deeper
        elif consumer.op_type in ("MatMul", "Gemm") and index == 0:
            weight = consumer.input[1]
            if weight not in inits or len(uses.get(weight, [])) != 1:
                return None
            axis = 1 if consumer.op_type == "Gemm" and attribute(consumer, "transB", 0) else 0
            found.append((weight, axis))
        else:
            return None
    return found or None


def channel_absmax(model_path: str, tensors: list[str], batches) -> dict[str, np.ndarray]:
    """max |x| per channel (last axis) of each tensor over the calibration batches (ONNX Runtime CPU)."""
    import onnxruntime as ort

    model = onnx.load(model_path)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in known)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result: dict[str, np.ndarray] = {}
    batches.rewind()
    while (feed := batches.get_next()) is not None:
        for name, value in zip(tensors, session.run(tensors, feed)):
            m = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            result[name] = m if name not in result else np.maximum(result[name], m)
    batches.rewind()
    return result


def smooth(proto, targets: list[SmoothTarget], absmax: dict[str, np.ndarray], alpha: float) -> int:
    """Rescale in place; returns how many LayerNorm -> linear groups were smoothed."""
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}

    def private(node: onnx.NodeProto, index: int) -> str:
        """The norm's own copy of its parameter `index` (shared parameters must not change elsewhere)."""
        name = node.input[index]
        if sum(name in n.input for n in proto.graph.node) > 1:
            proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]),
                                                                   f"{name}_{node.name}"))
            copy = proto.graph.initializer[-1]  # protobuf appends a copy: keep the stored one
            inits[copy.name] = copy
            node.input[index] = copy.name
        return node.input[index]

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def store(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(array(name).dtype), name))

    done = 0
    for t in targets:
        act = absmax.get(t.tensor)
        if act is None:
            continue
        w_max = np.max([np.abs(np.moveaxis(array(w), axis, 0)).reshape(act.size, -1).max(axis=1)
                        for w, axis in t.weights], axis=0)
        s = np.clip(np.power(np.maximum(act, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha), 1e-4, 1e4)
        norm = nodes[t.norm]
        gamma = private(norm, 1)
        store(gamma, array(gamma) / s)
        if t.beta:
            beta = private(norm, 2)
            store(beta, array(beta) / s)
        for w, axis in t.weights:
            shape = [1] * array(w).ndim
            shape[axis] = -1
            store(w, array(w) * s.reshape(shape))
        done += 1
    return done
