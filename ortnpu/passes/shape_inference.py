"""Shape inference with onnx's inferencer."""

from __future__ import annotations

import onnx

from ortnpu.errors import ModelError
from ortnpu.onnx_types import clear_unknown_dims
from ortnpu.passes.base import Pass
from ortnpu.passes.graph import shape_of


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
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False,
                                                         strict_mode=self.strict, data_prop=True)
        except (onnx.shape_inference.InferenceError, ValueError) as exc:
            raise ModelError(f"shape inference failed: {exc}") from None
        after = {v.name: shape_of(v) for v in inferred.graph.value_info}
        outputs_after = {v.name: shape_of(v) for v in inferred.graph.output}
        if after == before and outputs_after == outputs_before:
            return changes
        model.CopyFrom(inferred)
        new = sum(1 for k, v in after.items() if before.get(k) != v)
        new += sum(1 for k, v in outputs_after.items() if outputs_before.get(k) != v)
        return [*changes, f"inferred or refined the shape of {new} tensor(s)"]
