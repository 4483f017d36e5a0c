"""Lookups over one ONNX graph that the graph passes share (TensorRT rules, SmoothQuant, attention
fusion, the FP16-between-INT8 rewrite): who produces and who reads each tensor, the constant values,
node attributes, and the clean-up after a rewrite."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper


def attribute(node: onnx.NodeProto, name: str, default=None):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class GraphIndex:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}  # tensor -> (node, input index)
        for node in graph.node:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
        # Initializers and Constant nodes' values.
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and (value := attribute(node, "value")) is not None:
                self.constants[node.output[0]] = numpy_helper.to_array(value)

    def only_consumer(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        """The node reading `tensor` when it is the only one and of `op_type`."""
        users = self.consumers.get(tensor, [])
        return users[0][0] if len(users) == 1 and users[0][0].op_type == op_type else None

    def scalar(self, tensor: str) -> float | None:
        value = self.constants.get(tensor)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def drop_dead_nodes(graph: onnx.GraphProto, op_types: Iterable[str] | None = None) -> None:
    """Remove nodes (of `op_types`, or any) that nothing reads any more, then unused initializers."""
    removable = None if op_types is None else frozenset(op_types)
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node
                if (removable is not None and n.op_type not in removable) or any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    drop_unused_initializers(graph)


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
