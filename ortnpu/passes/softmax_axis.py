"""Move a Softmax over an inner axis to the last axis, between two transposes."""

from __future__ import annotations

import onnx

from ortnpu.passes.graph import attr, opset_version
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
from ortnpu.passes.weight_links import mark_moves_output


class SoftmaxToLastAxis(ReplaceNodesPass):
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

    def applies_to(self, model: onnx.ModelProto) -> bool:
        return opset_version(model) >= 13

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        shape = work.shapes.get(node.input[0]) if node.input else None
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx") or \
                shape is None or not 2 <= len(shape) <= self.max_rank:
            return None
        rank = len(shape)
        axis = int(attr(node, "axis", -1))
        if not -rank <= axis < rank or axis % rank == rank - 1:
            return None
        axis %= rank
        perm = list(range(rank))
        perm[axis], perm[-1] = rank - 1, axis
        base = node_base(node)
        moved = work.tensor(f"{base}_last_axis")
        soft = work.tensor(f"{base}_on_last_axis")
        work.add("Transpose", [node.input[0]], [moved], f"{base}/to_last_axis", perm=perm)
        work.add("Softmax", [moved], [soft], node.name, fresh_name=False, axis=-1)
        back = work.add("Transpose", [soft], node.output, f"{base}/from_last_axis", perm=perm)
        mark_moves_output(back)   # the moved Softmax takes the layer's given parameters
        return (f"Softmax {node.name!r} over axis {axis} of rank {rank} runs over the "
                "last axis between two Transposes")
