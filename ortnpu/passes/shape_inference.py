"""Shape inference with onnx's inferencer."""

from __future__ import annotations

import onnx

from ortnpu.errors import ModelError
from ortnpu.onnx_types import clear_unknown_dims
from ortnpu.passes.base import Pass
from ortnpu.passes.graph import shape_of

#: Ops onnx's inferencer does not know whose output has the shape and type of their first
#: input: stood in for by ``Identity`` while inferring. The contrib ``Gelu`` that FuseErfGelu
#: writes: without it, every shape after a transformer's first GELU was lost whenever value
#: infos were dropped (a dynamic batch read as 1: the blocks after it fell back to the CPU).
SHAPE_PRESERVING = frozenset({("com.microsoft", "Gelu")})


def _with_stand_ins(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[int]]:
    """A copy of ``model`` with Identity for the :data:`SHAPE_PRESERVING` nodes, and their
    positions (``model`` itself and no positions when it has none)."""
    spots = [k for k, n in enumerate(model.graph.node)
             if (n.domain, n.op_type) in SHAPE_PRESERVING]
    if not spots:
        return model, spots
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for k in spots:
        node = probe.graph.node[k]
        node.op_type, node.domain = "Identity", ""
        del node.attribute[:]
        del node.input[1:]
    return probe, spots


class InferShapes(Pass):
    """Run ONNX shape inference (with data propagation) and keep the inferred value infos.

    Args:
        strict: raise :class:`~ortnpu.errors.ModelError` when inference finds an inconsistency
            instead of keeping what it could infer.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def apply(self, model: onnx.ModelProto) -> list[str]:
        # a -1 output dim (Paddle) means unknown; left in place, onnx would compare it with the
        # size it infers and the integer export's checker refuse the model
        cleared = sum(clear_unknown_dims(out, keep_params=True) for out in model.graph.output)
        changes = [f"cleared {cleared} non-positive output dim(s): unknown sizes"] * bool(cleared)
        before = {v.name: shape_of(v) for v in model.graph.value_info}
        outputs_before = {v.name: shape_of(v) for v in model.graph.output}
        probe, spots = _with_stand_ins(model)
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, check_type=False,
                                                         strict_mode=self.strict, data_prop=True)
        except (onnx.shape_inference.InferenceError, ValueError) as exc:
            raise ModelError(f"shape inference failed: {exc}") from None
        for k in spots:
            inferred.graph.node[k].CopyFrom(model.graph.node[k])
        after = {v.name: shape_of(v) for v in inferred.graph.value_info}
        outputs_after = {v.name: shape_of(v) for v in inferred.graph.output}
        if after == before and outputs_after == outputs_before:
            return changes
        model.CopyFrom(inferred)
        new = sum(1 for k, v in after.items() if before.get(k) != v)
        new += sum(1 for k, v in outputs_after.items() if outputs_before.get(k) != v)
        return [*changes, f"inferred or refined the shape of {new} tensor(s)"]
