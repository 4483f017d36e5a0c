"""Quantizable layers grouped the way people think about the model: one group per transformer
block of each network (teacher, Encoder-Decoder student, class-token student) plus patch
embeddings, the bottleneck and the head. Mixed precision keeps whole groups in float."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
# Kept in float always: the scoring head, and the top-level input scaling of the uint8 path.
FLOAT_SCOPES = ("/scoring/",)
_BLOCK = re.compile(r"^blocks\.\d+$")


@dataclass
class LayerGroup:
    name: str  # e.g. "teacher.blocks.3", "ed_student.bottleneck"
    nodes: list[str] = field(default_factory=list)


def always_float(node_name: str) -> bool:
    return node_name.startswith(FLOAT_SCOPES) or (node_name.startswith("/") and node_name.count("/") == 1)


def group_of(node_name: str) -> str | None:
    """"/model/teacher/blocks.3/attn/qkv/MatMul" -> "teacher.blocks.3"; None outside the model."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 3 or parts[0] != "model":
        return None
    network, rest = parts[1], parts[2:]
    for i, part in enumerate(rest):
        if _BLOCK.match(part):
            return f"{network}.{part}"
    return f"{network}.{rest[0]}"


def layer_groups(proto) -> list[LayerGroup]:
    """Groups of quantizable nodes, in graph order."""
    groups: dict[str, LayerGroup] = {}
    for node in proto.graph.node:
        if node.op_type not in QUANTIZED_OPS or always_float(node.name):
            continue
        name = group_of(node.name)
        if name is not None:
            groups.setdefault(name, LayerGroup(name)).nodes.append(node.name)
    return list(groups.values())


def float_nodes(proto, keep_float: set[str]) -> list[str]:
    """Node names the quantizer must leave alone: the always-float scopes, and the groups kept float."""
    names = [n.name for n in proto.graph.node if always_float(n.name)]
    for group in layer_groups(proto):
        if group.name in keep_float:
            names += group.nodes
    return names


def activation_matmuls(proto) -> list[str]:
    """MatMuls of two activations (attention's Q.K^T and weights.V): no weight among their inputs."""
    constants = {t.name for t in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def resolve_group_names(proto, requested: list[str]) -> set[str]:
    """User-given group names (exact, or a prefix like "teacher" for all its groups)."""
    from dualkd_edge.errors import UserError

    known = [g.name for g in layer_groups(proto)]
    chosen = set()
    for name in requested:
        matches = [k for k in known if k == name or k.startswith(name + ".")]
        if not matches:
            raise UserError(f"--keep-float: no layer group {name!r}; groups are {', '.join(known)}")
        chosen.update(matches)
    return chosen
