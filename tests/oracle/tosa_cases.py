"""TOSA 1.0 test graphs built with tosa-tools' serializer, fixed seeds, one per op pattern.

Each case is a small quantized graph as a TFLite-to-TOSA legalization writes it (8/16-bit in
and out, the int32 accumulators RESCALEd back), with random data and parameters drawn from a
seeded generator; the oracle runs it in the TOSA reference model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ts = __import__("tosa_serializer")

I8, I16, I32, I48 = ts.DType.INT8, ts.DType.INT16, ts.DType.INT32, ts.DType.INT48
NP = {I8: np.int8, I16: np.int16, I32: np.int32}


class Graph:
    """A TOSA graph under construction (one input tensor per ``inp`` call)."""

    def __init__(self, rng: np.random.Generator) -> None:
        import tempfile

        # addPlaceholder writes each input as .npy under the path prefix: keep it out of cwd
        self.ser = ts.TosaSerializer(tempfile.mkdtemp(prefix="ortnpu-tosa-"))
        self.rng = rng
        self.feeds: list[np.ndarray] = []
        self.count = 0

    def name(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def inp(self, shape: list[int], dtype: object, value: np.ndarray | None = None) -> str:
        lo, hi = np.iinfo(NP[dtype]).min, np.iinfo(NP[dtype]).max
        if value is None:
            value = self.rng.integers(lo, hi, size=shape, endpoint=True)
        value = np.asarray(value).astype(NP[dtype])
        self.feeds.append(value)
        return self.ser.addPlaceholder(shape, dtype, value).name

    def const(self, value: np.ndarray, dtype: object) -> str:
        value = np.asarray(value)
        if dtype == I48:   # the serializer packs int64 values into 6 bytes each
            value = value.astype(np.int64)
        return self.ser.addConst(list(value.shape), dtype, value).name

    def op(self, op: object, inputs: list[str], shape: list[int], dtype: object,
           attr: object | None = None, output: bool = False) -> str:
        if output:
            name = self.ser.addOutput(shape, dtype).name
        else:
            name = self.ser.addIntermediate(shape, dtype).name
        if attr is None:
            attr = ts.TosaSerializerAttribute()
        self.ser.addOperator(op, inputs, [name], attr)
        return name

    def rescale(self, x: str, shape: list[int], in_dtype: object, out_dtype: object,
                mult: list[int], shift: list[int], izp: int, ozp: int, *, double: bool = True,
                scale32: bool = True, output: bool = False, in_uns: bool = False,
                out_uns: bool = False) -> str:
        a = ts.TosaSerializerAttribute()
        mode = ts.RoundingMode.DOUBLE_ROUND if double else ts.RoundingMode.SINGLE_ROUND
        a.RescaleAttribute(scale32, mode, len(mult) > 1, in_uns, out_uns)
        mdt = I32 if scale32 else I16
        zin = in_dtype if in_dtype in (I8, I16, I48) else I32
        zout = I16 if out_dtype == I16 else (I8 if out_dtype == I8 else I32)
        ins = [x, self.const(np.array(mult, NP[mdt]), mdt),
               self.const(np.array(shift, np.int8), I8),
               self.const(np.array([izp], _zp_np(zin, in_uns)), zin),
               self.const(np.array([ozp], _zp_np(zout, out_uns)), zout)]
        return self.op(ts.Op.RESCALE, ins, shape, out_dtype, a, output)


def _zp_np(dtype: object, unsigned: bool) -> type:
    if dtype == I48:
        return np.int64
    if dtype == I16:
        return np.uint16 if unsigned else np.int16
    if dtype == I8:
        return np.uint8 if unsigned else np.int8
    return np.int32


def scale(rng: np.random.Generator, real: float, bits: int = 32) -> tuple[int, int]:
    """TOSA-style (multiplier, right shift) of a real scale (multiplier in [2^(b-2), 2^(b-1)))."""
    m, e = np.frexp(real)
    mult = round(float(m) * (1 << (bits - 1)))
    shift = (bits - 1) - int(e)
    if mult == 1 << (bits - 1):
        mult //= 2
        shift -= 1
    return mult, shift


def case_rescale(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([1, 3, 4, 5], dt)
    mult, shift = zip(*[scale(rng, float(rng.uniform(0.01, 3.0))) for _ in range(5)],
                      strict=True)
    izp = int(rng.integers(-128, 128)) if dt == I8 else 0
    ozp = int(rng.integers(-128, 128)) if dt == I8 else 0
    g.rescale(x, [1, 3, 4, 5], dt, dt, list(mult), list(shift), izp, ozp,
              double=dt == I8, output=True)
    return g


def case_rescale_every_shift(rng: np.random.Generator, dt: object) -> Graph:
    """One channel per TOSA shift 2..62, multipliers up to 2^31-1, double rounding; each
    channel's inputs stay inside TOSA's REQUIRE range |x| < 2^(shift-1)."""
    g = Graph(rng)
    shifts = np.arange(2, 63)
    n = len(shifts)
    info = np.iinfo(NP[dt])
    bound = np.minimum(1 << (np.minimum(shifts, 40) - 1), int(info.max) + 1)
    value = rng.integers(-bound, bound, size=(3, n))
    value[0] = bound - 1
    value[1] = -bound
    x = g.inp([3, n], dt, value)
    mults = [int(v) for v in rng.choice([(1 << 31) - 1, 1 << 30, (1 << 30) + 12345,
                                         int(rng.integers(1 << 30, 1 << 31))], size=n)]
    g.rescale(x, [3, n], dt, dt, mults, [int(s) for s in shifts], 0, 0, output=True)
    return g


def case_rescale_unsigned(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([2, 3, 4], I8)
    m, s = scale(rng, float(rng.uniform(0.3, 1.5)))
    u = g.rescale(x, [2, 3, 4], I8, I8, [m], [s], 0, 128 + 3, output=False, out_uns=True)
    g.rescale(u, [2, 3, 4], I8, I8, [m], [s], 200, -5, in_uns=True, output=True)
    return g


def _conv_common(g: Graph, rng: np.random.Generator, dt: object, x: str, acc_shape: list[int],
                 out_c: int, per_ch_scale: float, output: bool = True) -> str:
    mults, shifts = zip(*[scale(rng, per_ch_scale * float(rng.uniform(0.5, 2.0)),
                                32 if dt == I8 else 16) for _ in range(out_c)], strict=True)
    ozp = int(rng.integers(-20, 20)) if dt == I8 else 0
    return g.rescale(x, acc_shape, I32 if dt == I8 else I48, dt, list(mults), list(shifts), 0,
                     ozp, double=dt == I8, scale32=dt == I8, output=output)


def case_conv2d(rng: np.random.Generator, dt: object, clamp: bool = False) -> Graph:
    """CONV2D (weight zero point folded when w - w_zp fits int8) + per-channel RESCALE, and
    optionally a CLAMP that becomes the Conv's output clamp."""
    g = Graph(rng)
    n, h, w, c, oc, k = 1, 8, 6, 3, 4, 3
    x = g.inp([n, h, w, c], dt)
    wzp = int(rng.integers(-20, 21))
    wt = (rng.integers(-100, 101, size=(oc, k, k, c)) + wzp).astype(np.int8)
    acc_t = I32 if dt == I8 else I48
    bias = rng.integers(-5000, 5000, size=oc)
    izp = int(rng.integers(-10, 10)) if dt == I8 else 0
    pad, stride, dil = [1, 0, 1, 1], [2, 1], [1, 1]
    oh = (h - 1 + pad[0] + pad[1] - (k - 1) * dil[0]) // stride[0] + 1
    ow = (w - 1 + pad[2] + pad[3] - (k - 1) * dil[1]) // stride[1] + 1
    a = ts.TosaSerializerAttribute()
    a.Conv2dAttribute(pad, stride, dil, False, acc_t)
    ins = [x, g.const(wt, I8), g.const(bias.astype(np.int32), I32) if dt == I8 else
           g.const(bias, I48), g.const(np.array([izp], NP[dt]), dt),
           g.const(np.array([wzp], np.int8), I8)]
    acc = g.op(ts.Op.CONV2D, ins, [n, oh, ow, oc], acc_t, a)
    y = _conv_common(g, rng, dt, acc, [n, oh, ow, oc], oc, 1.0 / (k * k * c * 127 * 4),
                     output=not clamp)
    if clamp:
        g.op(ts.Op.CLAMP, [y], [n, oh, ow, oc], dt, clamp_attr(dt, -10, 60), output=True)
    return g


def case_depthwise(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    n, h, w, c, m, k = 1, 6, 5, 3, 2, 3
    x = g.inp([n, h, w, c], dt)
    wt = rng.integers(-127, 128, size=(k, k, c, m)).astype(np.int8)
    acc_t = I32 if dt == I8 else I48
    bias = rng.integers(-3000, 3000, size=c * m)
    izp = int(rng.integers(-10, 10)) if dt == I8 else 0
    pad, stride, dil = [1, 1, 1, 1], [1, 1], [1, 2]
    oh = (h - 1 + 2 - (k - 1)) + 1
    ow = (w - 1 + 2 - (k - 1) * 2) + 1
    a = ts.TosaSerializerAttribute()
    a.DepthwiseConv2dAttribute(pad, stride, dil, False, acc_t)
    ins = [x, g.const(wt, I8), g.const(bias.astype(np.int32), I32) if dt == I8 else
           g.const(bias, I48), g.const(np.array([izp], NP[dt]), dt),
           g.const(np.array([0], np.int8), I8)]
    acc = g.op(ts.Op.DEPTHWISE_CONV2D, ins, [n, oh, ow, c * m], acc_t, a)
    _conv_common(g, rng, dt, acc, [n, oh, ow, c * m], c * m, 1.0 / (k * k * 127 * 2))
    return g


def case_matmul(rng: np.random.Generator, dt: object, per_channel: bool = False) -> Graph:
    g = Graph(rng)
    a_in, b_in = g.inp([2, 3, 8], dt), g.inp([2, 8, 5], dt)
    acc_t = I32 if dt == I8 else I48
    azp = int(rng.integers(-10, 10)) if dt == I8 else 0
    bzp = int(rng.integers(-10, 10)) if dt == I8 else 0
    acc = g.op(ts.Op.MATMUL, [a_in, b_in, g.const(np.array([azp], NP[dt]), dt),
                              g.const(np.array([bzp], NP[dt]), dt)], [2, 3, 5], acc_t,
               _attr("MatMulAttribute"))
    if per_channel:
        mults, shifts = _channel_scales(rng, 5, 1.0 / (8 * 128 * 40), dt)
    else:
        m, sh = scale(rng, 1.0 / (8 * 128 * 40), 32 if dt == I8 else 16)
        mults, shifts = [m], [sh]
    g.rescale(acc, [2, 3, 5], acc_t, dt, mults, shifts, 0, 3 if dt == I8 else 0,
              double=dt == I8, scale32=dt == I8, output=True)
    return g


def _attr(name: str, *args: object) -> object:
    a = ts.TosaSerializerAttribute()
    getattr(a, name)(*args)
    return a


def case_add(rng: np.random.Generator, dt: object, sub: bool = False) -> Graph:
    g = Graph(rng)
    shape = [1, 4, 4, 3]
    xa, xb = g.inp(shape, dt), g.inp([1, 1, 4, 3], dt)
    left = 20 if dt == I8 else 15
    sa, sb, sy = (float(rng.uniform(0.01, 0.1)) for _ in range(3))
    mx = 2 * max(sa, sb)
    azp = int(rng.integers(-20, 20)) if dt == I8 else 0
    bzp = int(rng.integers(-20, 20)) if dt == I8 else 0
    ma, ra = scale(rng, sa / mx * (1 << left))
    mb, rb = scale(rng, sb / mx * (1 << left))
    my, ry = scale(rng, mx / ((1 << left) * sy))
    a32 = g.rescale(xa, shape, dt, I32, [ma], [ra], azp, 0)
    b32 = g.rescale(xb, [1, 1, 4, 3], dt, I32, [mb], [rb], bzp, 0)
    s = g.op(ts.Op.SUB if sub else ts.Op.ADD, [a32, b32], shape, I32,
             _attr("SubAttribute" if sub else "AddAttribute"))
    g.rescale(s, shape, I32, dt, [my], [ry], 0, 2 if dt == I8 else 0, output=True)
    return g


def case_sub(rng: np.random.Generator, dt: object) -> Graph:
    return case_add(rng, dt, sub=True)


def case_mul(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    shape = [2, 3, 4]
    xa, xb = g.inp(shape, dt), g.inp(shape, dt)
    azp = int(rng.integers(-20, 20)) if dt == I8 else 0
    a32 = g.rescale(xa, shape, dt, I32, [1 << 30], [30], azp, 0)
    b32 = g.rescale(xb, shape, dt, I32, [1 << 30], [30], 0, 0)
    p = g.op(ts.Op.MUL, [a32, b32, g.const(np.array([0], np.int8), I8)], shape, I32,
             _attr("MulAttribute"))
    m, s = scale(rng, float(rng.uniform(1e-4, 1e-2)) if dt == I8 else 1.5e-5)
    g.rescale(p, shape, I32, dt, [m], [s], 0, -4 if dt == I8 else 0, output=True)
    return g


def case_table(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([2, 5, 7], dt)
    if dt == I8:
        table = rng.integers(-128, 128, size=256).astype(np.int8)
        g.op(ts.Op.TABLE, [x, g.const(table, I8)], [2, 5, 7], I8, _attr("TableAttribute"),
             output=True)
        return g
    base = np.cumsum(rng.integers(-200, 300, size=513))
    table = np.clip(base - base.mean(), -32768, 32767).astype(np.int16)
    t = g.op(ts.Op.TABLE, [x, g.const(table, I16)], [2, 5, 7], I32, _attr("TableAttribute"))
    g.rescale(t, [2, 5, 7], I32, I16, [1 << 30], [30 + 7], 0, 0, output=True)
    return g


def clamp_attr(dt: object, lo: int, hi: int) -> object:
    """A CLAMP attribute; the bounds are stored as the bytes of the tensor's type."""
    width = 1 if dt == I8 else 2
    a = ts.TosaSerializerAttribute()
    a.ClampAttribute(list(np.array([lo], NP[dt]).tobytes()[:width]),
                     list(np.array([hi], NP[dt]).tobytes()[:width]),
                     ts.NanPropagationMode.PROPAGATE)
    return a


def case_clamp(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([1, 4, 5, 3], dt)
    lo, hi = (-50, 90) if dt == I8 else (-3000, 12000)
    g.op(ts.Op.CLAMP, [x], [1, 4, 5, 3], dt, clamp_attr(dt, lo, hi), output=True)
    return g


def case_conv_clamp(rng: np.random.Generator, dt: object) -> Graph:
    """CONV2D + RESCALE + CLAMP: the CLAMP becomes the Conv's output clamp."""
    return case_conv2d(rng, dt, clamp=True)


def case_avg_pool(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([1, 7, 6, 3], dt)
    acc_t = I32
    izp = int(rng.integers(-20, 20)) if dt == I8 else 0
    ozp = int(rng.integers(-20, 20)) if dt == I8 else 0
    a = ts.TosaSerializerAttribute()
    a.AvgPool2dAttribute([3, 2], [2, 2], [0, 0, 0, 0], acc_t)
    g.op(ts.Op.AVG_POOL2D, [x, g.const(np.array([izp], NP[dt]), dt),
                            g.const(np.array([ozp], NP[dt]), dt)], [1, 3, 3, 3], dt, a,
         output=True)
    return g


def case_avg_pool_padded(rng: np.random.Generator, dt: object) -> Graph:
    """Padded AVG_POOL2D: the divisor is the in-bounds count (zero points 0)."""
    g = Graph(rng)
    x = g.inp([1, 7, 7, 3], dt)
    a = ts.TosaSerializerAttribute()
    a.AvgPool2dAttribute([3, 3], [2, 2], [1, 1, 1, 1], I32)
    zp = g.const(np.array([0], NP[dt]), dt)
    g.op(ts.Op.AVG_POOL2D, [x, zp, zp], [1, 4, 4, 3], dt, a, output=True)
    return g


def case_max_pool(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([1, 7, 7, 3], dt)
    a = ts.TosaSerializerAttribute()
    a.MaxPool2dAttribute([3, 3], [2, 2], [1, 1, 1, 1], ts.NanPropagationMode.PROPAGATE)
    g.op(ts.Op.MAX_POOL2D, [x], [1, 4, 4, 3], dt, a, output=True)
    return g


def case_reduce_sum(rng: np.random.Generator, dt: object) -> Graph:
    g = Graph(rng)
    x = g.inp([1, 4, 5, 6], dt)
    zp = int(rng.integers(-20, 20)) if dt == I8 else 0
    a32 = g.rescale(x, [1, 4, 5, 6], dt, I32, [1 << 30], [30], zp, 0)
    s = g.op(ts.Op.REDUCE_SUM, [a32], [1, 4, 1, 6], I32, _attr("ReduceSumAttribute", 2))
    m, sh = scale(rng, 1.0 / 5 * float(rng.uniform(0.5, 1.5)))
    g.rescale(s, [1, 4, 1, 6], I32, dt, [m], [sh], 0, 1 if dt == I8 else 0, output=True)
    return g


def case_layout(rng: np.random.Generator, dt: object) -> Graph:
    """TRANSPOSE, CONCAT and RESHAPE (shape from CONST_SHAPE)."""
    g = Graph(rng)
    x, y = g.inp([2, 3, 4], dt), g.inp([2, 3, 2], dt)
    c = g.op(ts.Op.CONCAT, [x, y], [2, 3, 6], dt, _attr("ConcatAttribute", 2))
    t = g.op(ts.Op.TRANSPOSE, [c], [6, 2, 3], dt, _attr("TransposeAttribute", [2, 0, 1]))
    shape = g.ser.addConst([2], ts.DType.SHAPE, np.array([4, 9], np.int64)).name
    g.op(ts.Op.RESHAPE, [t, shape], [4, 9], dt, _attr("ReshapeAttribute"), output=True)
    return g


def case_pad_slice(rng: np.random.Generator, dt: object) -> Graph:
    """PAD (padding from CONST_SHAPE, a pad value) then SLICE (start and size)."""
    g = Graph(rng)
    x = g.inp([1, 3, 4, 2], dt)
    padding = g.ser.addConst([8], ts.DType.SHAPE, np.array([0, 0, 1, 2, 0, 1, 0, 0],
                                                           np.int64)).name
    value = g.const(np.array([-7], NP[dt]), dt)
    p = g.op(ts.Op.PAD, [x, padding, value], [1, 6, 5, 2], dt, _attr("PadAttribute"))
    start = g.ser.addConst([4], ts.DType.SHAPE, np.array([0, 1, 1, 0], np.int64)).name
    size = g.ser.addConst([4], ts.DType.SHAPE, np.array([1, 4, 3, 2], np.int64)).name
    g.op(ts.Op.SLICE, [p, start, size], [1, 4, 3, 2], dt, _attr("SliceAttribute"), output=True)
    return g


def _channel_scales(rng: np.random.Generator, n: int, real: float, dt: object
                    ) -> tuple[list[int], list[int]]:
    """Per-channel (multiplier, right shift) around ``real``; channels 1 and 2 share theirs, so
    the importer's runs of equal parameters are exercised too."""
    pairs = [scale(rng, real * float(rng.uniform(0.5, 2.0)), 32 if dt == I8 else 16)
             for _ in range(n)]
    pairs[2] = pairs[1]
    mults, shifts = zip(*pairs, strict=True)
    return list(mults), list(shifts)


def case_matmul_per_channel(rng: np.random.Generator, dt: object) -> Graph:
    """MATMUL + a RESCALE per output column."""
    return case_matmul(rng, dt, per_channel=True)


def case_add_per_channel(rng: np.random.Generator, dt: object, sub: bool = False) -> Graph:
    """ADD (SUB) of two RESCALEd operands, b broadcast over rows, a per-channel output RESCALE."""
    g = Graph(rng)
    shape = [1, 4, 4, 6]
    xa, xb = g.inp(shape, dt), g.inp([1, 1, 4, 6], dt)
    left = 20 if dt == I8 else 15
    sa, sb = (float(rng.uniform(0.01, 0.1)) for _ in range(2))
    mx = 2 * max(sa, sb)
    azp = int(rng.integers(-20, 20)) if dt == I8 else 0
    bzp = int(rng.integers(-20, 20)) if dt == I8 else 0
    ma, ra = scale(rng, sa / mx * (1 << left))
    mb, rb = scale(rng, sb / mx * (1 << left))
    a32 = g.rescale(xa, shape, dt, I32, [ma], [ra], azp, 0)
    b32 = g.rescale(xb, [1, 1, 4, 6], dt, I32, [mb], [rb], bzp, 0)
    t = g.op(ts.Op.SUB if sub else ts.Op.ADD, [a32, b32], shape, I32,
             _attr("SubAttribute" if sub else "AddAttribute"))
    my, ry = zip(*[scale(rng, mx / ((1 << left) * float(rng.uniform(0.01, 0.1))))
                   for _ in range(6)], strict=True)
    g.rescale(t, shape, I32, dt, list(my), list(ry), 0, 2 if dt == I8 else 0, output=True)
    return g


def case_sub_per_channel(rng: np.random.Generator, dt: object) -> Graph:
    return case_add_per_channel(rng, dt, sub=True)


def case_mul_per_channel(rng: np.random.Generator, dt: object) -> Graph:
    """MUL of zero-point RESCALEs, b broadcast along the channels, a per-channel RESCALE."""
    g = Graph(rng)
    xa, xb = g.inp([2, 3, 4], dt), g.inp([2, 3, 1], dt)
    azp = int(rng.integers(-20, 20)) if dt == I8 else 0
    a32 = g.rescale(xa, [2, 3, 4], dt, I32, [1 << 30], [30], azp, 0)
    b32 = g.rescale(xb, [2, 3, 1], dt, I32, [1 << 30], [30], 0, 0)
    p = g.op(ts.Op.MUL, [a32, b32, g.const(np.array([0], np.int8), I8)], [2, 3, 4], I32,
             _attr("MulAttribute"))
    m, s = zip(*[scale(rng, float(rng.uniform(1e-4, 1e-2)) if dt == I8 else
                       1.5e-5 * float(rng.uniform(0.5, 2.0))) for _ in range(4)], strict=True)
    g.rescale(p, [2, 3, 4], I32, dt, list(m), list(s), 0, -4 if dt == I8 else 0, output=True)
    return g


def case_table_per_channel(rng: np.random.Generator, dt: object) -> Graph:
    """int16: TABLE (513 entries, int32) + a per-channel RESCALE; int8: TABLE + a per-channel
    int8 RESCALE."""
    g = Graph(rng)
    x = g.inp([2, 5, 4], dt)
    if dt == I8:
        table = rng.integers(-128, 128, size=256).astype(np.int8)
        t = g.op(ts.Op.TABLE, [x, g.const(table, I8)], [2, 5, 4], I8, _attr("TableAttribute"))
        m, s = _channel_scales(rng, 4, 0.8, dt)
        g.rescale(t, [2, 5, 4], I8, I8, m, s, -3, 5, output=True)
        return g
    base = np.cumsum(rng.integers(-200, 300, size=513))
    table = np.clip(base - base.mean(), -32768, 32767).astype(np.int16)
    t = g.op(ts.Op.TABLE, [x, g.const(table, I16)], [2, 5, 4], I32, _attr("TableAttribute"))
    m, s = _channel_scales(rng, 4, 2.0 ** -7, dt)
    g.rescale(t, [2, 5, 4], I32, I16, m, s, 0, 0, output=True, double=False, scale32=False)
    return g


def case_rescale_unsigned_per_channel(rng: np.random.Generator, dt: object) -> Graph:
    """Per-channel RESCALE to an unsigned output, then per-channel from that unsigned input
    (uint8, or uint16 with TOSA's zero points 0 / 32768)."""
    g = Graph(rng)
    x = g.inp([2, 3, 5], dt)
    m, s = _channel_scales(rng, 5, float(rng.uniform(0.3, 1.5)), I8)
    zp_u = 128 + int(rng.integers(-5, 5)) if dt == I8 else 32768
    u = g.rescale(x, [2, 3, 5], dt, dt, m, s, 0, zp_u, out_uns=True)
    m2, s2 = _channel_scales(rng, 5, float(rng.uniform(0.3, 1.5)), I8)
    zp_in = int(rng.integers(100, 200)) if dt == I8 else 32768
    zp_out = int(rng.integers(-5, 5)) if dt == I8 else 0
    g.rescale(u, [2, 3, 5], dt, dt, m2, s2, zp_in, zp_out, in_uns=True, output=True)
    return g


def case_tile_reverse(rng: np.random.Generator, dt: object) -> Graph:
    """TILE (multiples from CONST_SHAPE, one above Concat's 8 inputs) and REVERSE."""
    g = Graph(rng)
    x = g.inp([2, 3, 1], dt)
    multiples = g.ser.addConst([3], ts.DType.SHAPE, np.array([2, 1, 10], np.int64)).name
    t = g.op(ts.Op.TILE, [x, multiples], [4, 3, 10], dt, _attr("TileAttribute"))
    r = g.op(ts.Op.REVERSE, [t], [4, 3, 10], dt, _attr("ReverseAttribute", 1))
    g.op(ts.Op.REVERSE, [r], [4, 3, 10], dt, _attr("ReverseAttribute", 0), output=True)
    return g


CASES: dict[str, Callable[[np.random.Generator, object], Graph]] = {
    "rescale": case_rescale, "rescale_every_shift": case_rescale_every_shift,
    "rescale_unsigned": case_rescale_unsigned, "conv2d": case_conv2d,
    "depthwise_conv2d": case_depthwise, "matmul": case_matmul, "add": case_add, "sub": case_sub,
    "mul": case_mul, "table": case_table, "clamp": case_clamp, "conv_clamp": case_conv_clamp,
    "avg_pool2d": case_avg_pool, "avg_pool2d_padded": case_avg_pool_padded,
    "max_pool2d": case_max_pool, "reduce_sum": case_reduce_sum, "layout": case_layout,
    "pad_slice": case_pad_slice, "matmul_per_channel": case_matmul_per_channel,
    "add_per_channel": case_add_per_channel, "sub_per_channel": case_sub_per_channel,
    "mul_per_channel": case_mul_per_channel, "table_per_channel": case_table_per_channel,
    "rescale_unsigned_per_channel": case_rescale_unsigned_per_channel,
    "tile_reverse": case_tile_reverse,
}


_RUNNER = """
import sys, numpy as np, tosa_reference_model as rm
data = np.load(sys.argv[1])
feeds = [data[f"in{i}"] for i in range(int(data["n"]))]
outs, status = rm.run(open(sys.argv[2], "rb").read(), feeds)
if status != rm.GraphStatus.TOSA_VALID:
    sys.exit(f"reference model status {status}")
np.savez(sys.argv[3], *outs)
"""


def reference(buf: bytes, feeds: list[np.ndarray], tmp: str) -> list[np.ndarray]:
    """Outputs of the TOSA reference model, run in a child process: it aborts its process on
    a graph that breaks a REQUIRE, which must fail the test, not the test run."""
    import os
    import subprocess
    import sys

    graph, inputs, outputs = (os.path.join(tmp, n) for n in ("g.tosa", "in.npz", "out.npz"))
    with open(graph, "wb") as f:
        f.write(buf)
    np.savez(inputs, n=len(feeds), **{f"in{i}": v for i, v in enumerate(feeds)})
    done = subprocess.run([sys.executable, "-c", _RUNNER, inputs, graph, outputs],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        why = [ln for ln in done.stderr.splitlines()
               if any(k in ln for k in ("ERROR", "REQUIRE", "fail", "status"))][:5]
        raise RuntimeError("TOSA reference model failed: " + " | ".join(why))
    data = np.load(outputs)
    return [data[f"arr_{i}"] for i in range(len(data.files))]
