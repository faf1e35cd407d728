"""Per-node support checks: can the target's NPU run this node, and if not, why not.

:func:`check_node` returns a :class:`Verdict` whose ``reason`` is a sentence a user can act on,
naming the node, its op and the limit at fault, e.g. ``Conv 'conv5': kernel 9x9 exceeds the
target's maximum 16x16 ([support] max_kernel)``. All limits come from the target's
``[support]`` section (:class:`~ortnpu.target.spec.SupportRules`).

The checks run in order: standard domain, op not left to the CPU, op type listed, the tensors
(types, rank, static shapes), then one small check class per op family (convolution, pooling,
matrix multiply, elementwise, activation, layout). The first failure decides the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper

from ortnpu.onnx_types import np_dtype, type_name
from ortnpu.target.spec import SupportRules, Target

STANDARD_DOMAINS = ("", "ai.onnx")
#: onnxruntime contrib ops that are a standard op under another name: ``com.microsoft`` Gelu is
#: ONNX's erf ``Gelu`` (opset 20) at any opset; onnxruntime's transformer optimizer and
#: :class:`~ortnpu.passes.gelu_fusion.FuseErfGelu` write it
STANDARD_EQUIVALENTS = frozenset({("com.microsoft", "Gelu")})


def is_standard(node: onnx.NodeProto) -> bool:
    """True for a standard ONNX op, or a contrib op that is one (:data:`STANDARD_EQUIVALENTS`)."""
    return node.domain in STANDARD_DOMAINS or (node.domain, node.op_type) in STANDARD_EQUIVALENTS


@dataclass(frozen=True)
class Verdict:
    """Whether a node runs on the NPU, and why (or why not).

    Attributes:
        supported: True if the NPU can run the node.
        reason: a sentence naming the node, its op and, when unsupported, the limit at fault.
    """

    supported: bool
    reason: str


@dataclass
class NodeContext:
    """What a check may look at: the node, tensor shapes and types, constant values, rules."""

    node: onnx.NodeProto
    rules: SupportRules
    shapes: Mapping[str, Sequence[Any]]
    dtypes: Mapping[str, int]
    constants: Mapping[str, np.ndarray] | None
    require_shapes: bool

    @property
    def label(self) -> str:
        """``Op 'name'`` as used at the start of every reason."""
        return f"{self.node.op_type} '{self.node.name or '?'}'"

    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def is_const(self, position: int) -> bool:
        """True if input ``position`` is a constant (unknown constness: all but input 0 are)."""
        if position >= len(self.node.input) or not self.node.input[position]:
            return True
        if self.constants is None:
            return position > 0
        return self.node.input[position] in self.constants

    def const(self, position: int) -> np.ndarray | None:
        if self.constants is None or position >= len(self.node.input):
            return None
        return self.constants.get(self.node.input[position])

    def shape(self, name: str) -> list[Any] | None:
        s = self.shapes.get(name)
        return None if s is None else list(s)

    def data_inputs(self) -> list[str]:
        """Inputs computed at run time (not constants)."""
        return [x for i, x in enumerate(self.node.input) if x and not self.is_const(i)]

    def weight_shape(self) -> list[Any] | None:
        w = self.const(1)
        if w is not None:
            return list(w.shape)
        return self.shape(self.node.input[1]) if len(self.node.input) > 1 else None


def _dims(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join(str(d) if (isinstance(d, int) and d >= 0) or
                           (isinstance(d, str) and d) else "?" for d in shape) + "]"


def _x(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


class SupportCheck:
    """One family of ops and the limits the target puts on them.

    Subclasses list their ``ops`` and implement :meth:`check`, returning ``None`` when the node
    is fine or the reason (without the node label) when it is not.
    """

    ops: ClassVar[tuple[str, ...]] = ()

    def check(self, ctx: NodeContext) -> str | None:
        raise NotImplementedError


def _spatial_limits(ctx: NodeContext, kernel: Sequence[int], what: str) -> str | None:
    r = ctx.rules
    n = len(kernel)
    if n > r.max_spatial_dims:
        return (f"{n}-D {what} ({n} spatial axes) exceeds the target's maximum of "
                f"{r.max_spatial_dims} spatial axes ([support] max_spatial_dims)")
    if any(k > r.max_kernel for k in kernel):
        return (f"kernel {_x(kernel)} exceeds the target's maximum "
                f"{_x([r.max_kernel] * n)} ([support] max_kernel)")
    strides = list(ctx.attr("strides") or [1] * n)
    if any(s > r.max_stride for s in strides):
        return (f"stride {_x(strides)} exceeds the target's maximum {_x([r.max_stride] * n)} "
                "([support] max_stride)")
    dilations = list(ctx.attr("dilations") or [1] * n)
    if any(d > r.max_dilation for d in dilations):
        return (f"dilation {_x(dilations)} exceeds the target's maximum "
                f"{_x([r.max_dilation] * n)} ([support] max_dilation)")
    return None


def _channels(ctx: NodeContext, count: Any, which: str) -> str | None:
    if isinstance(count, int) and count > ctx.rules.max_channels:
        return (f"{count} {which} channels exceed the target's maximum of "
                f"{ctx.rules.max_channels} ([support] max_channels)")
    return None


class ConvolutionSupport(SupportCheck):
    """Conv and ConvTranspose: constant weights, kernel, stride, dilation, groups, channels."""

    ops = ("Conv", "ConvTranspose")

    def check(self, ctx: NodeContext) -> str | None:
        if not ctx.is_const(1):
            return ("its weights are computed at run time; the NPU needs constant weights "
                    "(initializers)")
        if len(ctx.node.input) > 2 and not ctx.is_const(2):
            return "its bias is computed at run time; the NPU needs a constant bias"
        w = ctx.weight_shape()
        if w is None or len(w) < 3:
            return "the shape of its weights is unknown; run `ortnpu optimize` (shape inference)"
        kernel = list(ctx.attr("kernel_shape") or w[2:])
        problem = _spatial_limits(ctx, kernel, "convolution")
        if problem:
            return problem
        group = int(ctx.attr("group", 1))
        transpose = ctx.node.op_type == "ConvTranspose"
        cin = w[0] if transpose else w[1] * group
        cout = w[1] * group if transpose else w[0]
        for count, which in ((cin, "input"), (cout, "output")):
            problem = _channels(ctx, count, which)
            if problem:
                return problem
        if group > 1:
            depthwise = group == cin
            if depthwise and not ctx.rules.depthwise:
                return ("depthwise convolution (group = channels = "
                        f"{group}) is not supported by the target ([support] depthwise = false)")
            if not depthwise and not ctx.rules.grouped:
                return (f"grouped convolution (group = {group}) is not supported by the target "
                        "([support] grouped = false)")
        return None


class PoolSupport(SupportCheck):
    """MaxPool, AveragePool and LpPool: kernel, stride, dilation; no MaxPool indices."""

    ops = ("MaxPool", "AveragePool", "LpPool")

    def check(self, ctx: NodeContext) -> str | None:
        if len(ctx.node.output) > 1 and ctx.node.output[1]:
            return "its Indices output is used; the NPU computes pooled values only"
        kernel = list(ctx.attr("kernel_shape") or [])
        problem = _spatial_limits(ctx, kernel, "pooling")
        if problem:
            return problem
        shape = ctx.shape(ctx.node.input[0])
        return _channels(ctx, shape[1], "input") if shape and len(shape) > 1 else None


class GlobalPoolSupport(SupportCheck):
    """GlobalAveragePool and GlobalMaxPool: spatial axes and channels."""

    ops = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")

    def check(self, ctx: NodeContext) -> str | None:
        shape = ctx.shape(ctx.node.input[0])
        if not shape:
            return None
        if len(shape) - 2 > ctx.rules.max_spatial_dims:
            return (f"pooling over {len(shape) - 2} spatial axes exceeds the target's maximum "
                    f"of {ctx.rules.max_spatial_dims} ([support] max_spatial_dims)")
        return _channels(ctx, shape[1], "input")


class MatMulSupport(SupportCheck):
    """Gemm and MatMul: constant weights unless the target multiplies two activations."""

    ops = ("Gemm", "MatMul")

    def check(self, ctx: NodeContext) -> str | None:
        node = ctx.node
        both = not ctx.is_const(0) and not ctx.is_const(1)
        if both and not ctx.rules.matmul_two_activations:
            return ("both operands are computed at run time (as in attention scores); the "
                    "target multiplies only by constant weights "
                    "([support] matmul_two_activations = false)")
        if node.op_type == "Gemm" and len(node.input) > 2 and not ctx.is_const(2):
            return "its bias C is computed at run time; the NPU needs a constant bias"
        w = ctx.weight_shape()
        if w:
            trans_b = node.op_type == "Gemm" and int(ctx.attr("transB", 0))
            k, n = (w[-1], w[-2]) if trans_b else (w[-2] if len(w) > 1 else w[0], w[-1])
            for count, which in ((k, "input"), (n, "output")):
                problem = _channels(ctx, count, which)
                if problem:
                    return problem
        return None


class ElementwiseSupport(SupportCheck):
    """Binary elementwise ops. Pow needs a constant exponent. Which divisions lower (by a
    constant, or by a Sqrt as RSQRT · MUL) is the lowering rule's decision, not the target's."""

    ops = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow")

    def check(self, ctx: NodeContext) -> str | None:
        if ctx.node.op_type == "Pow" and not ctx.is_const(1):
            return "the exponent is computed at run time; the NPU needs a constant exponent"
        return None


class ActivationSupport(SupportCheck):
    """Clip needs constant bounds; the other activations have nothing to check."""

    ops = ("Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu",
           "Elu", "Gelu", "Softmax", "Exp", "Log", "Sqrt", "Neg", "Abs")

    def check(self, ctx: NodeContext) -> str | None:
        if ctx.node.op_type == "Clip" and not (ctx.is_const(1) and ctx.is_const(2)):
            return "its min/max bounds are computed at run time; the NPU needs constant bounds"
        if ctx.node.op_type == "PRelu" and not ctx.is_const(1):
            return "its slope is computed at run time; the NPU needs a constant slope"
        return None


class LayoutSupport(SupportCheck):
    """Layout ops: shapes, axes and pads must be constants; Pad in constant mode only."""

    ops = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Pad",
           "Slice", "Split", "Resize", "Expand", "Tile", "Gather")

    _const_inputs: ClassVar[dict[str, tuple[tuple[int, str], ...]]] = {
        "Reshape": ((1, "target shape"),), "Squeeze": ((1, "axes"),),
        "Unsqueeze": ((1, "axes"),), "Pad": ((1, "pads"), (2, "pad value"), (3, "axes")),
        "Slice": ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")),
        "Split": ((1, "split sizes"),), "Resize": ((1, "roi"), (2, "scales"), (3, "sizes")),
        "Expand": ((1, "shape"),), "Tile": ((1, "repeats"),), "Gather": ((1, "indices"),),
    }

    def check(self, ctx: NodeContext) -> str | None:
        for pos, what in self._const_inputs.get(ctx.node.op_type, ()):
            if not ctx.is_const(pos):
                return (f"its {what} input is computed at run time; the NPU needs it constant "
                        "(fix the input shapes with --input-shape and run `ortnpu optimize` to "
                        "fold shape arithmetic)")
        if ctx.node.op_type == "Pad" and ctx.attr("mode", "constant") != "constant":
            return (f"Pad mode {ctx.attr('mode')!r} is not supported; the NPU pads with a "
                    "constant only")
        return None


class NormalizationSupport(SupportCheck):
    """A BatchNormalization left alone (not folded) needs constant parameters."""

    ops = ("BatchNormalization", "InstanceNormalization", "LayerNormalization")

    def check(self, ctx: NodeContext) -> str | None:
        if ctx.node.op_type == "BatchNormalization" and ctx.attr("training_mode", 0):
            return "it runs in training mode; export the model for inference"
        if not all(ctx.is_const(i) for i in range(1, len(ctx.node.input))):
            return "its parameters are computed at run time; the NPU needs constants"
        return None


#: The op-family checks, looked up by op type.
FAMILY_CHECKS: tuple[SupportCheck, ...] = (
    ConvolutionSupport(), PoolSupport(), GlobalPoolSupport(), MatMulSupport(),
    ElementwiseSupport(), ActivationSupport(), LayoutSupport(), NormalizationSupport(),
)
_BY_OP: dict[str, SupportCheck] = {op: c for c in FAMILY_CHECKS for op in c.ops}


def _tensor_problems(ctx: NodeContext) -> list[str]:
    """Every kind of tensor limit the node breaks (element type, unknown shape, rank, dynamic
    shape), the first tensor of each kind: fixing all of them is what moves the node."""
    rules = ctx.rules
    outputs = [o for o in ctx.node.output if o]
    found: dict[str, str] = {}
    for kind, names in (("input", ctx.data_inputs()), ("output", outputs)):
        for name in names:
            dtype = ctx.dtypes.get(name)
            if dtype and "dtype" not in found:
                known = np_dtype(dtype)
                dname = "string" if dtype == onnx.TensorProto.STRING else (
                    known.name if known is not None else type_name(dtype))
                if dname not in rules.dtypes:
                    found["dtype"] = (f"{kind} '{name}' is {dname}; the NPU takes "
                                      f"{', '.join(rules.dtypes)} tensors (it quantizes them), "
                                      f"so {dname} data stays on the CPU ([support] dtypes)")
            shape = ctx.shape(name)
            if shape is None:
                if ctx.require_shapes and not rules.dynamic_shapes and "shape" not in found:
                    found["shape"] = (f"the shape of {kind} '{name}' is unknown; fix the model's "
                                      "input shapes with --input-shape NAME=1,3,H,W and run "
                                      "`ortnpu optimize`")
                continue
            if len(shape) > rules.max_rank and "rank" not in found:
                found["rank"] = (f"{kind} '{name}' has rank {len(shape)} {_dims(shape)}, above "
                                 f"the target's maximum rank {rules.max_rank} ([support] "
                                 "max_rank)")
            static = all(isinstance(d, int) and d >= 0 for d in shape)
            if not static and not rules.dynamic_shapes and "shape" not in found:
                found["shape"] = (f"{kind} '{name}' has a dynamic shape {_dims(shape)}; the "
                                  "target needs static shapes ([support] dynamic_shapes = "
                                  "false): fix the model's input shapes with --input-shape "
                                  "NAME=1,3,H,W")
    return list(found.values())


#: Keys of :func:`target_problems` for the op-level limits (the others are tensor or family
#: limits): ``domain``, ``cpu_preferred``, ``op_types``.
OP_LEVEL = ("domain", "cpu_preferred", "op_types")


def target_problems(target: Target, node: onnx.NodeProto,
                    shapes: Mapping[str, Sequence[Any]], *,
                    dtypes: Mapping[str, int] | None = None,
                    constants: Mapping[str, np.ndarray] | None = None,
                    require_shapes: bool = False) -> list[tuple[str, str]]:
    """Every limit of ``target`` that ``node`` breaks, as ``(key, problem)`` pairs in check order.

    ``key`` is one of :data:`OP_LEVEL`, ``tensor`` or the op family's check class name; the
    problem is a sentence without the node label. Unlike :func:`check_node`, which stops at the
    first failure, this lists them all, so that a reason built from them names everything that
    must change before the node moves to the NPU (:mod:`ortnpu.placement` uses it).
    """
    rules = target.support
    ctx = NodeContext(node=node, rules=rules, shapes=shapes, dtypes=dtypes or {},
                      constants=constants, require_shapes=require_shapes)
    op = node.op_type
    if not is_standard(node):
        return [("domain", f"op of domain {node.domain!r} is not a standard ONNX op; the NPU "
                           "runs standard ops only")]
    found: list[tuple[str, str]] = []
    if op in rules.cpu_preferred:
        found.append(("cpu_preferred", f"the target leaves {op} to the CPU ([support] "
                                       "cpu_preferred)"))
    if op not in rules.op_types:
        found.append(("op_types", f"op type {op} is not among the ops the target runs "
                                  "([support] op_types)"))
    found += [("tensor", p) for p in _tensor_problems(ctx)]
    family = _BY_OP.get(op)
    problem = family.check(ctx) if family is not None else None
    if problem:
        found.append((type(family).__name__, problem))
    return found


def check_node(target: Target, node: onnx.NodeProto, shapes: Mapping[str, Sequence[Any]],
               *, dtypes: Mapping[str, int] | None = None,
               constants: Mapping[str, np.ndarray] | None = None,
               require_shapes: bool = False) -> Verdict:
    """Decide whether ``target``'s NPU runs ``node``.

    Args:
        target: the target whose ``[support]`` rules apply.
        node: the node to check.
        shapes: tensor name to shape (ints for static dims, str/None for dynamic ones).
        dtypes: tensor name to ONNX element type; unknown types are not checked.
        constants: tensor name to value of every constant tensor of the graph. ``None`` means
            unknown: every input but the first is then assumed constant (weights, shapes).
        require_shapes: treat a tensor without a known shape as dynamic (the partitioner sets
            this; a direct call with partial shapes does not).

    Returns:
        The :class:`Verdict`, with a reason in both cases.
    """
    label = f"{node.op_type} '{node.name or '?'}'"
    problems = target_problems(target, node, shapes, dtypes=dtypes, constants=constants,
                               require_shapes=require_shapes)
    if not problems:
        return Verdict(True, f"{label}: runs on the NPU")
    key, problem = problems[0]
    if key == "cpu_preferred":
        problem += "; remove it from that list to run it on the NPU"
    elif key == "op_types":
        problem += ", so it runs on the CPU; if your NPU runs it, add it to op_types in the " \
                   "target file"
    return Verdict(False, f"{label}: {problem}")


__all__ = ["FAMILY_CHECKS", "OP_LEVEL", "NodeContext", "SupportCheck", "Verdict", "check_node",
           "target_problems"]
