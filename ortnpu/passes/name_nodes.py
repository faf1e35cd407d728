"""Give every node a unique, readable name."""

from __future__ import annotations

import onnx

from ortnpu.passes.base import Pass


class NameNodes(Pass):
    """Name unnamed nodes ``<op>_<index>`` (index = position in the graph) and make names unique.

    Reports, the partition plan and the quantizer key everything by node name, so every node
    needs one. Existing names are kept; a repeated name gets a ``_<k>`` suffix.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        changes: list[str] = []
        taken = {n.name for n in model.graph.node if n.name}
        seen: set[str] = set()
        unnamed = 0
        for index, node in enumerate(model.graph.node):
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            base = node.name or f"{node.op_type}_{index}"
            name, k = base, 1
            while name in seen or (name != node.name and name in taken):
                name = f"{base}_{k}"
                k += 1
            if node.name:
                changes.append(f"renamed repeated node name {node.name!r} to {name!r}")
            else:
                unnamed += 1
            node.name = name
            seen.add(name)
            taken.add(name)
        if unnamed:
            changes.insert(0, f"named {unnamed} unnamed node(s) '<op>_<index>'")
        return changes
