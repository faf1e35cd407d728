"""The rewrites ``evaluate`` and ``quantize`` both apply before placement: float ops into the
forms an integer NPU runs (one list, so that both decide on the same graph)."""

from __future__ import annotations

import contextlib

import onnx

from ortnpu.errors import ModelError
from ortnpu.passes.base import Pass
from ortnpu.passes.gather_heads import SliceHeads
from ortnpu.passes.gelu_fusion import FuseErfGelu
from ortnpu.passes.layernorm import DecomposeLayerNorm
from ortnpu.passes.name_nodes import NameNodes
from ortnpu.passes.shape_inference import InferShapes

#: LayerNormalization as MEAN/SUB/SQUARE/MEAN/ADD/SQRT/DIV/MUL/ADD; a rank-5 q/k/v split as
#: rank-4 slices; the five-node erf GELU as one Gelu
NPU_FORMS: tuple[type[Pass], ...] = (DecomposeLayerNorm, SliceHeads, FuseErfGelu)


def npu_forms(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (named, shapes inferred) with every :data:`NPU_FORMS` rewrite applied; the
    input when none applies."""
    model = NameNodes()(model).model
    with contextlib.suppress(ModelError):
        model = InferShapes()(model).model
    for cls in NPU_FORMS:
        result = cls()(model)
        if result.modified:
            model = result.model
            with contextlib.suppress(ModelError):
                model = InferShapes()(model).model
    return model
