"""Lowering rules: one class per float op family, mapping it onto ``com.ortnpu`` ops.

Each rule has a :meth:`~LoweringRule.check` that returns ``None`` when it can lower the node or a
sentence saying why not (the node then stays on the CPU with that reason), and an
:meth:`~LoweringRule.emit` that writes the integer nodes. Rules choose output parameters in one
place each, so the arithmetic of every layer can be read off its rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx

from ortnpu.domain import (
    Add,
    AveragePool,
    Concat,
    Conv,
    Flatten,
    FullyConnected,
    GlobalAveragePool,
    Lut,
    MatMul,
    Maximum,
    MaxPool,
    Minimum,
    Mul,
    OpSpec,
    Pad,
    Requantize,
    Reshape,
    Resize,
    Slice,
    Softmax,
    SquaredDifference,
    Sub,
    Transpose,
    make_node,
)
from ortnpu.domain.arith import mean_multiplier, round_half_away
from ortnpu.domain.ops_softmax import MAX_DEPTH as MAX_SOFTMAX_DEPTH
from ortnpu.domain.ops_softmax import softmax_params
from ortnpu.domain.spec import MAX_VARIADIC
from ortnpu.passes.graph import attr
from ortnpu.passes.weight_links import copies_input
from ortnpu.quant.context import QuantContext
from ortnpu.quant.emitter import Emitter
from ortnpu.quant.params import (
    QuantParams,
    bias_values,
    fit_bias,
    linear_rule,
    multiplier,
    rescale_rule,
    weight_params,
)
from ortnpu.quant.resize_modes import tflite_mode
from ortnpu.quant.tables import (
    float32_function,
    float_table,
    hard_swish_int8_table,
    leaky_relu_table,
    lut_populate,
    lut_populate_int16,
    rsqrt_int8_table,
    rsqrt_int16_table,
    sqrt_table,
    tflite_int16_sigmoid_tanh_table,
)
from ortnpu.target import Arithmetic

FUSABLE_ACTIVATIONS = ("Relu", "Clip")


@dataclass
class Match:
    """A node to lower, with the bias Add and the activation fused into it (if any)."""

    node: onnx.NodeProto
    activation: onnx.NodeProto | None = None
    bias: onnx.NodeProto | None = None

    @property
    def output(self) -> str:
        """The float tensor the lowered node replaces (after the fused bias and activation)."""
        return (self.activation or self.bias or self.node).output[0]


def activation_bounds(act: onnx.NodeProto | None, ctx: QuantContext) -> tuple[float, float]:
    """Real-valued clamp of a fused Relu/Clip (infinite when none)."""
    if act is None:
        return -np.inf, np.inf
    if act.op_type == "Relu":
        return 0.0, np.inf
    lo, hi = attr(act, "min", -np.inf), attr(act, "max", np.inf)
    if len(act.input) > 1 and act.input[1]:
        lo = float(ctx.view.const(act.input[1]))
    if len(act.input) > 2 and act.input[2]:
        hi = float(ctx.view.const(act.input[2]))
    return float(lo), float(hi)


def clamp_attrs(p: QuantParams, bounds: tuple[float, float]) -> dict[str, int]:
    """``act_min``/``act_max`` of an output: TFLite's ``zp + round(f / scale)``, clamped.

    As in TFLite's ``CalculateActivationRangeQuantized`` and ``QuantizedReluX`` the division
    is float32 (``f / scale`` of two floats, then ``roundf``): in double, a bound whose
    quotient lies just below .5 can round the other way.
    """
    lo, hi = p.qmin, p.qmax
    scale = np.float32(p.scale)
    if np.isfinite(bounds[0]):
        lo = max(lo, p.zero_point + int(round_half_away(np.float32(bounds[0]) / scale)))
    if np.isfinite(bounds[1]):
        hi = min(hi, p.zero_point + int(round_half_away(np.float32(bounds[1]) / scale)))
    return {"act_min": int(lo), "act_max": int(max(lo, hi))}


def bias_operand(add: onnx.NodeProto, product: str) -> str:
    """The input of a bias Add that is not the MatMul's product."""
    return add.input[1] if add.input[0] == product else add.input[0]


def fusable_bias(node: onnx.NodeProto, ctx: QuantContext) -> onnx.NodeProto | None:
    """The Add of a constant vector that alone follows a MatMul with constant 2-D weights: the
    fully connected layer's bias.

    A MatMul over ``[batch, tokens, features]`` cannot become a ``Gemm`` (``FuseMatMulAdd``
    leaves the pair); lowered apart, the Add costs a second rounding and a layer (a ViT's four
    bias Adds a block took 15 % of its compiled time), and the MatMul's own output range had to
    hold the unbiased values.
    """
    if node.op_type != "MatMul" or ctx.view.const(node.input[0]) is not None:
        return None
    w = ctx.view.const(node.input[1])
    add = ctx.view.single_consumer(node.output[0])
    if w is None or w.ndim != 2 or add is None or add.op_type != "Add" or \
            list(add.input).count(node.output[0]) != 1:
        return None
    b = ctx.view.const(bias_operand(add, node.output[0]))
    n = w.shape[1]
    if b is None or b.ndim == 0 or b.shape[-1] != n or b.size != n:
        return None   # a bias along the last axis only
    rank = len(ctx.view.shapes.get(node.input[0]) or []) or 2   # (unknown: at least 2)
    if b.ndim > rank:
        return None   # [1, 1, 1, n] on a rank-3 product makes the Add's output rank 4
    return add


def fusable_activation(node: onnx.NodeProto, ctx: QuantContext) -> onnx.NodeProto | None:
    """The Relu/Clip that follows ``node`` (or its fused bias Add) alone and can become its
    output clamp."""
    node = fusable_bias(node, ctx) or node
    act = ctx.view.single_consumer(node.output[0])
    if act is None or act.op_type not in FUSABLE_ACTIVATIONS:
        return None
    if act.op_type == "Clip" and any(i and ctx.view.const(i) is None for i in act.input[1:]):
        return None
    return act


class LoweringRule:
    """Base of the rules. Subclasses set :attr:`op_types` and implement check/emit."""

    op_types: ClassVar[tuple[str, ...]] = ()
    fuses_activation: ClassVar[bool] = False

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        """``None`` when the node can be lowered, else the reason it cannot."""
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        """Write the integer nodes of ``m``."""
        raise NotImplementedError

    def reads(self, node: onnx.NodeProto, ctx: QuantContext) -> list[str]:
        """The float tensors whose integer twins the lowering of ``node`` reads."""
        return [i for i in node.input if i]

    # helpers shared by rules
    @staticmethod
    def out_params(m: Match, ctx: QuantContext) -> QuantParams:
        if m.activation is not None:
            ctx.unsigned_outputs.add(m.output)
        return ctx.params_of(m.output)


def _pads_2d(node: onnx.NodeProto, ctx: QuantContext, kernel: tuple[int, int],
             strides: tuple[int, int], dilations: tuple[int, int]) -> list[int] | str:
    """Explicit [top, left, bottom, right] pads, resolving auto_pad from static shapes."""
    auto = attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        pads = attr(node, "pads", [0, 0, 0, 0]) if auto == "NOTSET" else [0, 0, 0, 0]
        return [int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])]
    shape = ctx.view.shapes.get(node.input[0])
    if not shape or len(shape) != 4 or shape[2] is None or shape[3] is None:
        return (f"{node.op_type} '{node.name}': auto_pad {auto} needs a static input shape; "
                "fix the input shape with `ortnpu optimize --input-shape`")
    pads = [0, 0, 0, 0]
    for axis in range(2):
        size = shape[2 + axis]
        out = -(-size // strides[axis])
        total = max(0, (out - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1 - size)
        small, big = total // 2, total - total // 2
        first, last = (small, big) if auto == "SAME_UPPER" else (big, small)
        pads[axis], pads[axis + 2] = first, last
    return pads


def _weights(ctx: QuantContext, name: str, w: np.ndarray, axis: int,
             transposed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights and scales: the caller's exact ones (QDQ import), a learned rounding's,
    or quantized here."""
    for given in (ctx.preset_weights, ctx.learned_weights):
        if name in given:
            q, scales = given[name]
            return (q.T if transposed else q).astype(np.int8), np.asarray(scales, np.float64)
    return weight_params(w, ctx.arith, ctx.per_channel, axis=axis)


def _bias(ctx: QuantContext, node: onnx.NodeProto, index: int, bias: np.ndarray | None,
          x_scale: float, w_scales: np.ndarray, channels: int, bias_bits: int) -> np.ndarray:
    """Bias in accumulator units: the caller's exact integers (QDQ import) or rounded here."""
    if len(node.input) > index and node.input[index] in ctx.preset_biases:
        return np.broadcast_to(ctx.preset_biases[node.input[index]].astype(np.int64),
                               (channels,)).copy()
    return bias_values(bias, x_scale, w_scales, channels, bias_bits)


def _corrected_bias(ctx: QuantContext, x_name: str, bias: np.ndarray | None, w: np.ndarray,
                    wq: np.ndarray, ws: np.ndarray, group: int) -> np.ndarray | None:
    """Bias plus the mean output error of the quantized weights (bias correction).

    ``w`` is [C_out, C_in/group, ...] (conv) or [N, K] (fully connected); the error of output
    channel ``o`` is ``Σ E[x_c] · (w - w_q·s)[o, c, ...]`` over its group's input channels.
    """
    mean = ctx.channel_mean(x_name)
    if mean is None:
        return bias
    cout = w.shape[0]
    scales = np.broadcast_to(ws, (cout,)).reshape([cout] + [1] * (w.ndim - 1))
    error = (w - wq.astype(np.float64) * scales).reshape(cout, w.shape[1], -1).sum(axis=2)
    per_group = cout // group
    if mean.size != w.shape[1] * group:
        return bias
    x_mean = mean.reshape(group, w.shape[1])[np.arange(cout) // per_group]
    delta = (error * x_mean).sum(axis=1)
    base = np.zeros(cout) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    return base + delta


def _measured_bias(ctx: QuantContext, weight: str, bias: np.ndarray | None,
                   channels: int) -> np.ndarray | None:
    """Bias plus the mean output error measured on the NPU graph's inputs, when there is one
    for this weight (:meth:`~ortnpu.quant.adaround.GramCollector.bias_deltas`)."""
    delta = ctx.bias_deltas.get(weight)
    if delta is None or delta.size != channels:
        return bias
    base = np.zeros(channels) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    return base + delta


class ConvRule(LoweringRule):
    """Conv (grouped, depthwise) with constant weights → ``Conv``."""

    op_types = ("Conv",)
    fuses_activation = True

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        w = ctx.view.const(node.input[1])
        if w is None:
            return (f"Conv '{node.name}': the weights are computed at run time; the NPU needs "
                    "constant weights")
        if w.ndim != 4:
            return f"Conv '{node.name}': only 2-D convolutions are lowered (weights rank {w.ndim})"
        if len(node.input) > 2 and node.input[2] and ctx.view.const(node.input[2]) is None:
            return f"Conv '{node.name}': the bias is not constant"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        w = ctx.view.const(node.input[1]).astype(np.float64)
        b = ctx.view.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        strides = tuple(attr(node, "strides", [1, 1]))
        dilations = tuple(attr(node, "dilations", [1, 1]))
        pads = _pads_2d(node, ctx, (w.shape[2], w.shape[3]), strides, dilations)
        if isinstance(pads, str):
            raise ValueError(pads)
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        yp = self.out_params(m, ctx)
        wq, ws = _weights(ctx, node.input[1], w, axis=0)
        cout = w.shape[0]
        rule, acc_bits, bias_bits = linear_rule(a, ctx.is_wide(xp, yp))
        if node.input[1] not in ctx.preset_weights:
            wq, ws = fit_bias(w, wq, ws, b, xp.scale, bias_bits, a, y_scale=yp.scale)
        reals = [np.float64(np.float32(xp.scale)) * ws[c if ws.size > 1 else 0] / yp.scale
                 for c in range(cout)]
        mult, shift = zip(*(multiplier(float(r), a, rule) for r in reals), strict=True)
        b = _corrected_bias(ctx, node.input[0], b, w, wq, ws, int(attr(node, "group", 1)))
        b = _measured_bias(ctx, node.input[1], b, cout)
        bias = _bias(ctx, node, 2, b, xp.scale, ws, cout, bias_bits)
        name = node.name or node.output[0]
        inputs = [x, out.constant(f"{name}_w", wq), out.constant(f"{name}_bias", bias),
                  out.constant(f"{name}_multiplier", np.array(mult, np.int32)),
                  out.constant(f"{name}_shift", np.array(shift, np.int32))]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            Conv, inputs, y, yp.dtype, name,
            x_zp=xp.zero_point, y_zp=yp.zero_point,
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)),
            stride_h=strides[0], stride_w=strides[1], dilation_h=dilations[0],
            dilation_w=dilations[1], pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2],
            pad_right=pads[3], group=int(attr(node, "group", 1)), rounding=rule,
            acc_bits=acc_bits))


class FullyConnectedRule(LoweringRule):
    """Gemm, or MatMul with a constant 2-D right operand → ``FullyConnected``."""

    op_types = ("Gemm", "MatMul")
    fuses_activation = True

    def _weights(self, node: onnx.NodeProto, ctx: QuantContext) -> np.ndarray | None:
        b = ctx.view.const(node.input[1])
        if b is None or b.ndim != 2:
            return None
        if node.op_type == "Gemm" and attr(node, "transB", 0):
            return b
        return b.T

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if (node.op_type == "MatMul" and ctx.view.const(node.input[1]) is None
                and ctx.view.const(node.input[0]) is None):
            return None  # two activations: emit() hands it to MatMulRule
        if self._weights(node, ctx) is None:
            return (f"{node.op_type} '{node.name}': the right operand must be a constant 2-D "
                    "matrix for the NPU's fully connected layer")
        if node.op_type == "Gemm":
            if attr(node, "transA", 0):
                return f"Gemm '{node.name}': transA=1 is not supported; transpose the input"
            if attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
                return (f"Gemm '{node.name}': alpha/beta other than 1 are not supported; "
                        "run `ortnpu optimize` to fold them into the weights")
            if len(node.input) > 2 and node.input[2]:
                c = ctx.view.const(node.input[2])
                if c is None or c.size not in (1, self._weights(node, ctx).shape[0]):
                    return f"Gemm '{node.name}': the bias C must be a constant vector"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        if node.op_type == "MatMul" and ctx.view.const(node.input[1]) is None:
            MatMulRule().emit(m, ctx, out)
            return
        w = self._weights(node, ctx).astype(np.float64)
        n = w.shape[0]
        bias = None
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            bias = np.broadcast_to(ctx.view.const(node.input[2]).reshape(-1), (n,))
        if m.bias is not None:   # MatMul + Add(b): fusable_bias checked b's shape
            bias = ctx.view.const(bias_operand(m.bias, node.output[0])).reshape(-1)
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        yp = self.out_params(m, ctx)
        transposed = not (node.op_type == "Gemm" and attr(node, "transB", 0))
        wq, ws = _weights(ctx, node.input[1], w, axis=0, transposed=transposed)
        rule, acc_bits, bias_bits = linear_rule(a, ctx.is_wide(xp, yp))
        if node.input[1] not in ctx.preset_weights:
            wq, ws = fit_bias(w, wq, ws, bias, xp.scale, bias_bits, a, y_scale=yp.scale)
        if ws.size == 1:  # TFLite: input*filter scale in float32, then the division in double
            reals = [np.float64(np.float32(xp.scale) * np.float32(ws[0])) / yp.scale] * n
        else:
            reals = [np.float64(xp.scale) * ws[c] / yp.scale for c in range(n)]
        mult, shift = zip(*(multiplier(float(r), a, rule) for r in reals), strict=True)
        bias = _corrected_bias(ctx, node.input[0], bias, w, wq, ws, 1)
        bias = _measured_bias(ctx, node.input[1], bias, n)
        name = node.name or node.output[0]
        inputs = [x, out.constant(f"{name}_w", wq),
                  out.constant(f"{name}_bias", _bias(ctx, node, 2, bias, xp.scale, ws, n,
                                                     bias_bits)),
                  out.constant(f"{name}_multiplier", np.array(mult, np.int32)),
                  out.constant(f"{name}_shift", np.array(shift, np.int32))]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            FullyConnected, inputs, y, yp.dtype, name, x_zp=xp.zero_point, y_zp=yp.zero_point,
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)), rounding=rule,
            acc_bits=acc_bits))


class MatMulRule(LoweringRule):
    """MatMul of two activations → ``MatMul`` (per-tensor rescale)."""

    op_types = ()

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        x0, x1 = out.int_input(node.input[0]), out.int_input(node.input[1])
        p0, p1 = ctx.params[node.input[0]], ctx.params[node.input[1]]
        yp = self.out_params(m, ctx)
        rule, acc_bits, _ = linear_rule(a, ctx.is_wide(p0, p1, yp))
        # TFLite's GetQuantizedConvolutionMultipler: s_a · s_b in float32, then / s_y in double
        # (a double product changes the 16-bit multiplier of tflite_int64 on some scales)
        real = np.float64(np.float32(p0.scale) * np.float32(p1.scale)) / np.float64(yp.scale)
        mult, shift = multiplier(float(real), a, rule)
        name = node.name or node.output[0]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            MatMul, [x0, x1, out.constant(f"{name}_multiplier", np.array([mult], np.int32)),
                     out.constant(f"{name}_shift", np.array([shift], np.int32))],
            y, yp.dtype, name, a_zp=p0.zero_point, b_zp=p1.zero_point, y_zp=yp.zero_point,
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)), rounding=rule,
            acc_bits=acc_bits))


def _operand(tensor: str, ctx: QuantContext, out: Emitter) -> tuple[str, QuantParams]:
    """Integer operand of an elementwise op; constants are quantized into initializers."""
    value = ctx.view.const(tensor)
    if value is None:
        name = out.int_input(tensor)
        return name, ctx.params[tensor]
    from ortnpu.quant.params import activation_params

    p = activation_params(float(value.min()), float(value.max()), ctx.arith)
    return out.constant(f"{tensor}_q", p.quantize(value)), p


class _BinaryRule(LoweringRule):
    """Shared check of Add and Mul: at least one operand must be computed at run time."""

    fuses_activation = True

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if all(ctx.view.const(i) is not None for i in node.input):
            return (f"{node.op_type} '{node.name}': both operands are constant; fold it with "
                    "`ortnpu optimize`")
        return None

    def operands(self, m: Match, ctx: QuantContext, out: Emitter
                 ) -> tuple[str, QuantParams, str, QuantParams, QuantParams, str]:
        """Integer operands with their parameters, the output's parameters, the rounding."""
        (xa, pa), (xb, pb) = (_operand(i, ctx, out) for i in m.node.input)
        return xa, pa, xb, pb, self.out_params(m, ctx), rescale_rule(ctx.arith, elementwise=True)


#: the largest left shift an 8-bit Add operand (9 bits after its zero point) takes in int32
_MAX_ADD_LEFT_SHIFT = 21


def add_left_shift(arith: Arithmetic, wide: bool, a_scale: float, b_scale: float) -> int:
    """The left shift of an Add/Sub's operands before their rescale to the common scale.

    Why: each operand is rescaled by ``its scale / (2 * larger scale)``; on a shift-only target
    that is a right shift, and with the target's ``add_left_shift`` of 0 it drops the operand's
    low bits before the sum (both operands of equal scale lose one bit, rounded half up: a
    biased error that residual chains accumulate). Shift-only hardware aligns the operands
    instead: the left shift is raised to ``log2(2 * larger / smaller)``, so the operand
    rescales only cancel it and the one rounding is the output's. Other targets keep their
    fixed shift (TFLite: 20, or 15 for 16-bit operands).
    """
    if wide:
        return 15
    left = arith.add_left_shift
    if arith.power_of_two_scales:
        lo, hi = sorted((float(a_scale), float(b_scale)))
        if lo > 0.0:
            left = max(left, min(math.ceil(math.log2(2.0 * hi / lo) - 1e-9),
                                 _MAX_ADD_LEFT_SHIFT))
    return left


class AddRule(_BinaryRule):
    """Add → ``Add`` with TFLite's common-scale scheme (left shift, three multipliers)."""

    op_types = ("Add",)
    spec: ClassVar[type[OpSpec]] = Add

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        xa, pa, xb, pb, yp, rule = self.operands(m, ctx, out)
        twice_max = 2.0 * max(np.float64(pa.scale), np.float64(pb.scale))
        left = add_left_shift(a, ctx.is_wide(pa, pb, yp), pa.scale, pb.scale)
        ma = multiplier(float(pa.scale / twice_max), a, rule)
        mb = multiplier(float(pb.scale / twice_max), a, rule)
        my = multiplier(float(twice_max / ((1 << left) * np.float64(yp.scale))), a, rule)
        name = node.name or node.output[0]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            self.spec, [xa, xb], y, yp.dtype, name, a_zp=pa.zero_point, b_zp=pb.zero_point,
            y_zp=yp.zero_point, left_shift=left, a_multiplier=ma[0], a_shift=ma[1],
            b_multiplier=mb[0], b_shift=mb[1], y_multiplier=my[0], y_shift=my[1],
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)), rounding=rule,
            **self.extra_attrs(ctx)))

    def extra_attrs(self, ctx: QuantContext) -> dict[str, Any]:
        """Attributes the op has beyond Add's (none for Add)."""
        return {}


class SubRule(AddRule):
    """Sub → ``Sub``: TFLite's SUB is its ADD scheme with b's multiplier negated; the target's
    ``sub_negate`` says whether b's multiplier or b's rescaled value is negated (TOSA)."""

    op_types = ("Sub",)
    spec = Sub

    def extra_attrs(self, ctx: QuantContext) -> dict[str, Any]:
        return {"negate": ctx.arith.sub_negate}


def squared_difference_of(node: onnx.NodeProto, ctx: QuantContext) -> onnx.NodeProto | None:
    """The Sub whose square ``node`` (Pow(d, 2) or Mul(d, d)) takes, when the square lowers as
    TFLite's SQUARED_DIFFERENCE of the Sub's operands: 8-bit activations on a TFLite target
    (LiteRT has no int16 kernel), the difference ``d`` not given parameters of its own by the
    model (a QDQ model that quantizes ``d`` states SUB then MUL) and no fused activation."""
    if node.op_type == "Mul" and (len(node.input) != 2 or node.input[0] != node.input[1]):
        return None
    if (node.op_type == "Pow" and _exponent(node, ctx) != 2.0) or \
            node.op_type not in ("Mul", "Pow"):
        return None
    base = node.input[0]
    sub = ctx.view.producer.get(base)
    if sub is None or sub.op_type != "Sub" or sub.domain not in ("", "ai.onnx") or \
            base in ctx.preset_params or not ctx.arith.rounding.startswith("tflite") or \
            ctx.arith.activation_bits != 8 or base in ctx.wide_tensors or \
            all(ctx.view.const(i) is not None for i in sub.input):
        return None
    if fusable_activation(node, ctx) is not None:
        return None
    return sub


def _emit_squared_difference(m: Match, sub: onnx.NodeProto, ctx: QuantContext,
                             out: Emitter) -> bool:
    """Emit ``m``'s square as SQUARED_DIFFERENCE of ``sub``'s operands; False (nothing
    emitted) when TFLite's output multiplier would not be below 1 (its kernel refuses it)."""
    node, a = m.node, ctx.arith
    (xa, pa), (xb, pb) = (_operand(i, ctx, out) for i in sub.input)
    if pa.dtype != pb.dtype or pa.dtype == "int16":
        return False
    yp = ctx.params_of(node.output[0])
    twice_max = 2.0 * max(np.float64(np.float32(pa.scale)), np.float64(np.float32(pb.scale)))
    real_y = twice_max * twice_max / ((1 << 14) * np.float64(np.float32(yp.scale)))
    if not 0.0 < real_y < 1.0:
        return False
    rule = rescale_rule(a, elementwise=True)
    ma = multiplier(float(np.float64(np.float32(pa.scale)) / twice_max), a, rule)
    mb = multiplier(float(np.float64(np.float32(pb.scale)) / twice_max), a, rule)
    my = multiplier(float(real_y), a, rule)
    name = node.name or node.output[0]
    y = out.int_output(node.output[0], yp)
    out.nodes.append(make_node(
        SquaredDifference, [xa, xb], y, yp.dtype, name, a_zp=pa.zero_point, b_zp=pb.zero_point,
        y_zp=yp.zero_point, left_shift=7, a_multiplier=ma[0], a_shift=ma[1],
        b_multiplier=mb[0], b_shift=mb[1], y_multiplier=my[0], y_shift=my[1],
        act_min=yp.qmin, act_max=yp.qmax, rounding=rule))
    return True


class MulRule(_BinaryRule):
    """Mul → ``Mul``; the real multiplier is computed in float32 as TFLite does. The square of
    a difference, Mul(d, d) with d = Sub(a, b), is TFLite's SQUARED_DIFFERENCE(a, b) on 8-bit
    TFLite targets (:func:`squared_difference_of`)."""

    op_types = ("Mul",)

    def reads(self, node: onnx.NodeProto, ctx: QuantContext) -> list[str]:
        sub = squared_difference_of(node, ctx)
        return super().reads(node if sub is None else sub, ctx)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        sub = squared_difference_of(m.node, ctx) if m.activation is None else None
        if sub is not None:
            state = out.snapshot()
            if _emit_squared_difference(m, sub, ctx, out):
                return
            out.restore(state)
        node, a = m.node, ctx.arith
        xa, pa, xb, pb, yp, rule = self.operands(m, ctx, out)
        real = np.float32(pa.scale) * np.float32(pb.scale) / np.float32(yp.scale)
        mult, shift = multiplier(float(real), a, rule)
        name = node.name or node.output[0]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            Mul, [xa, xb], y, yp.dtype, name, a_zp=pa.zero_point, b_zp=pb.zero_point,
            y_zp=yp.zero_point, multiplier=mult, shift=shift,
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)), rounding=rule))


def _exponent(node: onnx.NodeProto, ctx: QuantContext) -> float | None:
    """The constant scalar exponent of a Pow, or None."""
    value = ctx.view.const(node.input[1]) if len(node.input) > 1 else None
    if value is None or np.asarray(value).size != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


#: Pow exponents ortnpu lowers: 2 as MUL(x, x), 0.5 as SQRT, -0.5 as RSQRT
POW_EXPONENTS = (2.0, 0.5, -0.5)


def _sqrt_family_table(kind: str, xp: QuantParams, yp: QuantParams, arith: Arithmetic
                       ) -> np.ndarray:
    """The ``Lut`` table of SQRT or RSQRT: TFLite's kernels on TFLite targets (int8: the
    fixed-point RSQRT and the float32 SQRT; int16: the interpolated RSQRT table), else the
    float function quantized (non-positive inputs of RSQRT give the type maximum)."""
    tflite = arith.rounding.startswith("tflite")
    if kind == "sqrt":
        if tflite:
            return sqrt_table(xp, yp)
        return float_table(lambda v: np.sqrt(np.maximum(v, 0)), xp, yp)
    if tflite and xp.dtype == "int16" and xp.zero_point == 0 and yp.zero_point == 0:
        return rsqrt_int16_table(xp, yp)
    if tflite and xp.dtype != "int16":
        return rsqrt_int8_table(xp, yp)
    big = np.float32(yp.scale * (yp.qmax - yp.zero_point))

    def rsqrt(v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, 1.0 / np.sqrt(np.where(v > 0, v, 1)), big)
    return float_table(rsqrt, xp, yp)


def _emit_table(out: Emitter, kind: str, x: str, xp: QuantParams, y_float: str,
                yp: QuantParams, name: str, ctx: QuantContext) -> str:
    """Emit the SQRT/RSQRT ``Lut`` of integer ``x`` into the integer twin of ``y_float``."""
    table = _sqrt_family_table(kind, xp, yp, ctx.arith)
    y = out.int_output(y_float, yp)
    out.nodes.append(make_node(Lut, [x, out.constant(f"{name}_table", table)], y, yp.dtype,
                               name))
    return y


class SquareRule(MulRule):
    """Pow(x, 2) → ``Mul`` of x by itself (TFLite's MUL with one tensor twice: the square a
    LayerNorm's variance takes); Pow(x, 0.5) → TFLite's SQRT and Pow(x, -0.5) → TFLite's RSQRT,
    each a ``Lut`` of the kernel's result for every input value."""

    op_types = ("Pow",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        exponent = _exponent(node, ctx)
        if exponent not in POW_EXPONENTS:
            return (f"Pow '{node.name}': only a constant exponent 2 (as x · x), 0.5 (SQRT) or "
                    "-0.5 (RSQRT) is lowered")
        if ctx.view.const(node.input[0]) is not None:
            return f"Pow '{node.name}': the base is constant; fold it with `ortnpu optimize`"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        exponent = _exponent(m.node, ctx)
        if exponent == 2.0:
            super().emit(m, ctx, out)
            return
        node = m.node
        x = out.int_input(node.input[0])
        _emit_table(out, "sqrt" if exponent == 0.5 else "rsqrt", x, ctx.params[node.input[0]],
                    node.output[0], ctx.params_of(node.output[0]), node.name or node.output[0],
                    ctx)

    def operands(self, m: Match, ctx: QuantContext, out: Emitter
                 ) -> tuple[str, QuantParams, str, QuantParams, QuantParams, str]:
        x, p = _operand(m.node.input[0], ctx, out)
        return x, p, x, p, self.out_params(m, ctx), rescale_rule(ctx.arith, elementwise=True)


class SqrtRule(LoweringRule):
    """Sqrt → ``Lut`` of TFLite's quantized SQRT. A Sqrt that only divides (a LayerNorm's
    standard deviation) is read by :class:`DivRule` from its input instead, as RSQRT; its own
    table is then unused and dropped from the NPU graph."""

    op_types = ("Sqrt",)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        _emit_table(out, "sqrt", x, ctx.params[node.input[0]], node.output[0],
                    ctx.params_of(node.output[0]), node.name or node.output[0], ctx)


def _rsqrt_params(sqrt_out: str, ctx: QuantContext) -> QuantParams:
    """Parameters of ``1 / sqrt_out``: the range ``[0, 1 / smallest sqrt_out]`` of the
    standard deviation seen in calibration (one quantization step of it when that reaches 0
    or only the model's own parameters are known)."""
    from ortnpu.errors import OrtNpuError
    from ortnpu.quant.calibrate import observed_range
    from ortnpu.quant.params import activation_params

    sp = ctx.params_of(sqrt_out)
    lo = 0.0
    if sqrt_out not in ctx.preset_params:
        try:
            lo, _ = observed_range(ctx.calibrator, sqrt_out)
        except (OrtNpuError, AttributeError):
            lo = 0.0
    lo = max(float(lo), float(sp.scale))
    return activation_params(0.0, 1.0 / lo, ctx.arith,
                             bits=16 if sp.dtype == "int16" else None)


class DivRule(MulRule):
    """Div by a constant → ``Mul`` by its quantized reciprocal; Div by a Sqrt (a LayerNorm's
    ``(x - mean) / sqrt(var + eps)``) → TFLite's RSQRT of the Sqrt's input (a ``Lut``) and a
    ``Mul``, as TFLite converters emit it: TFLite has no integer DIV."""

    op_types = ("Div",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if ctx.view.const(node.input[0]) is not None:
            return (f"Div '{node.name}': the dividend is constant; ortnpu lowers a division "
                    "of an activation")
        divisor = node.input[1]
        value = ctx.view.const(divisor)
        if value is not None:
            if np.any(np.asarray(value) == 0):
                return f"Div '{node.name}': the constant divisor contains 0"
            return None
        producer = ctx.view.producer.get(divisor)
        if producer is None or producer.op_type != "Sqrt" or producer.domain not in ("",
                                                                                     "ai.onnx"):
            return (f"Div '{node.name}': the divisor is computed at run time and is not a "
                    "Sqrt; ortnpu lowers a division by a constant (as a multiplication by its "
                    "reciprocal) or by a Sqrt (as RSQRT · MUL), TFLite has no integer DIV")
        return None

    def operands(self, m: Match, ctx: QuantContext, out: Emitter
                 ) -> tuple[str, QuantParams, str, QuantParams, QuantParams, str]:
        node = m.node
        xa, pa = _operand(node.input[0], ctx, out)
        divisor = node.input[1]
        value = ctx.view.const(divisor)
        if value is not None:
            from ortnpu.quant.params import activation_params

            recip = (1.0 / np.asarray(value, np.float64)).astype(np.float32)
            pb = activation_params(float(recip.min()), float(recip.max()), ctx.arith)
            xb = out.constant(f"{divisor}_reciprocal_q", pb.quantize(recip))
        else:
            sqrt = ctx.view.producer[divisor]
            v = sqrt.input[0]
            xv = out.int_input(v)
            pb = _rsqrt_params(divisor, ctx)
            xb = _emit_table(out, "rsqrt", xv, ctx.params[v], out.unique(f"{divisor}_rsqrt"),
                             pb, out.unique(f"{node.name or node.output[0]}_rsqrt"), ctx)
        return xa, pa, xb, pb, self.out_params(m, ctx), rescale_rule(ctx.arith, elementwise=True)


class ActivationRule(LoweringRule):
    """A Relu/Clip that could not be fused → ``Requantize`` with the clamp."""

    op_types = ("Relu", "Clip")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if node.op_type == "Clip" and any(i and ctx.view.const(i) is None for i in node.input[1:]):
            return f"Clip '{node.name}': the bounds are computed at run time"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        ctx.unsigned_outputs.add(node.output[0])
        yp = ctx.params_of(node.output[0])
        rule = rescale_rule(a, elementwise=True)
        # TFLite's RELU/RELU6 divide the scales in float32 (ReluPrepare)
        real = (np.float32(xp.scale) / np.float32(yp.scale) if rule.startswith("tflite")
                else np.float64(xp.scale) / yp.scale)
        mult, shift = multiplier(float(real), a, rule)
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], yp)
        out.nodes.append(make_node(
            Requantize, [x, out.constant(f"{name}_multiplier", np.array([mult], np.int32)),
                         out.constant(f"{name}_shift", np.array([shift], np.int32))],
            y, yp.dtype, name, x_zp=xp.zero_point, y_zp=yp.zero_point,
            **clamp_attrs(yp, activation_bounds(node, ctx)), rounding=rule))


_LUT_FUNCTIONS = {
    "Sigmoid": lambda x, n: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda x, n: np.tanh(x),
    "HardSigmoid": lambda x, n: np.clip(float(attr(n, "alpha", 0.2)) * x
                                        + float(attr(n, "beta", 0.5)), 0, 1),
    "HardSwish": lambda x, n: x * np.clip(x / 6.0 + 0.5, 0, 1),
}


_SQRT1_2 = 0.70710678118654752440


def _tflite_lut_function(node: onnx.NodeProto) -> Callable[[np.ndarray], np.ndarray] | None:
    """The float32 function TFLite's ``LUTPopulate`` tabulates for ``node`` (ELU, GELU exact
    and tanh, and HardSigmoid in float32), with the C library's float functions."""
    f32 = np.float32
    op = node.op_type
    if op == "Elu":
        expm1 = float32_function("expm1f", np.expm1)
        alpha = f32(attr(node, "alpha", 1.0))

        def elu(v: np.ndarray) -> np.ndarray:   # value < 0.0f ? std::expm1(value) : value
            neg = expm1(v) if alpha == 1 else (alpha * expm1(v)).astype(f32)
            return np.where(v < 0, neg, v)
        return elu
    if op == "Gelu" and attr(node, "approximate", "none") == "tanh":
        tanh = float32_function("tanhf", np.tanh)
        k = f32(1.12837916709551257390 * _SQRT1_2)   # sqrt(2 / pi) as a float constant

        def gelu_tanh(v: np.ndarray) -> np.ndarray:  # 0.5f*in*(1.f + tanh(k*(in + c*in^3)))
            cube = ((f32(0.044715) * v).astype(f32) * v).astype(f32) * v
            inner = (k * (v + cube.astype(f32)).astype(f32)).astype(f32)
            return ((f32(0.5) * v).astype(f32) * (f32(1) + tanh(inner)).astype(f32))
        return gelu_tanh
    if op == "Gelu":
        erfc = float32_function("erfcf", np.vectorize(math.erfc, otypes=[np.float64]))

        def gelu(v: np.ndarray) -> np.ndarray:   # 0.5f * in * std::erfc(in * -M_SQRT1_2)
            return ((f32(0.5) * v).astype(f32) * erfc((v * f32(-_SQRT1_2)).astype(f32)))
        return gelu
    if op == "HardSigmoid":
        alpha, beta = f32(attr(node, "alpha", 0.2)), f32(attr(node, "beta", 0.5))
        return lambda v: np.clip((alpha * v).astype(f32) + beta, f32(0), f32(1))
    return None


class LutRule(LoweringRule):
    """Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Gelu, LeakyRelu → ``Lut`` (one table entry
    per input value)."""

    op_types = (*_LUT_FUNCTIONS, "Elu", "Gelu", "LeakyRelu")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if node.op_type == "LeakyRelu" and float(attr(node, "alpha", 0.01)) < 0:
            return (f"LeakyRelu '{node.name}': a negative alpha has no non-negative rescale "
                    "multiplier")
        if node.op_type == "Gelu" and attr(node, "approximate", "none") not in ("none", "tanh"):
            return f"Gelu '{node.name}': approximate={attr(node, 'approximate')!r} is unknown"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        tflite_8bit = (ctx.arith.rounding.startswith("tflite")
                       and ctx.params_of(m.node.input[0]).dtype != "int16")
        if m.node.op_type in ("Elu", "Gelu", "LeakyRelu") or (
                m.node.op_type == "HardSigmoid" and tflite_8bit):
            self._emit_tflite_table(m, ctx, out)
            return
        self._emit_float_table(m, ctx, out)

    def _emit_tflite_table(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        """LeakyRelu: TFLite's two-multiplier integer kernel, tabulated; Elu, Gelu, HardSigmoid:
        TFLite's float32 ``LUTPopulate`` on 8-bit inputs; Gelu on int16: TFLite's interpolated
        513-entry table, tabulated (the plain float function on other int16 inputs, which
        TFLite has no kernel for, and on targets without TFLite's arithmetic)."""
        node, a = m.node, ctx.arith
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        yp = ctx.params_of(node.output[0])
        if node.op_type == "LeakyRelu":
            table = leaky_relu_table(xp, yp, float(attr(node, "alpha", 0.01)),
                                     rescale_rule(a, elementwise=True), a)
        elif xp.dtype != "int16" and a.rounding.startswith("tflite"):
            fn = _tflite_lut_function(node)
            assert fn is not None
            table = lut_populate(fn, xp, yp)
        elif node.op_type == "Gelu" and a.rounding.startswith("tflite") and yp.zero_point == 0:
            fn = _tflite_lut_function(node)     # 16x8 GELU: TFLite's interpolated int16 table
            assert fn is not None
            table = lut_populate_int16(fn, xp, yp)
        else:
            fn = _tflite_lut_function(node)
            assert fn is not None
            table = float_table(fn, xp, yp)
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], yp)
        out.nodes.append(make_node(Lut, [x, out.constant(f"{name}_table", table)], y, yp.dtype,
                                   name))

    def _emit_float_table(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        if node.op_type == "Sigmoid" and xp.dtype == "int8" and not a.activation_symmetric:
            yp = QuantParams(1.0 / 256, -128, "int8")  # TFLite fixes logistic's output
        elif node.op_type == "Tanh" and xp.dtype == "int8" and not a.activation_symmetric:
            yp = QuantParams(1.0 / 128, 0, "int8")
        elif (node.op_type in ("Sigmoid", "Tanh") and xp.dtype == "int16"
              and a.rounding.startswith("tflite")):
            yp = QuantParams(2.0 ** -15, 0, "int16")   # TFLite's 16x8 output, as the converter
        else:
            yp = ctx.params_of(node.output[0])
        table = None
        if node.op_type == "HardSwish" and xp.dtype == "int8" and a.rounding.startswith("tflite"):
            table = hard_swish_int8_table(xp, yp)   # TFLite's 16-bit fixed-point kernel
        if (node.op_type in ("Sigmoid", "Tanh") and xp.dtype == "int16"
                and a.rounding.startswith("tflite")):
            # TFLite's interpolated int16 kernel (output 2^-15, zero points 0; else None)
            table = tflite_int16_sigmoid_tanh_table(node.op_type, xp, yp)
        if table is None:
            table = float_table(lambda v: _LUT_FUNCTIONS[node.op_type](v, node), xp, yp)
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], yp)
        out.nodes.append(make_node(Lut, [x, out.constant(f"{name}_table", table)], y, yp.dtype,
                                   name))


def _emit_tflite_mean(out: Emitter, x: str, y: str, xp: QuantParams, shape: list[int],
                      name: str) -> None:
    """TFLite's MEAN over H×W as a depthwise ``Conv`` with weights 1 (as NPUs run it).

    TFLite computes ``MBQM(Σx - zp·n, M', shift') + zp`` with its renormalized multiplier
    (:func:`~ortnpu.domain.arith.mean_multiplier`); a depthwise convolution with an all-ones
    H×W kernel, the input zero point and that rescale computes exactly this (int32 sum, the
    32-bit double-rounding rescale of the reference kernel for int8 and int16 alike).
    """
    _, c, h, w = shape
    mult, shift = mean_multiplier(1.0, h * w)   # the output keeps the input's parameters
    inputs = [x, out.constant(f"{name}_ones", np.ones((c, 1, h, w), np.int8)),
              out.constant(f"{name}_bias", np.zeros(c, np.int64)),
              out.constant(f"{name}_multiplier", np.array([mult], np.int32)),
              out.constant(f"{name}_shift", np.array([shift], np.int32))]
    out.nodes.append(make_node(
        Conv, inputs, y, xp.dtype, name, x_zp=xp.zero_point, y_zp=xp.zero_point,
        act_min=xp.qmin, act_max=xp.qmax, group=c, rounding="tflite_double", acc_bits=32))


class PoolRule(LoweringRule):
    """MaxPool, AveragePool, GlobalAveragePool → the pools; output keeps the input's scale."""

    op_types = ("MaxPool", "AveragePool", "GlobalAveragePool")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if node.op_type == "GlobalAveragePool":
            shape = ctx.view.shapes.get(node.input[0])
            if shape is not None and len(shape) != 4:
                return f"GlobalAveragePool '{node.name}': only 4-D (NCHW) inputs are lowered"
            return None
        kernel = attr(node, "kernel_shape", [])
        if len(kernel) != 2:
            return f"{node.op_type} '{node.name}': only 2-D pooling is lowered"
        if attr(node, "ceil_mode", 0):
            return (f"{node.op_type} '{node.name}': ceil_mode=1 is not supported; pad the "
                    "input explicitly or use ceil_mode=0")
        if len(node.output) > 1 and node.output[1]:
            return f"MaxPool '{node.name}': the Indices output is not supported"
        if node.op_type == "AveragePool" and attr(node, "count_include_pad", 0) and any(
                attr(node, "pads", [0, 0, 0, 0])):
            return (f"AveragePool '{node.name}': count_include_pad=1 with padding differs from "
                    "the NPU's in-bounds average")
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], xp)
        clamp = {"act_min": xp.qmin, "act_max": xp.qmax}
        if node.op_type == "GlobalAveragePool":
            shape = ctx.view.shapes.get(node.input[0]) or []  # batch may be dynamic: [1:] read
            if ctx.arith.rounding.startswith("tflite") and len(shape) == 4 and \
                    all(isinstance(d, int) and d > 0 for d in shape[1:]):
                _emit_tflite_mean(out, x, y, xp, shape, name)
            else:
                out.nodes.append(make_node(GlobalAveragePool, [x], y, xp.dtype, name, **clamp))
            return
        k = attr(node, "kernel_shape")
        s = attr(node, "strides", [1, 1])
        d = attr(node, "dilations", [1, 1])
        pads = _pads_2d(node, ctx, (k[0], k[1]), (s[0], s[1]), (d[0], d[1]))
        if isinstance(pads, str):
            raise ValueError(pads)
        common = dict(kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1],
                      pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2], pad_right=pads[3],
                      **clamp)
        if node.op_type == "MaxPool":
            out.nodes.append(make_node(MaxPool, [x], y, xp.dtype, name, dilation_h=d[0],
                                       dilation_w=d[1], **common))
        else:
            out.nodes.append(make_node(AveragePool, [x], y, xp.dtype, name, **common))


def _listed_axes(node: onnx.NodeProto, ctx: QuantContext) -> list[int] | str | None:
    """The ``axes`` of a Squeeze/Unsqueeze (input since opset 13, attribute before); ``None``
    when absent, a reason when computed at run time."""
    if len(node.input) > 1 and node.input[1]:
        value = ctx.view.const(node.input[1])
        if value is None:
            return f"{node.op_type} '{node.name}': the axes are computed at run time"
        return [int(v) for v in np.asarray(value).reshape(-1)]
    axes = attr(node, "axes", None)
    return None if axes is None else [int(v) for v in axes]


def squeeze_shape(node: onnx.NodeProto, ctx: QuantContext) -> list[int] | str:
    """The constant ``Reshape`` shape of a Squeeze/Unsqueeze, or why there is none.

    A dimension that stays at its index is written 0 (copied from the input at run time), so
    the shape holds for any batch size; one other unknown dimension is written -1.
    """
    axes = _listed_axes(node, ctx)
    if isinstance(axes, str):
        return axes
    shape = ctx.view.shapes.get(node.input[0])
    if shape is None:
        return f"{node.op_type} '{node.name}': the input rank is unknown"
    rank = len(shape)
    if node.op_type == "Squeeze":
        if axes is None:
            if any(d is None for d in shape):
                return (f"Squeeze '{node.name}': without axes it needs a static input shape; "
                        "fix it with `ortnpu optimize --input-shape`")
            axes = [k for k, d in enumerate(shape) if d == 1]
        norm = {a + rank if a < 0 else a for a in axes}
        if any(not 0 <= a < rank for a in norm) or any(shape[a] not in (1, None) for a in norm):
            return f"Squeeze '{node.name}': axes {axes} do not name size-1 axes of {shape}"
        source = [k for k in range(rank) if k not in norm]
    else:
        if axes is None:
            return f"Unsqueeze '{node.name}': no axes"
        out_rank = rank + len(axes)
        norm = {a + out_rank if a < 0 else a for a in axes}
        if len(norm) != len(axes) or any(not 0 <= a < out_rank for a in norm):
            return f"Unsqueeze '{node.name}': invalid axes {axes} for rank {rank}"
        rest = iter(range(rank))
        source = [-1 if k in norm else next(rest) for k in range(out_rank)]
    out: list[int] = []
    for j, i in enumerate(source):
        if i == j:
            out.append(0)
        elif i < 0:
            out.append(1)
        else:
            out.append(-1 if shape[i] is None else int(shape[i]))
    if out.count(-1) > 1:
        return (f"{node.op_type} '{node.name}': more than one moved axis has a dynamic size; "
                "fix the input shape with `ortnpu optimize --input-shape`")
    return out


class LayoutRule(LoweringRule):
    """Flatten, Reshape (constant shape), Transpose, Pad (constant), Squeeze and Unsqueeze
    (constant axes, as a Reshape: TFLite's SQUEEZE and EXPAND_DIMS copy too) → the layout ops."""

    op_types = ("Flatten", "Reshape", "Transpose", "Pad", "Squeeze", "Unsqueeze")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if node.op_type in ("Squeeze", "Unsqueeze"):
            shape = squeeze_shape(node, ctx)
            return shape if isinstance(shape, str) else None
        if node.op_type == "Reshape" and ctx.view.const(node.input[1]) is None:
            return f"Reshape '{node.name}': the target shape is computed at run time"
        if node.op_type == "Reshape" and attr(node, "allowzero", 0):
            return f"Reshape '{node.name}': allowzero=1 is not supported"
        if node.op_type == "Pad":
            mode = attr(node, "mode", "constant")
            if mode != "constant":
                return f"Pad '{node.name}': mode {mode!r} is not supported (constant only)"
            if len(node.input) < 2 or ctx.view.const(node.input[1]) is None:
                return f"Pad '{node.name}': the pads must be constant"
            if len(node.input) > 3 and node.input[3]:
                return f"Pad '{node.name}': the axes input is not supported"
            if len(node.input) > 2 and node.input[2]:
                v = ctx.view.const(node.input[2])
                if v is None or float(np.asarray(v).reshape(-1)[0]) != 0.0:
                    return f"Pad '{node.name}': only zero padding is lowered"
            if (ctx.view.const(node.input[1]) < 0).any():
                return f"Pad '{node.name}': negative pads (cropping) are not supported"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], xp)
        if node.op_type == "Flatten":
            out.nodes.append(make_node(Flatten, [x], y, xp.dtype, name,
                                       axis=int(attr(node, "axis", 1))))
        elif node.op_type == "Reshape":
            shape = out.constant(f"{name}_shape", ctx.view.const(node.input[1]).astype(np.int64))
            out.nodes.append(make_node(Reshape, [x, shape], y, xp.dtype, name))
        elif node.op_type in ("Squeeze", "Unsqueeze"):
            dims = squeeze_shape(node, ctx)
            if isinstance(dims, str):
                raise ValueError(dims)
            shape = out.constant(f"{name}_shape", np.array(dims, np.int64))
            out.nodes.append(make_node(Reshape, [x, shape], y, xp.dtype, name))
        elif node.op_type == "Transpose":
            rank = len(ctx.view.shapes.get(node.input[0]) or []) or None
            perm = attr(node, "perm", None)
            if perm is None:
                if rank is None:
                    raise ValueError(f"Transpose '{name}': unknown rank")
                perm = list(range(rank))[::-1]
            out.nodes.append(make_node(Transpose, [x, out.constant(
                f"{name}_perm", np.array(perm, np.int64))], y, xp.dtype, name))
        else:
            pads = out.constant(f"{name}_pads", ctx.view.const(node.input[1]).astype(np.int64))
            out.nodes.append(make_node(Pad, [x, pads], y, xp.dtype, name, value=xp.zero_point))


def _on_output_params(node: onnx.NodeProto, ctx: QuantContext, out: Emitter
                      ) -> tuple[list[str], str, QuantParams, str]:
    """Every input of ``node`` on its output's parameters (ops whose inputs and output share
    quantization: Concat, Maximum, Minimum); returns the inputs, the integer output, the output's
    parameters and the node's name."""
    yp = ctx.params_of(node.output[0])
    name = node.name or node.output[0]
    inputs = [_on_params(tensor, yp, f"{name}_in{k}", ctx, out)
              for k, tensor in enumerate(node.input)]
    return inputs, out.int_output(node.output[0], yp), yp, name


def _on_params(tensor: str, yp: QuantParams, name: str, ctx: QuantContext, out: Emitter) -> str:
    """``tensor`` as integers on the parameters ``yp``: a constant quantized with them, an
    activation requantized (QUANTIZE int8 → int8: multiplier from the double ratio of the
    scales) unless it already has them."""
    value = ctx.view.const(tensor)
    if value is not None:
        return out.constant(f"{name}_q", yp.quantize(value))
    x = out.int_input(tensor)
    xp = ctx.params[tensor]
    if xp == yp:
        return x
    rule = rescale_rule(ctx.arith, elementwise=True)
    mult, shift = multiplier(float(np.float64(xp.scale) / yp.scale), ctx.arith, rule)
    rq = out.unique(f"{name}_requantized")
    out.nodes.append(make_node(
        Requantize, [x, out.constant(f"{rq}_multiplier", np.array([mult], np.int32)),
                     out.constant(f"{rq}_shift", np.array([shift], np.int32))],
        rq, yp.dtype, rq, x_zp=xp.zero_point, y_zp=yp.zero_point,
        act_min=yp.qmin, act_max=yp.qmax, rounding=rule))
    return rq


class RequantizeRule(LoweringRule):
    """Identity → ``Requantize``: a copy, or a requantization where the model gives the output
    parameters of its own (a DequantizeLinear → QuantizeLinear pair of a QDQ model: TFLite's
    QUANTIZE int8 → int8, multiplier from the double ratio of the scales)."""

    op_types = ("Identity",)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        y = node.output[0]
        yp = ctx.params_of(y) if y in ctx.preset_params else xp
        rule = rescale_rule(ctx.arith, elementwise=True)
        mult, shift = multiplier(float(np.float64(xp.scale) / yp.scale), ctx.arith, rule)
        name = node.name or y
        yq = out.int_output(y, yp)
        out.nodes.append(make_node(
            Requantize, [x, out.constant(f"{name}_multiplier", np.array([mult], np.int32)),
                         out.constant(f"{name}_shift", np.array([shift], np.int32))],
            yq, yp.dtype, name, x_zp=xp.zero_point, y_zp=yp.zero_point, act_min=yp.qmin,
            act_max=yp.qmax, rounding=rule))


class MinMaxRule(LoweringRule):
    """Max/Min of two operands → ``Maximum``/``Minimum``: TFLite compares the stored integers,
    so both operands are brought to the output's parameters first (a constant is quantized
    with them)."""

    op_types = ("Max", "Min")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if len(node.input) != 2:
            return (f"{node.op_type} '{node.name}': {len(node.input)} operands (the NPU op takes "
                    "2)")
        if all(ctx.view.const(i) is not None for i in node.input):
            return (f"{node.op_type} '{node.name}': both operands are constant; fold it with "
                    "`ortnpu optimize`")
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        inputs, y, yp, name = _on_output_params(node, ctx, out)
        spec = Maximum if node.op_type == "Max" else Minimum
        out.nodes.append(make_node(spec, inputs, y, yp.dtype, name))


class ConcatRule(LoweringRule):
    """Concat → ``Concat``; inputs on another scale are requantized to the output's first, a
    constant input (a ViT's class token) is quantized with the output's parameters, and more
    inputs than one op takes are joined in stages."""

    op_types = ("Concat",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if len(node.input) < 2:
            return f"Concat '{node.name}': {len(node.input)} input (the NPU op takes 2 or more)"
        if all(ctx.view.const(i) is not None for i in node.input):
            return (f"Concat '{node.name}': every input is constant; fold it with "
                    "`ortnpu optimize`")
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        if copies_input(node) and node.output[0] not in ctx.preset_params:
            # a reflect Pad's slices joined: the values of one tensor, on its parameters
            ctx.set_params(node.output[0], ctx.params_of(node.input[0]))
        inputs, y, yp, name = _on_output_params(node, ctx, out)
        axis = int(attr(node, "axis", 1))
        # more inputs than one Concat op takes (an unrolled BiLSTM joins its 32 time steps):
        # Concats of up to MAX_VARIADIC inputs, then of their results; every input already
        # has the output's parameters, so each stage copies the same integers
        while len(inputs) > MAX_VARIADIC:
            joined = []
            for k in range(0, len(inputs), MAX_VARIADIC):
                part = inputs[k:k + MAX_VARIADIC]
                if len(part) == 1:
                    joined.append(part[0])
                    continue
                stage = out.unique(f"{name}_part{k // MAX_VARIADIC}")
                out.nodes.append(make_node(Concat, part, stage, yp.dtype, stage, axis=axis))
                joined.append(stage)
            inputs = joined
        out.nodes.append(make_node(Concat, inputs, y, yp.dtype, name, axis=axis))


def _slice_params(node: onnx.NodeProto, ctx: QuantContext) -> list[np.ndarray] | str:
    """Constant ``[starts, ends, axes, steps]`` of a Slice (inputs since opset 10, else
    attributes), or why not."""
    if len(node.input) > 1:
        values = []
        for k in range(1, 5):
            name = node.input[k] if len(node.input) > k else ""
            v = ctx.view.const(name) if name else None
            if name and v is None:
                what = ("starts", "ends", "axes", "steps")[k - 1]
                return f"Slice '{node.name}': the {what} are computed at run time"
            values.append(None if v is None else np.asarray(v, np.int64).reshape(-1))
        starts, ends, axes, steps = values
    else:
        starts = np.array(attr(node, "starts", []), np.int64)
        ends = np.array(attr(node, "ends", []), np.int64)
        axes, steps = attr(node, "axes", None), None
        axes = None if axes is None else np.array(axes, np.int64)
    if starts is None or ends is None:
        return f"Slice '{node.name}': starts and ends are required"
    axes = np.arange(starts.size, dtype=np.int64) if axes is None else axes
    steps = np.ones(starts.size, np.int64) if steps is None else steps
    if len({starts.size, ends.size, axes.size, steps.size}) != 1 or (steps == 0).any():
        return f"Slice '{node.name}': starts, ends, axes and steps do not match (or a step is 0)"
    return [starts, ends, axes, steps]


def split_sizes(node: onnx.NodeProto, ctx: QuantContext) -> tuple[int, list[int]] | str:
    """``(axis, size of each output)`` of a Split, or why they are not known."""
    axis = int(attr(node, "axis", 0))
    shape = ctx.view.shapes.get(node.input[0])
    if len(node.input) > 1 and node.input[1]:
        split = ctx.view.const(node.input[1])
        if split is None:
            return f"Split '{node.name}': the split sizes are computed at run time"
        sizes = [int(v) for v in np.asarray(split).reshape(-1)]
    elif attr(node, "split", None) is not None:
        sizes = [int(v) for v in attr(node, "split")]
    else:
        if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
            return (f"Split '{node.name}': equal parts need a static size of axis {axis}; fix "
                    "the input shape with `ortnpu optimize --input-shape`")
        n, dim = len(node.output), int(shape[axis])
        part = -(-dim // n)   # opset 18: ceil(dim / n), the last output gets the rest
        sizes = [max(0, min(part, dim - k * part)) for k in range(n)]
    if len(sizes) != len(node.output) or any(v < 0 for v in sizes):
        return f"Split '{node.name}': {len(sizes)} sizes for {len(node.output)} outputs"
    return axis, sizes


class SliceRule(LoweringRule):
    """Slice (constant starts/ends/axes/steps) and Split (constant sizes) → ``Slice`` nodes,
    one per output; the outputs keep the input's scale and zero point (TFLite's
    STRIDED_SLICE/SPLIT copy)."""

    op_types = ("Slice", "Split")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        found = _slice_params(node, ctx) if node.op_type == "Slice" else split_sizes(node, ctx)
        return found if isinstance(found, str) else None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        name = node.name or node.output[0]
        if node.op_type == "Slice":
            params = _slice_params(node, ctx)
            if isinstance(params, str):
                raise ValueError(params)
            pieces = [(node.output[0], name, params)]
        else:
            found = split_sizes(node, ctx)
            if isinstance(found, str):
                raise ValueError(found)
            axis, sizes = found
            offsets = np.cumsum([0, *sizes])
            pieces = [(o, f"{name}_{k}" if len(node.output) > 1 else name,
                       [np.array([offsets[k]]), np.array([offsets[k + 1]]), np.array([axis]),
                        np.array([1])])
                      for k, o in enumerate(node.output) if o]
        for tensor, piece, params in pieces:
            consts = [out.constant(f"{piece}_{what}", np.asarray(v, np.int64))
                      for what, v in zip(("starts", "ends", "axes", "steps"), params,
                                         strict=True)]
            y = out.int_output(tensor, xp)
            out.nodes.append(make_node(Slice, [x, *consts], y, xp.dtype, piece))


def gather_slice(node: onnx.NodeProto, ctx: QuantContext
                 ) -> tuple[int, int, int, list[int] | None] | str:
    """``(axis, start, end, reshape)`` of a Gather that copies one index or a run of
    consecutive indices (a Slice, then a Reshape dropping the axis for a scalar index), or why
    it is not one."""
    label = f"Gather '{node.name}'"
    indices = ctx.view.const(node.input[1]) if len(node.input) > 1 else None
    shape = ctx.view.shapes.get(node.input[0])
    if indices is None:
        return f"{label}: the indices are computed at run time"
    if ctx.view.const(node.input[0]) is not None:
        return f"{label}: the data is constant; fold it with `ortnpu optimize`"
    if not shape:
        return f"{label}: the data shape is not static"
    axis = int(attr(node, "axis", 0)) % len(shape)
    # a dynamic batch (axis 0, not the gathered axis) is kept: the Reshape's 0 copies it
    if not all(isinstance(d, int) and d > 0 for k, d in enumerate(shape) if k or not axis):
        return f"{label}: the data shape is not static"
    idx = np.asarray(indices).astype(np.int64).reshape(-1)
    if np.asarray(indices).ndim > 1 or idx.size == 0:
        return f"{label}: only a scalar index or a 1-D run of indices is lowered (as a Slice)"
    idx = np.where(idx < 0, idx + shape[axis], idx)
    if np.any(idx < 0) or np.any(idx >= shape[axis]) or np.any(np.diff(idx) != 1):
        return (f"{label}: the indices are not consecutive and in range; ortnpu lowers a "
                "Gather that is a Slice")
    kept = [d if isinstance(d, int) and d > 0 else 0 for d in shape]
    out_shape = [*kept[:axis], *kept[axis + 1:]] if np.asarray(indices).ndim == 0 else None
    return axis, int(idx[0]), int(idx[-1]) + 1, out_shape


class GatherRule(LoweringRule):
    """Gather of constant consecutive indices → ``Slice`` (and a ``Reshape`` dropping the axis
    of a scalar index): TFLite's GATHER of constant indices copies, as its converter's
    STRIDED_SLICE does; the output keeps the input's parameters."""

    op_types = ("Gather",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        found = gather_slice(node, ctx)
        return found if isinstance(found, str) else None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        found = gather_slice(node, ctx)
        if isinstance(found, str):
            raise ValueError(found)
        axis, start, end, reshape = found
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        name = node.name or node.output[0]
        consts = [out.constant(f"{name}_{what}", np.array([v], np.int64))
                  for what, v in (("starts", start), ("ends", end), ("axes", axis),
                                  ("steps", 1))]
        if reshape is None:
            y = out.int_output(node.output[0], xp)
            out.nodes.append(make_node(Slice, [x, *consts], y, xp.dtype, name))
            return
        sliced = out.unique(f"{name}_slice")
        out.nodes.append(make_node(Slice, [x, *consts], sliced, xp.dtype,
                                   out.unique(f"{name}_slice")))
        y = out.int_output(node.output[0], xp)
        shape = out.constant(f"{name}_shape", np.array(reshape, np.int64))
        out.nodes.append(make_node(Reshape, [sliced, shape], y, xp.dtype, name))


class ResizeRule(LoweringRule):
    """Resize (nearest or linear, constant scales or sizes) → ``Resize`` in the TFLite mode
    that picks the same sources (:mod:`ortnpu.quant.resize_modes`); the output keeps the
    input's scale and zero point, as TFLite's RESIZE_* kernels do."""

    op_types = ("Resize",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        plan = tflite_mode(node, ctx.view)
        return plan if isinstance(plan, str) else None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        plan = tflite_mode(node, ctx.view)
        if isinstance(plan, str):
            raise ValueError(plan)
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        y = out.int_output(node.output[0], xp)
        out.nodes.append(make_node(Resize, [x], y, xp.dtype, node.name or node.output[0],
                                   **plan.attrs()))


def _opset(ctx: QuantContext) -> int:
    """The model's version of the default ONNX domain."""
    for o in ctx.view.model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 21


class SoftmaxRule(LoweringRule):
    """Softmax over the last axis → ``Softmax``: TFLite's integer SOFTMAX (beta 1), whose output
    parameters are fixed: 1/256 and the type's minimum for 8 bits, 1/32768 and 0 for int16."""

    op_types = ("Softmax",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if not ctx.arith.rounding.startswith("tflite"):
            return (f"Softmax '{node.name}': ortnpu's integer softmax is TFLite's (gemmlowp "
                    f"fixed point); the target's {ctx.arith.rounding!r} arithmetic has none")
        shape = ctx.view.shapes.get(node.input[0])
        if not shape:
            return f"Softmax '{node.name}': the input rank is unknown"
        rank = len(shape)
        axis = int(attr(node, "axis", -1 if _opset(ctx) >= 13 else 1))
        if axis % rank != rank - 1:
            return (f"Softmax '{node.name}': it normalizes axis {axis} of a rank-{rank} input; "
                    "TFLite's SOFTMAX normalizes the last axis only")
        depth = shape[-1]
        limit = MAX_SOFTMAX_DEPTH[2 if ctx.arith.activation_bits > 8 else 1]
        if not isinstance(depth, int) or depth < 1:
            return (f"Softmax '{node.name}': the length of the normalized axis is not known "
                    "before run time; fix the input shape with `ortnpu optimize --input-shape`")
        if depth > limit:
            return (f"Softmax '{node.name}': rows of {depth} values; TFLite's "
                    f"{'int16' if limit > 511 else '8-bit'} SOFTMAX is defined for at most "
                    f"{limit} (with more values at the row maximum its final shift exceeds 31 "
                    "bits and the reference kernel aborts)")
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        if xp.dtype == "int16":
            yp = QuantParams(1.0 / 32768, 0, "int16")
        else:
            yp = QuantParams(1.0 / 256, int(np.iinfo(xp.dtype).min), xp.dtype)
        if xp.dtype != "int16" and ctx.view.shapes[node.input[0]][-1] > MAX_SOFTMAX_DEPTH[1]:
            raise ValueError(f"rows of {ctx.view.shapes[node.input[0]][-1]} values are longer "
                             f"than the {MAX_SOFTMAX_DEPTH[1]} of TFLite's 8-bit SOFTMAX")
        params = softmax_params(xp.scale, np.dtype(xp.dtype))
        if isinstance(params, str):
            raise ValueError(params)
        name = node.name or node.output[0]
        y = out.int_output(node.output[0], yp)
        out.nodes.append(make_node(Softmax, [x], y, yp.dtype, name, **params))


def _reduce_axes(node: onnx.NodeProto, ctx: QuantContext) -> list[int] | str | None:
    """The ``axes`` of a ReduceMean (input since opset 18, attribute before); ``None`` when
    absent (every axis), a reason when computed at run time."""
    if len(node.input) > 1 and node.input[1]:
        value = ctx.view.const(node.input[1])
        if value is None:
            return f"ReduceMean '{node.name}': the axes are computed at run time"
        return [int(v) for v in np.asarray(value).reshape(-1)]
    axes = attr(node, "axes", None)
    return None if axes is None else [int(v) for v in axes]


class ReduceMeanRule(LoweringRule):
    """ReduceMean over the last axis → ``FullyConnected`` with one row of ones (and a
    ``Reshape`` dropping the axis without keepdims):
    TFLite's MEAN (QuantizedMeanOrSum) is ``MBQM(Σx - zp_in·n, M', shift') + zp_out`` with
    ``QuantizeMultiplier(s_in / s_out)`` renormalized by ``1 / n``
    (:func:`~ortnpu.domain.arith.mean_multiplier`), which a fully connected layer of weights 1
    and that rescale computes exactly (as the spatial MEAN runs as a depthwise ``Conv``)."""

    op_types = ("ReduceMean",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if not ctx.arith.rounding.startswith("tflite"):
            return (f"ReduceMean '{node.name}': ortnpu lowers it as TFLite's MEAN; the "
                    f"target's {ctx.arith.rounding!r} arithmetic has no such rescale")
        shape = ctx.view.shapes.get(node.input[0])
        if not shape:
            return f"ReduceMean '{node.name}': the input rank is unknown"
        axes = _reduce_axes(node, ctx)
        if isinstance(axes, str):
            return axes
        rank = len(shape)
        if axes is None or sorted({a % rank for a in axes}) != [rank - 1]:
            return (f"ReduceMean '{node.name}': a mean over axes {axes} of a rank-{rank} "
                    "input; ortnpu lowers the mean over the last axis (the channel mean of a "
                    "LayerNorm; spatial means as GlobalAveragePool)")
        out_shape = ctx.view.shapes.get(node.output[0])
        if not attr(node, "keepdims", 1) and (
                out_shape is None or
                not all(isinstance(d, int) and d >= 0 for d in out_shape[1:])):
            return (f"ReduceMean '{node.name}': keepdims=0 needs the output shape; fix the "
                    "input shape with `ortnpu optimize --input-shape`")
        n = shape[-1]
        if not isinstance(n, int) or not 1 <= n <= 1 << 16:
            return (f"ReduceMean '{node.name}': the length of the last axis must be known and "
                    "at most 65536 (the int32 sum); fix the input shape with `ortnpu optimize "
                    "--input-shape`")
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node = m.node
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        yp = ctx.params_of(node.output[0])
        n = int(ctx.view.shapes[node.input[0]][-1])
        mult, shift = mean_multiplier(float(np.float64(np.float32(xp.scale))
                                            / np.float64(np.float32(yp.scale))), n)
        name = node.name or node.output[0]
        inputs = [x, out.constant(f"{name}_ones", np.ones((1, n), np.int8)),
                  out.constant(f"{name}_bias", np.zeros(1, np.int64)),
                  out.constant(f"{name}_multiplier", np.array([mult], np.int32)),
                  out.constant(f"{name}_shift", np.array([shift], np.int32))]
        y = out.int_output(node.output[0], yp)
        keep = bool(attr(node, "keepdims", 1))
        mean = y if keep else out.unique(f"{name}_kept")
        out.nodes.append(make_node(
            FullyConnected, inputs, mean, yp.dtype, name, x_zp=xp.zero_point, y_zp=yp.zero_point,
            act_min=yp.qmin, act_max=yp.qmax, rounding="tflite_double", acc_bits=32))
        if not keep:   # TFLite's MEAN without keep_dims: the same values, the axis dropped
            dims = [int(d) if isinstance(d, int) else -1 for d in ctx.view.shapes[node.output[0]]]
            if dims and len(ctx.view.shapes[node.input[0]]) > 1:
                dims[0] = -1   # the batch axis, whatever the run's batch
            shape = out.constant(f"{name}_shape", np.array(dims, np.int64))
            out.nodes.append(make_node(Reshape, [mean, shape], y, yp.dtype, f"{name}_squeeze"))


class LayerNormRule(LoweringRule):
    """A LayerNormalization left whole: evaluate and quantize decompose the ones over the last
    axis (:class:`~ortnpu.passes.DecomposeLayerNorm`) before placement; this says why the
    others were not."""

    op_types = ("LayerNormalization",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        from ortnpu.passes.layernorm import layernorm_problem

        shape = ctx.view.shapes.get(node.input[0])
        used = {i for n in ctx.view.model.graph.node for i in n.input} | ctx.view.graph_outputs
        why = layernorm_problem(node, len(shape) if shape else None, used)
        return f"LayerNormalization '{node.name}': " + (why or "it was not decomposed")


RULES: tuple[LoweringRule, ...] = (
    ConvRule(), FullyConnectedRule(), AddRule(), MulRule(), ActivationRule(), LutRule(),
    PoolRule(), LayoutRule(), ConcatRule(), SliceRule(), SubRule(), MinMaxRule(),
    RequantizeRule(), ResizeRule(), SoftmaxRule(), ReduceMeanRule(), SquareRule(),
    SqrtRule(), DivRule(), LayerNormRule(), GatherRule(),
)
RULE_OF_OP: dict[str, LoweringRule] = {op: r for r in RULES for op in r.op_types}
