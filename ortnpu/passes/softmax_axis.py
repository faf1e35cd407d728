"""Move a Softmax over an inner axis to the last axis, between two transposes."""

from __future__ import annotations

import onnx
from onnx import helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    all_tensor_names,
    attr,
    opset_version,
    rebuild_nodes,
    shapes_and_types,
    unique_name,
)
from ortnpu.passes.weight_links import mark_moves_output


class SoftmaxToLastAxis(Pass):
    """``Softmax(axis = a)`` over an axis that is not the last becomes ``Transpose(a ↔ last) →
    Softmax(axis = -1) → Transpose(a ↔ last)``.

    Why: TFLite's SOFTMAX (and the NPUs that follow it) normalizes the last axis only, so a
    detector's distribution-focal-loss head (YOLOv8's DFL: a Softmax over the 16 bins of axis 1
    of ``[1, 16, 4, anchors]``) stayed on the CPU in float between NPU layers. TFLite's
    converter emits the same two transposes. Each value of the output is computed from the same
    values as before; the transposes only move them. Opset 13 and later only (before it, a
    Softmax flattened every axis from ``axis`` on). Applied by ``ortnpu.evaluate`` and
    ``ortnpu.quantize`` alike, for targets that run Softmax and Transpose.

    Args:
        max_rank: the largest rank the target's transposes take.
    """

    def __init__(self, max_rank: int) -> None:
        self.max_rank = max_rank

    def apply(self, model: onnx.ModelProto) -> list[str]:
        if opset_version(model) < 13:
            return []
        graph = model.graph
        shapes, _ = shapes_and_types(model)
        taken = all_tensor_names(graph)
        names = {n.name for n in graph.node}
        new: list[onnx.NodeProto] = []
        changes: list[str] = []
        for node in graph.node:
            shape = shapes.get(node.input[0]) if node.input else None
            if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx") or \
                    shape is None or not 2 <= len(shape) <= self.max_rank:
                new.append(node)
                continue
            rank = len(shape)
            axis = int(attr(node, "axis", -1))
            if not -rank <= axis < rank or axis % rank == rank - 1:
                new.append(node)
                continue
            axis %= rank
            perm = list(range(rank))
            perm[axis], perm[-1] = rank - 1, axis
            base = node.name or node.output[0]
            moved = unique_name(taken, f"{base}_last_axis")
            soft = unique_name(taken, f"{base}_on_last_axis")
            new.append(helper.make_node("Transpose", [node.input[0]], [moved], perm=perm,
                                        name=unique_name(names, f"{base}/to_last_axis")))
            new.append(helper.make_node("Softmax", [moved], [soft], axis=-1, name=node.name))
            back = helper.make_node("Transpose", [soft], list(node.output), perm=perm,
                                    name=unique_name(names, f"{base}/from_last_axis"))
            mark_moves_output(back)   # the moved Softmax takes the layer's given parameters
            new.append(back)
            changes.append(f"Softmax {node.name!r} over axis {axis} of rank {rank} runs over the "
                           "last axis between two Transposes")
        if changes:
            rebuild_nodes(graph, new)
        return changes
