"""Graph passes and the default optimization pipeline.

``optimize(model)`` runs the default pipeline and returns a new float model that computes the
same outputs but is easier to map onto an NPU. Each pass is a class (see :mod:`.base`); build
your own pipeline with :class:`PassManager`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from ortnpu.errors import ModelError
from ortnpu.passes.activation_fusion import (
    FUSED_ACTIVATION_KEY,
    FUSED_INTO_KEY,
    MarkFusedActivations,
)
from ortnpu.passes.affine_folding import FoldConvAffine
from ortnpu.passes.base import Pass, PassManager, PassResult, Repeat
from ortnpu.passes.batchnorm_folding import FoldBatchNorm
from ortnpu.passes.constant_folding import FoldConstants
from ortnpu.passes.conv1d import Conv1dAsConv2d
from ortnpu.passes.conv_transpose import ConvTransposeAsConv
from ortnpu.passes.div_to_mul import DivByConstantToMul
from ortnpu.passes.fix_input_shapes import FixInputShapes
from ortnpu.passes.freeze_inputs import FreezeInputs
from ortnpu.passes.gather_heads import SliceHeads
from ortnpu.passes.identity_elimination import RemoveIdentity
from ortnpu.passes.if_folding import FoldConstantIf
from ortnpu.passes.layernorm import DecomposeLayerNorm
from ortnpu.passes.matmul_add_fusion import FC_BIAS_KEY, FuseMatMulAdd
from ortnpu.passes.name_nodes import NameNodes
from ortnpu.passes.noop_removal import RemoveNoOpReshapeTranspose
from ortnpu.passes.pad_fusion import FusePad
from ortnpu.passes.patchify import PatchifyConv
from ortnpu.passes.shape_arithmetic import FoldShapeArithmetic
from ortnpu.passes.shape_inference import InferShapes
from ortnpu.passes.shared_weights import DuplicateSharedWeights
from ortnpu.passes.softmax_axis import SoftmaxToLastAxis
from ortnpu.passes.stream_equalization import EqualizeStreams
from ortnpu.passes.unused_removal import RemoveUnused
from ortnpu.passes.weight_equalization import EqualizeWeights

#: Pass names accepted by ``optimize(skip=...)`` and ``ortnpu optimize --skip``.
PASS_NAMES = ("NameNodes", "FreezeInputs", "FixInputShapes", "InferShapes", "FoldConstants",
              "FoldShapeArithmetic", "FoldConstantIf", "RemoveIdentity",
              "RemoveNoOpReshapeTranspose", "RemoveUnused", "FoldBatchNorm", "FusePad",
              "DivByConstantToMul", "FoldConvAffine",
              "FuseMatMulAdd", "EqualizeWeights",
              "MarkFusedActivations")

#: Bound on the rounds of the cleanup passes (they stop as soon as a round changes nothing).
CLEANUP_ROUNDS = 32


def default_passes(*, input_shapes: Mapping[str, Sequence[int]] | None = None,
                   freeze: Mapping[str, Any] | None = None, target: Any = None,
                   fuse_activations: bool = True, equalize: bool = False,
                   skip: Sequence[str] = ()) -> list[Pass]:
    """The passes of :func:`optimize`, in order.

    Args:
        input_shapes: fixed shapes for dynamic inputs, ``{"x": [1, 3, 224, 224]}``.
        freeze: inputs replaced by constants, ``{"sr": 16000}``.
        target: a :class:`~ortnpu.target.Target` (or preset name) whose rules decide which
            activations fuse; ``None`` uses the default rules.
        fuse_activations: mark ReLU/Clip fused into the producing layer.
        equalize: run cross-layer weight equalization.
        skip: names of passes to leave out (see :data:`PASS_NAMES`).

    Raises:
        ModelError: ``skip`` names an unknown pass.
    """
    unknown = [s for s in skip if s not in PASS_NAMES]
    if unknown:
        raise ModelError(f"unknown pass name(s) {', '.join(map(repr, unknown))}; the passes are "
                         f"{', '.join(PASS_NAMES)}")
    if target is not None:
        from ortnpu.target import load_target

        target = load_target(target)

    def keep(p: Pass) -> bool:
        return type(p).__name__ not in skip

    cleanup = [p for p in (InferShapes(), FoldConstants(), FoldShapeArithmetic(),
                           FoldConstantIf(), RemoveIdentity(),
                           RemoveNoOpReshapeTranspose(), RemoveUnused()) if keep(p)]
    passes: list[Pass] = [NameNodes()]
    if freeze:
        passes.append(FreezeInputs(freeze))
    if input_shapes:
        passes.append(FixInputShapes(input_shapes))
    # until nothing changes: each nesting level of If on a shape (Silero VAD) needs its own
    # round (inline, infer shapes, fold the condition); the bound only stops a pass that flips
    passes.append(Repeat(cleanup, max_iterations=CLEANUP_ROUNDS))
    # no DuplicateSharedWeights: the passes that change a layer's weights (FoldBatchNorm,
    # EqualizeWeights, DivByConstantToMul) copy a shared tensor on write, and the quantizer
    # emits each layer's integer weights itself; copying tied weights up front multiplied an
    # unrolled LSTM's size by its time steps (issue 13: 19 MB -> 275 MB)
    # FoldBatchNorm again after FoldConvAffine: a BatchNormalization behind an Add that it
    # folds into the layer (PP-OCRv4 det's ConvTranspose -> Add(bias) -> BN)
    passes += [FoldBatchNorm(), FusePad(), DivByConstantToMul(), FoldConvAffine(),
               FoldBatchNorm(), FuseMatMulAdd()]
    if equalize:
        passes.append(EqualizeWeights())
    if fuse_activations:
        passes.append(MarkFusedActivations(target))
    passes += [RemoveUnused(), InferShapes()]
    return [p for p in passes if keep(p) or isinstance(p, Repeat)]


def fix_inputs(model: onnx.ModelProto, *,
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               freeze: Mapping[str, Any] | None = None) -> onnx.ModelProto:
    """Only the input passes of :func:`optimize`: freeze inputs, fix dynamic shapes.

    For callers that quantize without optimizing (``quantize(optimize=False)``, autofix).
    """
    passes: list[Pass] = []
    if freeze:
        passes.append(FreezeInputs(freeze))
    if input_shapes:
        passes.append(FixInputShapes(input_shapes))
    return PassManager(passes)(model).model if passes else model


def optimize(model: onnx.ModelProto, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
             freeze: Mapping[str, Any] | None = None, target: Any = None,
             fuse_activations: bool = True, equalize: bool = False,
             skip: Sequence[str] = (), return_results: bool = False) -> Any:
    """Optimize a float model for an NPU; the outputs stay the same.

    The pipeline names unnamed nodes, freezes inputs to constants, fixes dynamic input shapes,
    infers shapes, folds constants and ``If`` nodes on a constant condition, removes
    Identity/Dropout and no-op layout ops, folds BatchNormalization into Conv/Gemm/MatMul,
    fuses Pad into Conv/pools, turns division by a constant into a multiplication, fuses
    MatMul+Add into Gemm, optionally equalizes weights, and marks ReLU/Clip fused into their
    producer (the nodes are kept: the result is standard ONNX).

    Args:
        model: the float model; never modified.
        input_shapes: fixed shapes for dynamic inputs, ``{"x": [1, 3, 224, 224]}``.
        freeze: inputs replaced by constants, ``{"sr": 16000}`` (the model loses these
            inputs; an ``If`` on them keeps only the branch taken).
        target: target (or preset name) whose rules decide which activations fuse.
        fuse_activations: mark ReLU/Clip fused into the producing layer.
        equalize: run cross-layer weight equalization (changes weights, not outputs).
        skip: names of passes to leave out.
        return_results: also return the :class:`PassResult` with per-pass ``details``.

    Returns:
        The optimized model, or ``(model, result)`` when ``return_results`` is true.

    Raises:
        ModelError: ``model`` is not a ModelProto, or a pass met a malformed graph.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"optimize expects an onnx.ModelProto, got {type(model).__name__}; "
                         "load files with onnx.load")
    if not model.graph.node:
        raise ModelError("the model has no nodes")
    from ortnpu.validate import initializers_as_constants

    manager = PassManager(default_passes(input_shapes=input_shapes, freeze=freeze,
                                         target=target,
                                         fuse_activations=fuse_activations, equalize=equalize,
                                         skip=skip))
    result = manager(initializers_as_constants(model))
    out = result.model
    if out is model:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        result.model = out
    return (out, result) if return_results else out


__all__ = [
    "FC_BIAS_KEY",
    "FUSED_ACTIVATION_KEY",
    "FUSED_INTO_KEY",
    "PASS_NAMES",
    "Conv1dAsConv2d",
    "ConvTransposeAsConv",
    "DecomposeLayerNorm",
    "DivByConstantToMul",
    "DuplicateSharedWeights",
    "EqualizeStreams",
    "EqualizeWeights",
    "FixInputShapes",
    "FoldBatchNorm",
    "FoldConstantIf",
    "FoldConstants",
    "FoldConvAffine",
    "FoldShapeArithmetic",
    "FreezeInputs",
    "FuseMatMulAdd",
    "FusePad",
    "InferShapes",
    "MarkFusedActivations",
    "NameNodes",
    "Pass",
    "PassManager",
    "PassResult",
    "PatchifyConv",
    "RemoveIdentity",
    "RemoveNoOpReshapeTranspose",
    "RemoveUnused",
    "Repeat",
    "SliceHeads",
    "SoftmaxToLastAxis",
    "default_passes",
    "fix_inputs",
    "optimize",
]
