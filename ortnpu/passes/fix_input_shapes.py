"""Replace dynamic input dimensions with fixed sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from ortnpu.errors import ModelError
from ortnpu.onnx_types import clear_unknown_dims
from ortnpu.passes.base import Pass
from ortnpu.passes.graph import shape_of


class FixInputShapes(Pass):
    """Give graph inputs fixed shapes, e.g. ``{"x": [1, 3, 224, 224]}``.

    Static dims already in the model must agree with the given ones. The old value infos of
    intermediate tensors are dropped so that shape inference recomputes them.

    Args:
        input_shapes: input name to its full shape.

    Raises:
        ModelError: unknown input name, wrong rank, a dim that contradicts the model, or a
            non-positive size.
    """

    def __init__(self, input_shapes: Mapping[str, Sequence[int]]) -> None:
        self.input_shapes = {k: [int(d) for d in v] for k, v in input_shapes.items()}

    def apply(self, model: onnx.ModelProto) -> list[str]:
        inits = {t.name for t in model.graph.initializer}
        inputs = {i.name: i for i in model.graph.input if i.name not in inits}
        changes: list[str] = []
        for name, dims in self.input_shapes.items():
            if name not in inputs:
                raise ModelError(f"--input-shape names {name!r}, which is not a model input; "
                                 f"the inputs are {', '.join(sorted(inputs)) or 'none'}")
            if any(d <= 0 for d in dims):
                raise ModelError(f"input shape of {name!r} must be positive sizes, got {dims}")
            info = inputs[name]
            old = shape_of(info)
            if old is not None and len(old) != len(dims):
                raise ModelError(f"input {name!r} has rank {len(old)} {old}, but the given shape "
                                 f"{dims} has rank {len(dims)}")
            if old is not None:
                for axis, (a, b) in enumerate(zip(old, dims, strict=True)):
                    if isinstance(a, int) and a != b:
                        raise ModelError(f"input {name!r} has size {a} on axis {axis}; the given "
                                         f"shape {dims} says {b}")
            if old == dims:
                continue
            shape = info.type.tensor_type.shape
            shape.Clear()
            for d in dims:
                shape.dim.add().dim_value = d
            changes.append(f"fixed input {name!r} from {old} to {dims}")
        if changes:
            del model.graph.value_info[:]
            for out in model.graph.output:  # symbolic or -1 (Paddle): inference fills them
                clear_unknown_dims(out)
        return changes
