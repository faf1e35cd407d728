"""Constant ``If`` folding: an If whose condition is known keeps only the branch it takes."""

from __future__ import annotations

import onnx
from onnx import helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    local_names,
    rename_input,
    subgraphs,
    unique_name,
)


class FoldConstantIf(Pass):
    """Replace an ``If`` whose condition is a constant by the nodes of the branch it takes.

    The branch is inlined where the If stood: its own tensors and initializers are renamed
    when their names are taken in the outer graph (nested bodies follow the renames), its
    outputs become the If's outputs through ``Identity`` nodes (removed by RemoveIdentity), and
    its nodes get the If's name as a prefix. Conditions become constant through constant
    folding, often after ``FreezeInputs``.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        changes: list[str] = []
        while True:
            index = GraphIndex(graph)
            found = None
            for pos, node in enumerate(graph.node):
                if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                    cond = index.constant(node.input[0])
                    if cond is not None and cond.size == 1:
                        found = pos, node, bool(cond.reshape(-1)[0])
                        break
            if found is None:
                return changes
            pos, node, taken_branch = found
            name = "then_branch" if taken_branch else "else_branch"
            body = next(a.g for a in node.attribute if a.name == name)
            inlined = _inline(graph, node, body)
            nodes = [_copy(n) for n in graph.node[:pos]] + inlined + \
                [_copy(n) for n in graph.node[pos + 1:]]
            del graph.node[:]
            graph.node.extend(nodes)
            changes.append(f"folded If {node.name!r} on constant condition "
                           f"{taken_branch}: inlined its {name} ({len(body.node)} node(s))")


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _inline(graph: onnx.GraphProto, node: onnx.NodeProto,
            body: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The body's nodes renamed for the outer graph, then Identity nodes to the If's outputs."""
    taken = all_tensor_names(graph)
    for n in graph.node:
        for g in subgraphs(n):
            taken |= local_names(g)
    node_names = {n.name for n in graph.node}
    renames: dict[str, str] = {}
    for t in body.initializer:
        new = unique_name(taken, t.name)
        renames[t.name] = new
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = new
        graph.initializer.append(copy)
    for n in body.node:
        for o in n.output:
            if o:
                renames[o] = unique_name(taken, o)
    out: list[onnx.NodeProto] = []
    for n in body.node:
        copy = _copy(n)
        copy.name = unique_name(node_names, f"{node.name}/{n.name or n.op_type}")
        for i, x in enumerate(copy.input):
            if x in renames:
                copy.input[i] = renames[x]
        for i, x in enumerate(copy.output):
            if x in renames:
                copy.output[i] = renames[x]
        for g in subgraphs(copy):
            for old, new in renames.items():
                if old != new:
                    rename_input(g, old, new)
        out.append(copy)
    for bo, io in zip(body.output, node.output, strict=True):
        if io:
            out.append(helper.make_node("Identity", [renames.get(bo.name, bo.name)], [io],
                                        name=unique_name(node_names, f"{node.name}/{io}")))
    return out
