"""The ``integer`` style: only default-domain integer ops, bit-exact with the simulator.

Products are accumulated by ConvInteger/MatMulInteger in int32 (only the type combinations
onnxruntime computes exactly: u8×u8, u8×i8 and i8×i8 for ConvInteger; i8×i8, u8×u8 and i8×u8
for MatMulInteger), everything after that in int64: bias, the accumulator width (int32 wrap),
the target's rescale (``rescale.py``), the zero point, the clamp, and a final Cast.

* int16 activations are split exactly into a signed high byte and an unsigned low byte
  (``x = 256·hi + lo``, zero point likewise), so the same integer kernels serve them.
* uint8 activations times int8 weights in a matmul use u8×u8 with the weights offset by 128
  (onnxruntime's u8×i8 MatMulInteger saturates).
* Activation × activation products with an int16 operand use an int64 MatMul.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ortnpu.domain.arith import INT32_MAX
from ortnpu.errors import UnsupportedError
from ortnpu.exporters.builder import F32, I32, I64, NP_OF_ONNX, Builder
from ortnpu.exporters.graph import Lowering, NodeContext, check_table
from ortnpu.exporters.rescale import lower_rescale
from ortnpu.exporters.softmax import lower_softmax
from ortnpu.passes.graph import node_inputs, rename_input

I8, U8, I16 = TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16
RANGE = {I8: (-128, 127), U8: (0, 255), I16: (-(1 << 15), (1 << 15) - 1)}


# --------------------------------------------------------------------------- helpers
def _split16(b: Builder, x: str) -> tuple[str, str]:
    """int16 ``x`` as ``(hi int8, lo uint8)`` with ``x = 256·hi + lo``."""
    xi = b.cast(x, I32)
    lo = b.emit("Mod", [xi, b.const(256, np.int32)], I32, fmod=0)
    hi = b.emit("Div", [b.sub(xi, lo), b.const(256, np.int32)], I32)
    return b.cast(hi, I8), b.cast(lo, U8)


def _zp_parts(zp: int) -> tuple[int, int]:
    """Zero point split like :func:`_split16`: ``zp = 256·hi + lo``."""
    return zp >> 8, zp & 255


def _check_sum(ctx: NodeContext, terms: int, a_max: int, b_max: int) -> None:
    """The int32 accumulation of ConvInteger/MatMulInteger must not overflow."""
    if terms * a_max * b_max > INT32_MAX:
        raise UnsupportedError(f"{ctx.where}{terms} products of up to {a_max}·{b_max} could "
                               "overflow the int32 accumulation of ConvInteger/MatMulInteger; "
                               "split the layer")


def _conv_sum(b: Builder, ctx: NodeContext, x: str, x_zp: int, w: np.ndarray,
              attrs: dict[str, object]) -> str:
    """Exact int64 ``Σ (x - x_zp)·w`` of a (grouped) convolution; padding counts as zero."""
    xtype = b.types[x]
    terms = int(np.prod(w.shape[1:]))
    _check_sum(ctx, terms, 255, 128)
    wc = b.const(w, np.int8)
    if xtype in (I8, U8):
        zp = b.const(x_zp, NP_OF_ONNX[xtype])
        return b.i64(b.emit("ConvInteger", [x, wc, zp], I32, **attrs))
    hi, lo = _split16(b, x)
    zhi, zlo = _zp_parts(x_zp)
    shi = b.emit("ConvInteger", [hi, wc, b.const(zhi, np.int8)], I32, **attrs)
    slo = b.emit("ConvInteger", [lo, wc, b.const(zlo, np.uint8)], I32, **attrs)
    return b.add(b.mul_c(b.i64(shi), 256), b.i64(slo))


def _matmul_const(b: Builder, ctx: NodeContext, x: str, x_zp: int, w_t: np.ndarray) -> str:
    """Exact int64 ``(x - x_zp) @ w_t`` for constant int8 ``w_t`` [K, N]."""
    _check_sum(ctx, w_t.shape[0], 255, 128)
    xtype = b.types[x]
    w_i8 = b.const(w_t, np.int8)
    w_u8 = b.const(w_t.astype(np.int16) + 128, np.uint8)
    z128 = b.const(128, np.uint8)

    def mm(a: str, zp: int, a_type: int) -> str:
        if a_type == I8:
            return b.emit("MatMulInteger", [a, w_i8, b.const(zp, np.int8)], I32)
        return b.emit("MatMulInteger", [a, w_u8, b.const(zp, np.uint8), z128], I32)

    if xtype in (I8, U8):
        return b.i64(mm(x, x_zp, xtype))
    hi, lo = _split16(b, x)
    zhi, zlo = _zp_parts(x_zp)
    return b.add(b.mul_c(b.i64(mm(hi, zhi, I8)), 256), b.i64(mm(lo, zlo, U8)))


def _accumulate_width(b: Builder, acc: str, acc_bits: int) -> str:
    return b.wrap32(acc) if acc_bits == 32 else acc


def channel_shape(values: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Reshape a per-channel vector (or scalar) to broadcast along ``axis`` of a rank-``rank``
    tensor."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = v.size
    return v.reshape(shape)


def _rescale_out(b: Builder, ctx: NodeContext, acc: str, m: np.ndarray, s: np.ndarray,
                 y_zp: int = 0) -> None:
    """rescale, zero point, clamp, cast to the output under the node's output name."""
    y = lower_rescale(b, acc, m, s, ctx.attrs["rounding"])
    y = b.add_c(y, y_zp)
    b.finish(y, ctx.attrs["act_min"], ctx.attrs["act_max"], ctx.out_type, ctx.output)


# --------------------------------------------------------------------------- linear
def lower_conv(b: Builder, ctx: NodeContext) -> None:
    """ConvInteger (+ int16 split) → bias → accumulator width → rescale per channel."""
    a = ctx.attrs
    w, bias = ctx.const(1), ctx.const(2)
    attrs = {"group": a["group"], "strides": [a["stride_h"], a["stride_w"]],
             "dilations": [a["dilation_h"], a["dilation_w"]],
             "pads": [a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]],
             "kernel_shape": list(w.shape[2:])}
    acc = _conv_sum(b, ctx, ctx.input(0), a["x_zp"], w, attrs)
    acc = b.add_c(acc, bias.astype(np.int64).reshape(1, -1, 1, 1))
    acc = _accumulate_width(b, acc, a["acc_bits"])
    _rescale_out(b, ctx, acc, channel_shape(ctx.const(3), 4, 1),
                 channel_shape(ctx.const(4), 4, 1), a["y_zp"])


def lower_fully_connected(b: Builder, ctx: NodeContext) -> None:
    """MatMulInteger with transposed constant weights → bias → width → rescale per output."""
    a = ctx.attrs
    w, bias = ctx.const(1), ctx.const(2)
    acc = _matmul_const(b, ctx, ctx.input(0), a["x_zp"], np.ascontiguousarray(w.T))
    acc = b.add_c(acc, bias.astype(np.int64))
    acc = _accumulate_width(b, acc, a["acc_bits"])
    _rescale_out(b, ctx, acc, channel_shape(ctx.const(3), 1, -1),
                 channel_shape(ctx.const(4), 1, -1), a["y_zp"])


def lower_matmul(b: Builder, ctx: NodeContext) -> None:
    """MatMulInteger for 8-bit operands (u8×i8 via an offset of b), int64 MatMul with int16."""
    a = ctx.attrs
    x, y = ctx.input(0), ctx.input(1)
    tx, ty = b.types[x], b.types[y]
    if I16 in (tx, ty):
        xs = b.add_c(b.i64(x), -a["a_zp"])
        ys = b.add_c(b.i64(y), -a["b_zp"])
        acc = b.emit("MatMul", [xs, ys], I64)
    else:
        shape = ctx.shapes.get(x)
        if shape is None or shape[-1] is None:
            raise UnsupportedError(f"{ctx.where}the inner dimension of {x!r} must be static")
        _check_sum(ctx, int(shape[-1]), 255, 255)
        yz = a["b_zp"]
        if (tx, ty) == (U8, I8):   # onnxruntime's u8×i8 MatMulInteger saturates
            y = b.cast(b.add(b.cast(y, I32), b.const(128, np.int32)), U8)
            ty, yz = U8, yz + 128
        acc = b.i64(b.emit("MatMulInteger", [x, y, b.const(a["a_zp"], NP_OF_ONNX[tx]),
                                             b.const(yz, NP_OF_ONNX[ty])], I32))
    acc = _accumulate_width(b, acc, a["acc_bits"])
    _rescale_out(b, ctx, acc, ctx.const(2).reshape(()), ctx.const(3).reshape(()), a["y_zp"])


# ----------------------------------------------------------------------- elementwise
def lower_add(b: Builder, ctx: NodeContext, b_sign: int = 1) -> None:
    """Both inputs shifted left (int32 wrap), rescaled, summed (int32 wrap), rescaled.

    ``b_sign = -1`` is a Sub: b's multiplier is negated (TFLite), or with the node's
    ``negate = 'result'`` b's rescaled value (TOSA)."""
    a = ctx.attrs
    r = a["rounding"]
    after = b_sign < 0 and a.get("negate", "multiplier") == "result"
    parts = []
    for k, p, sign in ((0, "a_", 1), (1, "b_", b_sign)):
        v = b.add_c(b.i64(ctx.input(k)), -a[f"{p}zp"])
        v = b.wrap32(b.mul_c(v, 1 << a["left_shift"]))
        m = a[f"{p}multiplier"] if after else sign * a[f"{p}multiplier"]
        part = lower_rescale(b, v, np.int64(m), np.int64(a[f"{p}shift"]), r)
        parts.append(b.mul_c(part, -1) if after and k == 1 else part)
    total = b.wrap32(b.add(*parts))
    y = lower_rescale(b, total, np.int64(a["y_multiplier"]), np.int64(a["y_shift"]), r)
    b.finish(b.add_c(y, a["y_zp"]), a["act_min"], a["act_max"], ctx.out_type, ctx.output)


def lower_sub(b: Builder, ctx: NodeContext) -> None:
    """As Add with b negated (TFLite's SUB, or TOSA's with ``negate = 'result'``)."""
    lower_add(b, ctx, b_sign=-1)


def lower_squared_difference(b: Builder, ctx: NodeContext) -> None:
    """Both inputs shifted and rescaled as in Add, the int32 difference squared (int32 wrap,
    the square of an int32 fits int64), rescaled (TFLite's SQUARED_DIFFERENCE)."""
    a = ctx.attrs
    r = a["rounding"]
    parts = []
    for k, p in ((0, "a_"), (1, "b_")):
        v = b.add_c(b.i64(ctx.input(k)), -a[f"{p}zp"])
        v = b.wrap32(b.mul_c(v, 1 << a["left_shift"]))
        parts.append(lower_rescale(b, v, np.int64(a[f"{p}multiplier"]),
                                   np.int64(a[f"{p}shift"]), r))
    d = b.wrap32(b.sub(*parts))
    y = lower_rescale(b, b.wrap32(b.mul(d, d)), np.int64(a["y_multiplier"]),
                      np.int64(a["y_shift"]), r)
    b.finish(b.add_c(y, a["y_zp"]), a["act_min"], a["act_max"], ctx.out_type, ctx.output)


def _lower_min_max(b: Builder, ctx: NodeContext, op: str) -> None:
    """Max/Min on int32 copies (onnxruntime's Max/Min do not take 8/16-bit types), cast back."""
    y = b.emit(op, [b.cast(ctx.input(0), I32), b.cast(ctx.input(1), I32)], I32)
    b.cast(y, ctx.out_type, output=ctx.output)


def lower_maximum(b: Builder, ctx: NodeContext) -> None:
    """Elementwise maximum of the integers."""
    _lower_min_max(b, ctx, "Max")


def lower_minimum(b: Builder, ctx: NodeContext) -> None:
    """Elementwise minimum of the integers."""
    _lower_min_max(b, ctx, "Min")


def lower_mul(b: Builder, ctx: NodeContext) -> None:
    """Product of the offset inputs (int32 wrap), one rescale."""
    a = ctx.attrs
    xa = b.add_c(b.i64(ctx.input(0)), -a["a_zp"])
    xb = b.add_c(b.i64(ctx.input(1)), -a["b_zp"])
    prod = b.wrap32(b.mul(xa, xb))
    _rescale_out(b, ctx, prod, np.int64(a["multiplier"]), np.int64(a["shift"]), a["y_zp"])


def lower_requantize(b: Builder, ctx: NodeContext) -> None:
    """Offset, rescale (per-axis constants), zero point, clamp."""
    a = ctx.attrs
    m, s = ctx.const(1), ctx.const(2)
    if m.size > 1 or s.size > 1:
        rank = ctx.rank(0)
        if rank is None:
            raise UnsupportedError(f"{ctx.where}per-channel parameters need the rank of "
                                   f"{ctx.input(0)!r}")
        channels = max(m.size, s.size)
        m = channel_shape(np.broadcast_to(m, (channels,)), rank, a["axis"])
        s = channel_shape(np.broadcast_to(s, (channels,)), rank, a["axis"])
    else:
        m, s = m.reshape(()), s.reshape(())
    x = b.add_c(b.i64(ctx.input(0)), -a["x_zp"])
    _rescale_out(b, ctx, x, m, s, a["y_zp"])


def lower_lut(b: Builder, ctx: NodeContext) -> None:
    """Gather from the table with the input shifted to a zero-based index."""
    x = ctx.input(0)
    lo = RANGE[b.types[x]][0]
    index = b.add_c(b.i64(x), -lo)
    table = ctx.const(1)
    b.emit("Gather", [b.const(table, table.dtype), index], ctx.out_type, ctx.output, axis=0)


# --------------------------------------------------------------------------- pooling
def window_attrs(a: dict, dilation: bool) -> dict[str, object]:
    attrs: dict[str, object] = {
        "kernel_shape": [a["kernel_h"], a["kernel_w"]],
        "strides": [a["stride_h"], a["stride_w"]],
        "pads": [a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]]}
    if dilation:
        attrs["dilations"] = [a["dilation_h"], a["dilation_w"]]
    return attrs


def _clamp_cast(b: Builder, ctx: NodeContext, y: str) -> None:
    """Apply act_min/act_max when narrower than the type, writing the node's output."""
    lo, hi = RANGE[ctx.out_type]
    a = ctx.attrs
    if (a["act_min"], a["act_max"]) == (lo, hi) and b.types[y] == ctx.out_type:
        b.emit("Identity", [y], ctx.out_type, ctx.output)
        return
    b.finish(b.i64(y), a["act_min"], a["act_max"], ctx.out_type, ctx.output)


def lower_max_pool(b: Builder, ctx: NodeContext) -> None:
    """MaxPool (int8/uint8 natively, int16 through float32, which holds it exactly)."""
    x = ctx.input(0)
    attrs = window_attrs(ctx.attrs, dilation=True)
    if b.types[x] == I16:
        y = b.emit("MaxPool", [b.cast(x, F32)], F32, **attrs)
    else:
        y = b.emit("MaxPool", [x], b.types[x], **attrs)
    _clamp_cast(b, ctx, y)


def _rounded_div(b: Builder, total: str, count: np.ndarray) -> str:
    """``(total ± count/2) / count`` truncating: the reference's rounding half away."""
    half = count // 2
    up = b.add_c(total, half)
    down = b.add_c(total, -half)
    num = b.where(b.compare("Greater", total, b.const(0)), up, down)
    return b.div_c(num, count)


def lower_average_pool(b: Builder, ctx: NodeContext) -> None:
    """Window sums by a depthwise ConvInteger of ones, divided by the in-bounds count."""
    a = ctx.attrs
    _, c, h, w = ctx.shape(0, static_from=1)
    attrs = window_attrs(a, dilation=False)
    ones = np.ones((c, 1, a["kernel_h"], a["kernel_w"]), np.int8)
    total = _conv_sum(b, ctx, ctx.input(0), 0, ones, {**attrs, "group": c})
    inside = np.pad(np.ones((h, w), np.int64), ((a["pad_top"], a["pad_bottom"]),
                                                 (a["pad_left"], a["pad_right"])))
    kh, kw, sh, sw = a["kernel_h"], a["kernel_w"], a["stride_h"], a["stride_w"]
    oh = (h + a["pad_top"] + a["pad_bottom"] - kh) // sh + 1
    ow = (w + a["pad_left"] + a["pad_right"] - kw) // sw + 1
    count = np.array([[inside[i * sh:i * sh + kh, j * sw:j * sw + kw].sum() for j in range(ow)]
                      for i in range(oh)], np.int64).reshape(1, 1, oh, ow)
    y = _rounded_div(b, total, count)
    b.finish(y, a["act_min"], a["act_max"], ctx.out_type, ctx.output)


def lower_global_average_pool(b: Builder, ctx: NodeContext) -> None:
    """int64 ReduceSum over H×W, divided by H·W with the reference's rounding."""
    _, _, h, w = ctx.shape(0, static_from=2)
    total = b.emit("ReduceSum", [b.i64(ctx.input(0)), b.const([2, 3])], I64, keepdims=1)
    y = _rounded_div(b, total, np.int64(h * w))
    b.finish(y, ctx.attrs["act_min"], ctx.attrs["act_max"], ctx.out_type, ctx.output)


# ---------------------------------------------------------------------------- layout
def lower_concat(b: Builder, ctx: NodeContext) -> None:
    """Concat as is."""
    b.emit("Concat", list(ctx.node.input), ctx.out_type, ctx.output, axis=ctx.attrs["axis"])


def lower_reshape(b: Builder, ctx: NodeContext) -> None:
    """Reshape as is (0 copies a dimension, as in the domain)."""
    b.emit("Reshape", [ctx.input(0), ctx.input(1)], ctx.out_type, ctx.output)


def lower_flatten(b: Builder, ctx: NodeContext) -> None:
    """Flatten: the domain's axis follows ONNX (negative counts from the end)."""
    b.emit("Flatten", [ctx.input(0)], ctx.out_type, ctx.output, axis=ctx.attrs["axis"])


def lower_transpose(b: Builder, ctx: NodeContext) -> None:
    """Transpose with the constant permutation as attribute."""
    perm = [int(p) for p in ctx.const(1).reshape(-1)]
    b.emit("Transpose", [ctx.input(0)], ctx.out_type, ctx.output, perm=perm)


def lower_pad(b: Builder, ctx: NodeContext) -> None:
    """Constant Pad (int16 through int32: onnxruntime has no int16 Pad)."""
    x = ctx.input(0)
    pads = b.const(ctx.const(1).astype(np.int64))
    if b.types[x] == I16:
        y = b.emit("Pad", [b.cast(x, I32), pads, b.const(ctx.attrs["value"], np.int32)], I32,
                   mode="constant")
        b.cast(y, I16, output=ctx.output)
        return
    value = b.const(ctx.attrs["value"], NP_OF_ONNX[b.types[x]])
    b.emit("Pad", [x, pads, value], ctx.out_type, ctx.output, mode="constant")


def lower_slice(b: Builder, ctx: NodeContext) -> None:
    """ONNX Slice with the constant starts/ends/axes/steps (onnxruntime slices 8/16-bit types)."""
    params = [b.const(ctx.const(k).astype(np.int64)) for k in range(1, 5)]
    b.emit("Slice", [ctx.input(0), *params], ctx.out_type, ctx.output)


def lower_resize(b: Builder, ctx: NodeContext) -> None:
    """Resize as Gathers of TFLite's per-axis tables (``ops_resize.tables``); bilinear as the
    integer interpolation in int64 (rows, then columns: the same integer sum), rounded half
    away from zero over 2^20 with Abs/Sign (ONNX integer Div truncates)."""
    from ortnpu.domain.ops_resize import ONE_10, tables

    rows, cols = tables(ctx.shape(0, static_from=1), ctx.attrs)
    index = [b.const(t[:2].astype(np.int64)[k]) for t in (rows, cols) for k in (0, 1)]
    x = ctx.input(0)
    if ctx.attrs["mode"] == "nearest":
        y = b.emit("Gather", [x, index[0]], ctx.out_type, axis=2)
        b.emit("Gather", [y, index[2]], ctx.out_type, ctx.output, axis=3)
        return
    xi = b.i64(x)
    wy = rows[2].astype(np.int64).reshape(-1, 1)
    wx = cols[2].astype(np.int64)
    top = b.emit("Gather", [xi, index[0]], I64, axis=2)
    bottom = b.emit("Gather", [xi, index[1]], I64, axis=2)
    mixed = b.add(b.mul_c(top, ONE_10 - wy), b.mul_c(bottom, wy))
    left = b.emit("Gather", [mixed, index[2]], I64, axis=3)
    right = b.emit("Gather", [mixed, index[3]], I64, axis=3)
    acc = b.add(b.mul_c(left, ONE_10 - wx), b.mul_c(right, wx))
    magnitude = b.div_c(b.add_c(b.emit("Abs", [acc], I64), 1 << 19), 1 << 20)
    y = b.mul(b.emit("Sign", [acc], I64), magnitude)
    lo, hi = RANGE[ctx.out_type]
    b.finish(y, lo, hi, ctx.out_type, ctx.output)


LOWERINGS: dict[str, Lowering] = {
    "Conv": lower_conv, "FullyConnected": lower_fully_connected, "MatMul": lower_matmul,
    "Add": lower_add, "Mul": lower_mul, "Requantize": lower_requantize, "Lut": lower_lut,
    "MaxPool": lower_max_pool, "AveragePool": lower_average_pool,
    "GlobalAveragePool": lower_global_average_pool, "Concat": lower_concat,
    "Reshape": lower_reshape, "Flatten": lower_flatten, "Transpose": lower_transpose,
    "Pad": lower_pad, "Slice": lower_slice, "Sub": lower_sub, "Maximum": lower_maximum,
    "Minimum": lower_minimum, "SquaredDifference": lower_squared_difference,
    "Resize": lower_resize, "Softmax": lower_softmax,
}
check_table(LOWERINGS, "integer")


def drop_implicit_casts(b: Builder, graph: onnx.GraphProto) -> None:
    """Remove Cast round trips onnxruntime does not need between integer ops.

    A clamped int64 tensor cast to its narrow type and straight back to int64 (the output of
    one lowered op feeding the next) is used directly; the narrow tensor stays only where
    something else (a graph output, a standard op) reads it.
    """
    producer = {n.output[0]: n for n in graph.node if n.output}
    replace: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Cast" or not node.input:
            continue
        to = next(a.i for a in node.attribute if a.name == "to")
        src = producer.get(node.input[0])
        if src is None or src.op_type != "Cast":
            continue
        origin = src.input[0]
        if b.bounded.get(origin) is not None and b.types.get(origin) == to:
            replace[node.output[0]] = origin
    if not replace:
        return
    for old, new in replace.items():
        rename_input(graph, old, new)   # subgraph bodies follow
    outputs = {o.name for o in graph.output}
    used = {i for n in graph.node for i in node_inputs(n)} | outputs
    keep = [n for n in graph.node if any(o in used for o in n.output)]
    while len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in node_inputs(n)} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]

