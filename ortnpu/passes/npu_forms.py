"""The rewrites ``evaluate`` and ``quantize`` both apply before placement: float ops into the
forms an integer NPU runs (one list, so that both decide on the same graph)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import onnx

from ortnpu.errors import ModelError
from ortnpu.passes.base import Pass, PassResult
from ortnpu.passes.conv1d import Conv1dAsConv2d
from ortnpu.passes.conv_transpose import ConvTransposeAsConv
from ortnpu.passes.gather_heads import SliceHeads
from ortnpu.passes.gelu_fusion import FuseErfGelu
from ortnpu.passes.layernorm import DecomposeLayerNorm
from ortnpu.passes.name_nodes import NameNodes
from ortnpu.passes.pad_modes import PadModesAsSlices
from ortnpu.passes.patchify import PatchifyConv
from ortnpu.passes.recurrent import UNROLLED_OPS, UnrollGRU, UnrollLSTM
from ortnpu.passes.replace import ReplaceNodesPass
from ortnpu.passes.shape_inference import InferShapes
from ortnpu.passes.softmax_axis import SoftmaxToLastAxis

if TYPE_CHECKING:
    from ortnpu.target.spec import Target

#: LayerNormalization as MEAN/SUB/SQUARE/MEAN/ADD/SQRT/DIV/MUL/ADD; a rank-5 q/k/v split as
#: rank-4 slices; the five-node erf GELU as one Gelu
NPU_FORMS: tuple[type[Pass], ...] = (DecomposeLayerNorm, SliceHeads, FuseErfGelu)


def npu_forms(model: onnx.ModelProto, target: Target | None = None,
              log: list[PassResult] | None = None, keep: Iterable[str] = ()) -> onnx.ModelProto:
    """``model`` (named, shapes inferred) with every :data:`NPU_FORMS` rewrite applied and,
    for a ``target``, those whose new ops it runs:

    * the ops of :data:`~ortnpu.passes.recurrent.UNROLLED_OPS`: an LSTM or GRU unrolled into
      per-step Gemm, gates and elementwise ops (:class:`~ortnpu.passes.recurrent.UnrollLSTM`,
      :class:`~ortnpu.passes.recurrent.UnrollGRU`);
    * Slice and Concat: a reflect, edge or wrap Pad as slices joined by a Concat
      (:class:`~ortnpu.passes.pad_modes.PadModesAsSlices`);
    * Conv and Reshape at rank 4: a 1-D Conv as a 2-D one of height 1
      (:class:`~ortnpu.passes.conv1d.Conv1dAsConv2d`);
    * Conv, Reshape and Transpose at rank 4: a convolution beyond its stride or kernel limits
      whose kernel is whole strides as space-to-depth and a small stride-1 convolution
      (:class:`~ortnpu.passes.patchify.PatchifyConv`);
    * Conv, Pad and Reshape at rank 4: a ConvTranspose as zero insertion and a Conv
      (:class:`~ortnpu.passes.conv_transpose.ConvTransposeAsConv`);
    * Softmax (not preferring the CPU for it) and Transpose: a Softmax over an inner axis
      over the last (:class:`~ortnpu.passes.softmax_axis.SoftmaxToLastAxis`).

    The input when none applies. ``log``, when given, receives the result of every rewrite
    that changed the model; nodes named in ``keep`` (names or op types: the user's
    ``force_cpu``) are not rebuilt by the target's rewrites."""
    model = NameNodes()(model).model
    with contextlib.suppress(ModelError):
        model = InferShapes()(model).model
    passes: list[Pass] = [cls() for cls in NPU_FORMS]
    rules = target.support if target is not None else None
    if rules is not None and set(UNROLLED_OPS) <= set(rules.op_types):
        passes += [UnrollLSTM(), UnrollGRU()]
    if rules is not None and {"Slice", "Concat"} <= set(rules.op_types):
        passes.append(PadModesAsSlices())
    if rules is not None and rules.max_rank >= 4 and {"Conv", "Reshape"} <= set(rules.op_types):
        passes.append(Conv1dAsConv2d())
    if rules is not None and rules.max_rank >= 4 and \
            {"Conv", "Reshape", "Transpose"} <= set(rules.op_types):
        passes.append(PatchifyConv(rules.max_stride, rules.max_kernel))
    if rules is not None and rules.max_rank >= 4 and \
            {"Conv", "Pad", "Reshape"} <= set(rules.op_types):
        passes.append(ConvTransposeAsConv(crop="Slice" in rules.op_types))
    if rules is not None and {"Softmax", "Transpose"} <= set(rules.op_types) and \
            "Softmax" not in rules.cpu_preferred:
        passes.append(SoftmaxToLastAxis(rules.max_rank))
    for one in passes:
        if isinstance(one, ReplaceNodesPass):
            one.keep = frozenset(keep)
        result = one(model)
        if result.modified:
            if log is not None:
                log.append(result)
            model = result.model
            with contextlib.suppress(ModelError):
                model = InferShapes()(model).model
    return model
