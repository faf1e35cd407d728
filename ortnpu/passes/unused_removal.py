"""Remove nodes, initializers and value infos nothing reads."""

from __future__ import annotations

import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import node_inputs, remove_nodes


class RemoveUnused(Pass):
    """Remove nodes whose outputs reach no graph output, then unread initializers."""

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        live = {o.name for o in graph.output}
        nodes = list(graph.node)
        keep: set[int] = set()
        for position in range(len(nodes) - 1, -1, -1):
            node = nodes[position]
            if any(o in live for o in node.output if o):
                keep.add(position)
                live.update(node_inputs(node))
        dead = [n for i, n in enumerate(nodes) if i not in keep]
        changes: list[str] = []
        if dead:
            names = ", ".join(repr(n.name or n.op_type) for n in dead[:6])
            more = f" and {len(dead) - 6} more" if len(dead) > 6 else ""
            changes.append(f"removed {len(dead)} node(s) whose outputs are never used: "
                           f"{names}{more}")
            remove_nodes(graph, dead)
            del nodes
        declared = {i.name for i in graph.input}
        live |= declared
        unused = [t for t in graph.initializer if t.name not in live]
        if unused:
            keep = [t for t in graph.initializer if t.name in live]
            del graph.initializer[:]
            graph.initializer.extend(keep)
            changes.append(f"removed {len(unused)} unused initializer(s)")
        used = live | {o for n in graph.node for o in n.output}
        vis = [v for v in graph.value_info if v.name in used]
        if len(vis) != len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(vis)
        return changes
