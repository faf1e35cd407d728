"""The ``qdq`` style: QuantizeLinear/DequantizeLinear around float ops, for other toolchains.

The NPU graph stores fixed-point multipliers, not scales, so the QDQ graph uses unit scales on
the inputs (DequantizeLinear gives ``q - zero_point``) and puts the whole rescale into the
output QuantizeLinear: ``y_scale = 1 / (multiplier · 2^(shift-31))`` (per channel where the
parameters are). Toolchains that read QDQ see the same real-valued layer.

It differs from the target's arithmetic, and the model's metadata ``ortnpu.export.notes`` says
so: QuantizeLinear rounds half to even (targets round half up or half away from zero, TFLite's
default rounds twice), the scale is a float32 reciprocal, the int32 wrap of 32-bit accumulators
and of left shifts is not represented, and onnxruntime may fuse the QDQ groups into its own
int8 kernels (disable ``QDQSelectorActionTransformer`` to run the graph as written).
Table lookups, max pooling and layout ops are exported as in the ``integer`` style (exact).
"""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.conformance.edges import effective_factor
from ortnpu.domain.spec import ONNX_OF_DTYPE
from ortnpu.exporters import integer
from ortnpu.exporters.builder import F32, NP_OF_ONNX, Builder
from ortnpu.exporters.graph import Lowering, NodeContext, check_table, lower_model

#: QuantizeLinear/DequantizeLinear with int16 and per-axis parameters need opset 21.
QDQ_OPSET = 21


def _factor(rule: str, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Real value of each rescale ``(multiplier, shift)`` as float64."""
    fn = np.vectorize(lambda mm, ss: float(effective_factor(rule, int(mm), int(ss))[0])
                      * 2.0 ** effective_factor(rule, int(mm), int(ss))[1])
    return np.asarray(fn(np.asarray(m).reshape(-1), np.asarray(s).reshape(-1)), np.float64)


def _dq(b: Builder, x: str, zp: int, scale: float | np.ndarray = 1.0, axis: int = 1) -> str:
    """DequantizeLinear of an activation with its zero point."""
    t = b.types[x]
    scale = np.asarray(scale, np.float32)
    attrs = {"axis": axis} if scale.ndim else {}
    zps = np.full(scale.shape, zp, NP_OF_ONNX[t])
    return b.emit("DequantizeLinear", [x, b.const(scale, np.float32), b.const(zps, zps.dtype)],
                  F32, **attrs)


def _q(b: Builder, ctx: NodeContext, y: str, factor: np.ndarray, y_zp: int, axis: int) -> None:
    """QuantizeLinear with ``scale = 1 / factor`` into the output type, then the clamp."""
    scale = np.where(factor > 0, 1.0 / np.maximum(factor, 1e-300), 1.0).astype(np.float32)
    scale = np.minimum(scale, np.float32(3e38))
    attrs = {"axis": axis} if scale.size > 1 else {}
    scale = scale if scale.size > 1 else scale.reshape(())
    zp = np.full(scale.shape, y_zp, ctx.out_dtype)
    q = b.emit("QuantizeLinear", [y, b.const(scale, np.float32), b.const(zp, zp.dtype)],
               ONNX_OF_DTYPE[ctx.out_dtype], **attrs)
    lo, hi = integer.RANGE[ctx.out_type]
    a = ctx.attrs
    if (a["act_min"], a["act_max"]) == (lo, hi):
        b.emit("Identity", [q], ctx.out_type, ctx.output)
    else:
        b.finish(b.i64(q), a["act_min"], a["act_max"], ctx.out_type, ctx.output)


def conv(b: Builder, ctx: NodeContext) -> None:
    """DQ(x) → Conv with DQ'd int8 weights and float bias → Q(1/multiplier per channel)."""
    a = ctx.attrs
    w, bias = ctx.const(1), ctx.const(2)
    wf = b.emit("DequantizeLinear", [b.const(w, np.int8), b.const(1.0, np.float32)], F32)
    attrs = {"group": a["group"], "strides": [a["stride_h"], a["stride_w"]],
             "dilations": [a["dilation_h"], a["dilation_w"]],
             "pads": [a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]],
             "kernel_shape": list(w.shape[2:])}
    y = b.emit("Conv", [_dq(b, ctx.input(0), a["x_zp"]), wf, b.const(bias, np.float32)], F32,
               **attrs)
    _q(b, ctx, y, _factor(a["rounding"], ctx.const(3), ctx.const(4)), a["y_zp"], 1)


def fully_connected(b: Builder, ctx: NodeContext) -> None:
    """DQ(x) @ DQ(wᵀ) + bias → Q per output."""
    a = ctx.attrs
    w, bias = ctx.const(1), ctx.const(2)
    wf = b.emit("DequantizeLinear", [b.const(w.T, np.int8), b.const(1.0, np.float32)], F32)
    y = b.emit("MatMul", [_dq(b, ctx.input(0), a["x_zp"]), wf], F32)
    y = b.emit("Add", [y, b.const(bias, np.float32)], F32)
    _q(b, ctx, y, _factor(a["rounding"], ctx.const(3), ctx.const(4)), a["y_zp"], -1)


def matmul(b: Builder, ctx: NodeContext) -> None:
    """DQ(a) @ DQ(b) → Q."""
    a = ctx.attrs
    y = b.emit("MatMul", [_dq(b, ctx.input(0), a["a_zp"]), _dq(b, ctx.input(1), a["b_zp"])],
               F32)
    _q(b, ctx, y, _factor(a["rounding"], ctx.const(2), ctx.const(3)), a["y_zp"], 1)


def add(b: Builder, ctx: NodeContext) -> None:
    """DQ(a, scale_a) + DQ(b, scale_b) → Q(1): the three rescales folded into two scales."""
    a = ctx.attrs
    r = a["rounding"]
    fy = _factor(r, np.array(a["y_multiplier"]), np.array(a["y_shift"]))[0]
    parts = []
    for k, p in ((0, "a_"), (1, "b_")):
        f = _factor(r, np.array(a[f"{p}multiplier"]), np.array(a[f"{p}shift"]))[0]
        parts.append(_dq(b, ctx.input(k), a[f"{p}zp"], f * fy * 2.0 ** a["left_shift"]))
    _q(b, ctx, b.emit("Add", parts, F32), np.array([1.0]), a["y_zp"], 1)


def mul(b: Builder, ctx: NodeContext) -> None:
    """DQ(a) · DQ(b) → Q(1/multiplier)."""
    a = ctx.attrs
    y = b.emit("Mul", [_dq(b, ctx.input(0), a["a_zp"]), _dq(b, ctx.input(1), a["b_zp"])], F32)
    _q(b, ctx, y, _factor(a["rounding"], np.array(a["multiplier"]), np.array(a["shift"])),
       a["y_zp"], 1)


def requantize(b: Builder, ctx: NodeContext) -> None:
    """DQ(x, scale = multiplier per axis) → Q(1)."""
    a = ctx.attrs
    f = _factor(a["rounding"], ctx.const(1), ctx.const(2))
    if f.size > 1:
        channels = max(ctx.const(1).size, ctx.const(2).size)
        f = np.broadcast_to(f, (channels,))
        axis = a["axis"] % (ctx.rank(0) or 1)
        x = _dq(b, ctx.input(0), a["x_zp"], f, axis)
    else:
        x = _dq(b, ctx.input(0), a["x_zp"], f[0])
    _q(b, ctx, x, np.array([1.0]), a["y_zp"], 1)


def average_pool(b: Builder, ctx: NodeContext) -> None:
    """DQ → AveragePool (padding not counted) → Q (half to even, unlike the target)."""
    y = b.emit("AveragePool", [_dq(b, ctx.input(0), 0)], F32, count_include_pad=0,
               **integer.window_attrs(ctx.attrs, dilation=False))
    _q(b, ctx, y, np.array([1.0]), 0, 1)


def global_average_pool(b: Builder, ctx: NodeContext) -> None:
    """DQ → GlobalAveragePool → Q."""
    y = b.emit("GlobalAveragePool", [_dq(b, ctx.input(0), 0)], F32)
    _q(b, ctx, y, np.array([1.0]), 0, 1)


LOWERINGS: dict[str, Lowering] = {
    **integer.LOWERINGS,
    "Conv": conv, "FullyConnected": fully_connected, "MatMul": matmul, "Add": add, "Mul": mul,
    "Requantize": requantize, "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
}
check_table(LOWERINGS, "qdq")

NOTES = ("QuantizeLinear rounds half to even where the target rounds half up / half away from "
         "zero (tflite_double rounds twice); output scales are float32 reciprocals of the "
         "fixed-point multipliers; int32 accumulator and left-shift wrap-around are not "
         "represented; run with QDQSelectorActionTransformer disabled to avoid onnxruntime's "
         "fused int8 kernels. Lut, MaxPool and layout ops are exact.")


def export_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Export in the QDQ style (opset 21 for int16 and per-axis Q/DQ)."""
    bumped = onnx.ModelProto()
    bumped.CopyFrom(model)
    for o in bumped.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, QDQ_OPSET)
    if not any(o.domain in ("", "ai.onnx") for o in bumped.opset_import):
        bumped.opset_import.add(domain="", version=QDQ_OPSET)
    return lower_model(bumped, LOWERINGS, "qdq", None,
                       {"ortnpu.export.exact": "false", "ortnpu.export.notes": NOTES})
