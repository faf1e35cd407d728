"""Lowering rules: one class per float op family, mapping it onto ``com.ortnpu`` ops.

Each rule has a :meth:`~LoweringRule.check` that returns ``None`` when it can lower the node or a
sentence saying why not (the node then stays on the CPU with that reason), and an
:meth:`~LoweringRule.emit` that writes the integer nodes. Rules choose output parameters in one
place each, so the arithmetic of every layer can be read off its rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
    MaxPool,
    Mul,
    Pad,
    Requantize,
    Reshape,
    Transpose,
    make_node,
)
from ortnpu.domain.arith import mean_multiplier, round_half_away
from ortnpu.passes.graph import attr
from ortnpu.quant.context import QuantContext
from ortnpu.quant.emitter import Emitter
from ortnpu.quant.params import (
    QuantParams,
    bias_values,
    linear_rule,
    multiplier,
    rescale_rule,
    weight_params,
)
from ortnpu.quant.tables import float_table, hard_swish_int8_table

FUSABLE_ACTIVATIONS = ("Relu", "Clip")


@dataclass
class Match:
    """A node to lower, with the activation fused into it (if any)."""

    node: onnx.NodeProto
    activation: onnx.NodeProto | None = None

    @property
    def output(self) -> str:
        """The float tensor the lowered node replaces (after the fused activation)."""
        return (self.activation or self.node).output[0]


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


def fusable_activation(node: onnx.NodeProto, ctx: QuantContext) -> onnx.NodeProto | None:
    """The Relu/Clip that follows ``node`` alone and can become its output clamp."""
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
    """Integer weights and scales: the caller's exact ones (QDQ import) or quantized here."""
    if name in ctx.preset_weights:
        q, scales = ctx.preset_weights[name]
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
        reals = [np.float64(np.float32(xp.scale)) * ws[c if ws.size > 1 else 0] / yp.scale
                 for c in range(cout)]
        mult, shift = zip(*(multiplier(float(r), a, rule) for r in reals), strict=True)
        b = _corrected_bias(ctx, node.input[0], b, w, wq, ws, int(attr(node, "group", 1)))
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
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        yp = self.out_params(m, ctx)
        transposed = not (node.op_type == "Gemm" and attr(node, "transB", 0))
        wq, ws = _weights(ctx, node.input[1], w, axis=0, transposed=transposed)
        rule, acc_bits, bias_bits = linear_rule(a, ctx.is_wide(xp, yp))
        if ws.size == 1:  # TFLite: input*filter scale in float32, then the division in double
            reals = [np.float64(np.float32(xp.scale) * np.float32(ws[0])) / yp.scale] * n
        else:
            reals = [np.float64(xp.scale) * ws[c] / yp.scale for c in range(n)]
        mult, shift = zip(*(multiplier(float(r), a, rule) for r in reals), strict=True)
        bias = _corrected_bias(ctx, node.input[0], bias, w, wq, ws, 1)
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
        mult, shift = multiplier(float(np.float64(p0.scale) * p1.scale / yp.scale), a, rule)
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


class AddRule(_BinaryRule):
    """Add → ``Add`` with TFLite's common-scale scheme (left shift, three multipliers)."""

    op_types = ("Add",)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        xa, pa, xb, pb, yp, rule = self.operands(m, ctx, out)
        left = 15 if ctx.is_wide(pa, pb, yp) else a.add_left_shift
        twice_max = 2.0 * max(np.float64(pa.scale), np.float64(pb.scale))
        ma = multiplier(float(pa.scale / twice_max), a, rule)
        mb = multiplier(float(pb.scale / twice_max), a, rule)
        my = multiplier(float(twice_max / ((1 << left) * np.float64(yp.scale))), a, rule)
        name = node.name or node.output[0]
        y = out.int_output(m.output, yp)
        out.nodes.append(make_node(
            Add, [xa, xb], y, yp.dtype, name, a_zp=pa.zero_point, b_zp=pb.zero_point,
            y_zp=yp.zero_point, left_shift=left, a_multiplier=ma[0], a_shift=ma[1],
            b_multiplier=mb[0], b_shift=mb[1], y_multiplier=my[0], y_shift=my[1],
            **clamp_attrs(yp, activation_bounds(m.activation, ctx)), rounding=rule))


class MulRule(_BinaryRule):
    """Mul → ``Mul``; the real multiplier is computed in float32 as TFLite does."""

    op_types = ("Mul",)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
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


class LutRule(LoweringRule):
    """Sigmoid, Tanh, HardSigmoid, HardSwish → ``Lut`` (one table entry per input value)."""

    op_types = tuple(_LUT_FUNCTIONS)

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        x = out.int_input(node.input[0])
        xp = ctx.params[node.input[0]]
        if node.op_type == "Sigmoid" and xp.dtype == "int8" and not a.activation_symmetric:
            yp = QuantParams(1.0 / 256, -128, "int8")  # TFLite fixes logistic's output
        elif node.op_type == "Tanh" and xp.dtype == "int8" and not a.activation_symmetric:
            yp = QuantParams(1.0 / 128, 0, "int8")
        else:
            yp = ctx.params_of(node.output[0])
        table = None
        if node.op_type == "HardSwish" and xp.dtype == "int8" and a.rounding.startswith("tflite"):
            table = hard_swish_int8_table(xp, yp)   # TFLite's 16-bit fixed-point kernel
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


class LayoutRule(LoweringRule):
    """Flatten, Reshape (constant shape), Transpose, Pad (constant) → the layout ops."""

    op_types = ("Flatten", "Reshape", "Transpose", "Pad")

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
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


class ConcatRule(LoweringRule):
    """Concat → ``Concat``; inputs on another scale are requantized to the output's first."""

    op_types = ("Concat",)

    def check(self, node: onnx.NodeProto, ctx: QuantContext) -> str | None:
        if not 2 <= len(node.input) <= 8:
            return f"Concat '{node.name}': {len(node.input)} inputs (the NPU op takes 2 to 8)"
        if any(ctx.view.const(i) is not None for i in node.input):
            return f"Concat '{node.name}': constant inputs are not lowered"
        return None

    def emit(self, m: Match, ctx: QuantContext, out: Emitter) -> None:
        node, a = m.node, ctx.arith
        yp = ctx.params_of(node.output[0])
        rule = rescale_rule(a, elementwise=True)
        name = node.name or node.output[0]
        inputs = []
        for k, tensor in enumerate(node.input):
            x = out.int_input(tensor)
            xp = ctx.params[tensor]
            if xp != yp:
                mult, shift = multiplier(float(np.float64(xp.scale) / yp.scale), a, rule)
                rq = out.unique(f"{name}_in{k}_requantized")
                out.nodes.append(make_node(
                    Requantize, [x, out.constant(f"{rq}_multiplier", np.array([mult], np.int32)),
                                 out.constant(f"{rq}_shift", np.array([shift], np.int32))],
                    rq, yp.dtype, rq, x_zp=xp.zero_point, y_zp=yp.zero_point,
                    act_min=yp.qmin, act_max=yp.qmax, rounding=rule))
                x = rq
            inputs.append(x)
        y = out.int_output(node.output[0], yp)
        out.nodes.append(make_node(Concat, inputs, y, yp.dtype, name,
                                   axis=int(attr(node, "axis", 1))))


RULES: tuple[LoweringRule, ...] = (
    ConvRule(), FullyConnectedRule(), AddRule(), MulRule(), ActivationRule(), LutRule(),
    PoolRule(), LayoutRule(), ConcatRule(),
)
RULE_OF_OP: dict[str, LoweringRule] = {op: r for r in RULES for op in r.op_types}
