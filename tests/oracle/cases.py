"""Seeded single-op cases, each built as a ``.tflite`` model and its ONNX QDQ twin.

Every generator takes a ``numpy.random.Generator`` and the activation type (``int8`` on the
``tflite-int8`` target, ``int16`` on ``tflite-a16w8``) and draws the op's shapes, options,
scales, zero points, weights and inputs with a bias towards the edges that change results by
one: zero points at -128 and 127, saturating output scales, exact .5 ties (power-of-two scale
ratios), multipliers whose mantissa is just below 1 (quantized multiplier near 2^31 - 1), odd
sizes and broadcasting. Convolutions and pools use NHWC in TFLite and NCHW in ONNX.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
from qdq_builder import Case, QDQGraph, Quant
from tflite_builder import ACTIVATIONS, PADDING, TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


# -- drawing parameters ----------------------------------------------------------------------
def _limits(dtype: str) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _scale(rng: np.random.Generator, lo: float = 1e-3, hi: float = 0.5) -> float:
    """A log-uniform scale; one draw in six has a mantissa just below 1 (multiplier ≈ 2^31)."""
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if rng.random() < 1 / 6:
        s = math.ldexp(1.0 - float(rng.integers(1, 64)) * 2.0 ** -24, math.frexp(s)[1])
    return float(np.float32(s))


def _zero_point(rng: np.random.Generator, dtype: str) -> int:
    """Zero point: 0 for int16 (TFLite's 16x8 is symmetric); edges often for int8."""
    if dtype == "int16":
        return 0
    r = rng.random()
    if r < 0.2:
        return -128
    if r < 0.35:
        return 127
    return int(rng.integers(-128, 128))


def _quant(rng: np.random.Generator, dtype: str, lo: float = 1e-3, hi: float = 0.5) -> Quant:
    return Quant(_scale(rng, lo, hi), _zero_point(rng, dtype), dtype)


def _related(rng: np.random.Generator, base: float, dtype: str) -> Quant:
    """Output parameters related to ``base``: equal, a power of two off (ties), or random."""
    r = rng.random()
    if r < 0.3:
        s = base * 2.0 ** int(rng.integers(-3, 4))
    elif r < 0.45:
        s = base * (1.0 - float(rng.integers(1, 16)) * 2.0 ** -24)
    else:
        s = base * float(np.exp(rng.uniform(-2.0, 2.0)))
    return Quant(s, _zero_point(rng, dtype), dtype)


def _data(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Integer activations over the whole range, with the extremes planted."""
    lo, hi = _limits(dtype)
    x = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
    flat = x.reshape(-1)
    if flat.size >= 4:
        k = rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)
        flat[k] = rng.choice([lo, hi, lo + 1, hi - 1, 0], size=k.size)
    return x.astype(dtype)


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    w = rng.integers(-127, 128, size=shape, dtype=np.int64)
    if rng.random() < 0.3:
        w.reshape(-1)[rng.choice(w.size, size=max(1, w.size // 4))] = 127
    return w.astype(np.int8)


def _linear_output(rng: np.random.Generator, act: str, macs: int, unit: float) -> Quant:
    """Output parameters of a conv/FC: the accumulator's spread fills the range (2^±1.5),
    so most outputs are rounded and some saturate."""
    spread = 80.0 * (256.0 if act == "int16" else 1.0) * 70.0 * math.sqrt(macs) * unit
    return Quant(spread / (_limits(act)[1] * float(np.exp2(rng.uniform(-2.5, 1.0)))),
                 _zero_point(rng, act), act)


def _bias(rng: np.random.Generator, act: str, macs: int, channels: int) -> np.ndarray:
    """Biases of the size of the accumulator's spread."""
    spread = 80.0 * (256.0 if act == "int16" else 1.0) * 70.0 * math.sqrt(macs)
    return np.round(rng.normal(0.0, spread, size=channels)).astype(np.int64)


def _bias_dtype(act: str) -> str:
    return "int64" if act == "int16" else "int32"


def _activation(rng: np.random.Generator) -> str:
    return str(rng.choice(["NONE", "NONE", "RELU", "RELU6"]))


def _onnx_activation(g: QDQGraph, x: str, act: str) -> str:
    if act == "RELU":
        return g.node("Relu", [x], f"{x}_relu")
    if act == "RELU6":
        lo = g.value(f"{x}_min", np.array(0.0, np.float32))
        hi = g.value(f"{x}_max", np.array(6.0, np.float32))
        return g.node("Clip", [x, lo, hi], f"{x}_relu6")
    return x


def _same_pads(size: int, k: int, stride: int, dilation: int, padding: str
               ) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TFLite's SAME/VALID padding."""
    eff = (k - 1) * dilation + 1
    if padding == "VALID":
        return (size - eff) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def _nchw_input(g: QDQGraph, x: np.ndarray, q: Quant) -> tuple[str, dict[str, np.ndarray]]:
    xt = x.transpose(NHWC_TO_NCHW)
    name = g.input("x", xt.shape, q)
    return name, {"x": q.dequantize(xt)}


def _to_nhwc(y: np.ndarray) -> np.ndarray:
    return y.transpose(NCHW_TO_NHWC)


# -- linear ops ------------------------------------------------------------------------------
def _conv_like(rng: np.random.Generator, act: str, depthwise: bool,
               patches: bool = False) -> Case:
    lo_dim, hi_dim = 1, 9
    k = int(rng.choice([1, 2, 3, 3, 5]))
    stride = int(rng.integers(1, 4))
    dilation = int(rng.choice([1, 1, 2]))
    padding = str(rng.choice(["SAME", "VALID"]))
    eff = (k - 1) * dilation + 1
    h = int(rng.integers(max(lo_dim, eff if padding == "VALID" else 1), max(hi_dim, eff) + 1))
    w = int(rng.integers(max(lo_dim, eff if padding == "VALID" else 1), max(hi_dim, eff) + 1))
    if patches:   # a ViT's patch embedding (windows = stride) or an STFT's (two strides), at
        # strides beyond the targets' max_stride 8
        stride = int(rng.integers(9, 13))
        k = stride * int(rng.integers(1, 3))
        dilation, padding = 1, "VALID"
        h, w = (stride * int(v) for v in rng.integers(k // stride, k // stride + 2, 2))
    cin = int(rng.integers(1, 6))
    mult = int(rng.integers(1, 3)) if depthwise else 1
    cout = cin * mult if depthwise else int(rng.integers(1, 7))
    fused = _activation(rng)
    xq = _quant(rng, act)
    ws = np.array([_scale(rng, 1e-3, 0.05) for _ in range(cout)], np.float32)
    if rng.random() < 0.25:
        ws[:] = ws[0]
    macs = k * k * (1 if depthwise else cin)
    bias_unit = (np.float32(xq.scale) * ws).astype(np.float32)
    yq = _linear_output(rng, act, macs, float(np.median(bias_unit)))
    oh, pt, pb = _same_pads(h, k, stride, dilation, padding)
    ow, pl, pr = _same_pads(w, k, stride, dilation, padding)
    x = _data(rng, (1, h, w, cin), act)
    bias = _bias(rng, act, macs, cout)

    t = TFLiteGraph()
    tx = t.tensor("x", x.shape, act, scale=xq.scale, zero_point=xq.zero_point)
    if depthwise:
        wt = _weights(rng, (1, k, k, cout))
        tw = t.tensor("w", wt.shape, "int8", scale=ws, zero_point=0, axis=3, data=wt)
        w_onnx = wt[0].transpose(2, 0, 1)[:, None]
    else:
        wt = _weights(rng, (cout, k, k, cin))
        tw = t.tensor("w", wt.shape, "int8", scale=ws, zero_point=0, axis=0, data=wt)
        w_onnx = wt.transpose(0, 3, 1, 2)
    tb = t.tensor("b", (cout,), _bias_dtype(act), scale=bias_unit, zero_point=0, data=bias)
    ty = t.tensor("y", (1, oh, ow, cout), act, scale=yq.scale, zero_point=yq.zero_point)
    common = dict(Padding=PADDING[padding], StrideW=stride, StrideH=stride,
                  FusedActivationFunction=ACTIVATIONS[fused], DilationWFactor=dilation,
                  DilationHFactor=dilation)
    if depthwise:
        t.op("DEPTHWISE_CONV_2D", [tx, tw, tb], [ty],
             ("DepthwiseConv2DOptions", {**common, "DepthMultiplier": mult}))
    else:
        t.op("CONV_2D", [tx, tw, tb], [ty], ("Conv2DOptions", common))

    g = QDQGraph()
    xn, feeds = _nchw_input(g, x, xq)
    wn = g.const("w", w_onnx, ws, "int8", axis=0)
    bn = g.const("b", bias, bias_unit, "int32", axis=0)
    y = g.node("Conv", [xn, wn, bn], "conv", strides=[stride, stride],
               dilations=[dilation, dilation], pads=[pt, pl, pb, pr],
               group=cin if depthwise else 1, kernel_shape=[k, k])
    g.output(_onnx_activation(g, y, fused), yq)
    op = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    name = (f"{op} {h}x{w}x{cin}->{cout} k{k} s{stride} d{dilation} {padding} {fused} "
            f"x_zp {xq.zero_point} y_zp {yq.zero_point}")
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x], feeds, yq, _to_nhwc)


def transpose_conv(rng: np.random.Generator, act: str) -> Case:
    """TRANSPOSE_CONV (what ortnpu runs as zero insertion, a crop where the kernel is narrower
    than the stride, and a convolution with flipped weights,
    :class:`ortnpu.passes.ConvTransposeAsConv`) against LiteRT's scatter kernel."""
    stride = int(rng.integers(1, 4))
    k = int(rng.integers(1, 5))   # below the stride: VALID crops, SAME has bias-only rows
    padding = str(rng.choice(["SAME", "VALID"]))
    h, w = (int(v) for v in rng.integers(1, 7, 2))
    cin, cout = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    xq = _quant(rng, act)
    ws = np.array([_scale(rng, 1e-3, 0.05) for _ in range(cout)], np.float32)
    if rng.random() < 0.25:
        ws[:] = ws[0]
    macs = (-(-k // stride)) ** 2 * cin   # taps reaching one output
    bias_unit = (np.float32(xq.scale) * ws).astype(np.float32)
    yq = _linear_output(rng, act, macs, float(np.median(bias_unit)))
    extra = 0   # ONNX output_padding: SAME with k < stride ends in rows only the bias reaches
    if padding == "SAME":
        oh, ow, total = h * stride, w * stride, max(k - stride, 0)
        pt, pb = total // 2, total - total // 2
        extra = max(stride - k, 0)
    else:
        oh, ow, pt, pb = (h - 1) * stride + k, (w - 1) * stride + k, 0, 0
    x = _data(rng, (1, h, w, cin), act)
    bias = _bias(rng, act, macs, cout)
    wt = _weights(rng, (cout, k, k, cin))

    t = TFLiteGraph()
    ts = t.tensor("shape", (4,), "int32", data=np.array([1, oh, ow, cout], np.int32))
    tw = t.tensor("w", wt.shape, "int8", scale=ws, zero_point=0, axis=0, data=wt)
    tx = t.tensor("x", x.shape, act, scale=xq.scale, zero_point=xq.zero_point)
    tb = t.tensor("b", (cout,), _bias_dtype(act), scale=bias_unit, zero_point=0, data=bias)
    ty = t.tensor("y", (1, oh, ow, cout), act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("TRANSPOSE_CONV", [ts, tw, tx, tb], [ty],
         ("TransposeConvOptions", dict(Padding=PADDING[padding], StrideW=stride,
                                       StrideH=stride)))

    g = QDQGraph()
    xn, feeds = _nchw_input(g, x, xq)
    wn = g.const("w", wt.transpose(3, 0, 1, 2), ws, "int8", axis=1)   # [I, O, kh, kw]
    bn = g.const("b", bias, bias_unit, "int32", axis=0)
    y = g.node("ConvTranspose", [xn, wn, bn], "deconv", strides=[stride, stride],
               pads=[pt, pt, pb, pb], kernel_shape=[k, k], output_padding=[extra, extra])
    g.output(y, yq)
    name = (f"TRANSPOSE_CONV {h}x{w}x{cin}->{cout} k{k} s{stride} {padding} "
            f"x_zp {xq.zero_point} y_zp {yq.zero_point}")
    return Case(name, "TRANSPOSE_CONV", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                feeds, yq, _to_nhwc)


def conv_2d(rng: np.random.Generator, act: str) -> Case:
    return _conv_like(rng, act, depthwise=False)


def conv_2d_patches(rng: np.random.Generator, act: str) -> Case:
    """CONV_2D whose kernel is one or two strides (stride 9..12): ortnpu runs it as
    space-to-depth and a 1x1 or 2x2 convolution (:class:`ortnpu.passes.PatchifyConv`)."""
    return _conv_like(rng, act, False, patches=True)


def depthwise_conv_2d(rng: np.random.Generator, act: str) -> Case:
    return _conv_like(rng, act, depthwise=True)


def fully_connected(rng: np.random.Generator, act: str) -> Case:
    batch, k, n = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
    per_channel = bool(rng.random() < 0.5)
    fused = _activation(rng)
    xq = _quant(rng, act)
    ws = (np.array([_scale(rng, 1e-3, 0.05) for _ in range(n)], np.float32) if per_channel
          else np.array([_scale(rng, 1e-3, 0.05)], np.float32))
    unit = (np.float32(xq.scale) * ws).astype(np.float32)
    yq = _linear_output(rng, act, k, float(np.median(unit)))
    x = _data(rng, (batch, k), act)
    wt = _weights(rng, (n, k))
    bias = _bias(rng, act, k, n)
    unit_n = np.broadcast_to(unit, (n,))

    t = TFLiteGraph()
    tx = t.tensor("x", x.shape, act, scale=xq.scale, zero_point=xq.zero_point)
    tw = t.tensor("w", wt.shape, "int8", scale=ws, zero_point=0, axis=0, data=wt)
    tb = t.tensor("b", (n,), _bias_dtype(act), scale=unit, zero_point=0, data=bias)
    ty = t.tensor("y", (batch, n), act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("FULLY_CONNECTED", [tx, tw, tb], [ty],
         ("FullyConnectedOptions", {"FusedActivationFunction": ACTIVATIONS[fused]}))

    g = QDQGraph()
    xn = g.input("x", x.shape, xq)
    wn = g.const("w", wt, ws if per_channel else ws[0], "int8", axis=0 if per_channel else None)
    bn = g.const("b", bias, unit_n if per_channel else unit[0], "int32",
                 axis=0 if per_channel else None)
    y = g.node("Gemm", [xn, wn, bn], "fc", transB=1)
    g.output(_onnx_activation(g, y, fused), yq)
    name = (f"FULLY_CONNECTED {batch}x{k}->{n} {'per-channel' if per_channel else 'per-tensor'} "
            f"{fused} x_zp {xq.zero_point} y_zp {yq.zero_point}")
    return Case(name, "FULLY_CONNECTED", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq,
                details={"x": x, "w": wt, "bias": bias, "xq": xq, "w_scales": ws, "yq": yq,
                         "fused": fused})


# -- elementwise ops ---------------------------------------------------------------------------
def _broadcast_shapes(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    full = tuple(int(d) for d in rng.integers(1, 6, size=4))
    if rng.random() < 0.5:
        return full, full
    a = tuple(d if rng.random() < 0.6 else 1 for d in full)
    b = tuple(d if rng.random() < 0.6 or a[i] == 1 else 1 for i, d in enumerate(full))
    return a, b


def _binary(rng: np.random.Generator, act: str, op: str) -> Case:
    sa, sb = _broadcast_shapes(rng)
    shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    fused = _activation(rng)
    qa = _quant(rng, act)
    qb = _related(rng, qa.scale, act) if rng.random() < 0.5 else _quant(rng, act)
    if op == "ADD":
        qy = _related(rng, max(qa.scale, qb.scale), act)
    else:
        qy = _related(rng, qa.scale * qb.scale * _limits(act)[1] / 4, act)
    a, b = _data(rng, sa, act), _data(rng, sb, act)
    t = TFLiteGraph()
    ta = t.tensor("a", sa, act, scale=qa.scale, zero_point=qa.zero_point)
    tb = t.tensor("b", sb, act, scale=qb.scale, zero_point=qb.zero_point)
    ty = t.tensor("y", shape, act, scale=qy.scale, zero_point=qy.zero_point)
    options = {"FusedActivationFunction": ACTIVATIONS[fused]}
    if op == "ADD":   # the converter's 16x8 ADD: general scales, not the power-of-two path
        options["PotScaleInt16"] = False
    t.op(op, [ta, tb], [ty], ("AddOptions" if op == "ADD" else "MulOptions", options))
    g = QDQGraph()
    an, bn = g.input("a", sa, qa), g.input("b", sb, qb)
    y = g.node("Add" if op == "ADD" else "Mul", [an, bn], "sum")
    g.output(_onnx_activation(g, y, fused), qy)
    name = (f"{op} {sa}*{sb} {fused} zp {qa.zero_point},{qb.zero_point}->{qy.zero_point} "
            f"scales {qa.scale:.4g},{qb.scale:.4g}->{qy.scale:.4g}")
    return Case(name, op, TARGET[act], t.build([ta, tb], [ty]), g.model(), [a, b],
                {"a": qa.dequantize(a), "b": qb.dequantize(b)}, qy)


def add(rng: np.random.Generator, act: str) -> Case:
    return _binary(rng, act, "ADD")


def mul(rng: np.random.Generator, act: str) -> Case:
    return _binary(rng, act, "MUL")


def _unary(rng: np.random.Generator, act: str, op: str, onnx_op: str, xq: Quant, yq: Quant,
           shape: tuple[int, ...] | None = None, **onnx_attrs: object) -> Case:
    """An op of one activation input and no options, same layout in both formats."""
    if shape is None:
        shape = tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(1, 5))))
    x = _data(rng, shape, act)
    if act == "int8" and x.size >= 2:   # every input value once when the tensor is large
        flat = x.reshape(-1)
        n = min(flat.size, 256)
        flat[:n] = np.arange(-128, -128 + n)[rng.permutation(n)]
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op(op, [tx], [ty])
    g = QDQGraph()
    xn = g.input("x", shape, xq)
    if onnx_op == "Clip":
        lo = g.value("lo", np.array(onnx_attrs.pop("lo"), np.float32))
        hi = g.value("hi", np.array(onnx_attrs.pop("hi"), np.float32))
        y = g.node("Clip", [xn, lo, hi], "act")
    else:
        y = g.node(onnx_op, [xn], "act", **onnx_attrs)
    g.output(y, yq)
    name = (f"{op} {shape} x {xq.scale:.5g}/{xq.zero_point} -> y {yq.scale:.5g}/"
            f"{yq.zero_point}")
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


def logistic(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act, 1e-3, 0.2)
    yq = Quant(1.0 / 256, -128, act) if act == "int8" else Quant(1.0 / 32768, 0, act)
    return _unary(rng, act, "LOGISTIC", "Sigmoid", xq, yq)


def tanh(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act, 1e-3, 0.2)
    yq = Quant(1.0 / 128, 0, act) if act == "int8" else Quant(1.0 / 32768, 0, act)
    return _unary(rng, act, "TANH", "Tanh", xq, yq)


def hard_swish(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act, 5e-3, 0.2)
    yq = _related(rng, xq.scale, act)
    return _unary(rng, act, "HARD_SWISH", "HardSwish", xq, yq)


def relu(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act)
    return _unary(rng, act, "RELU", "Relu", xq, _related(rng, xq.scale, act))


def relu6(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act, 5e-3, 0.2)
    yq = _related(rng, xq.scale, act)
    if rng.random() < 0.3:   # 6 / s_out on a float32 tie: roundf and a double round differ
        top = int(rng.integers(20, 127 if act == "int8" else 30000))
        yq = Quant(float(np.float32(6.0 / (top + 0.5))), yq.zero_point, act)
    return _unary(rng, act, "RELU6", "Clip", xq, yq, lo=0.0, hi=6.0)


# -- pools and layout ------------------------------------------------------------------------
def _pool(rng: np.random.Generator, act: str, op: str) -> Case:
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    padding = str(rng.choice(["SAME", "VALID"]))
    h, w = int(rng.integers(kh, 10)), int(rng.integers(kw, 10))
    c = int(rng.integers(1, 5))
    xq = _quant(rng, act)
    oh, pt, pb = _same_pads(h, kh, sh, 1, padding)
    ow, pl, pr = _same_pads(w, kw, sw, 1, padding)
    x = _data(rng, (1, h, w, c), act)
    t = TFLiteGraph()
    tx = t.tensor("x", x.shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", (1, oh, ow, c), act, scale=xq.scale, zero_point=xq.zero_point)
    t.op(op, [tx], [ty], ("Pool2DOptions", dict(
        Padding=PADDING[padding], StrideW=sw, StrideH=sh, FilterWidth=kw, FilterHeight=kh,
        FusedActivationFunction=ACTIVATIONS["NONE"])))
    g = QDQGraph()
    xn, feeds = _nchw_input(g, x, xq)
    y = g.node("AveragePool" if op == "AVERAGE_POOL_2D" else "MaxPool", [xn], "pool",
               kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr])
    g.output(y, xq)
    name = f"{op} {h}x{w}x{c} k{kh}x{kw} s{sh}x{sw} {padding} zp {xq.zero_point}"
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x], feeds, xq,
                _to_nhwc)


def average_pool_2d(rng: np.random.Generator, act: str) -> Case:
    return _pool(rng, act, "AVERAGE_POOL_2D")


def max_pool_2d(rng: np.random.Generator, act: str) -> Case:
    return _pool(rng, act, "MAX_POOL_2D")


def mean(rng: np.random.Generator, act: str) -> Case:
    """MEAN over H and W with keep_dims (ONNX GlobalAveragePool); same parameters out."""
    h, w, c = int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 5))
    xq = _quant(rng, act)
    x = _data(rng, (1, h, w, c), act)
    t = TFLiteGraph()
    tx = t.tensor("x", x.shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ta = t.tensor("axes", (2,), "int32", data=np.array([1, 2]))
    ty = t.tensor("y", (1, 1, 1, c), act, scale=xq.scale, zero_point=xq.zero_point)
    t.op("MEAN", [tx, ta], [ty], ("ReducerOptions", {"KeepDims": True}))
    g = QDQGraph()
    xn, feeds = _nchw_input(g, x, xq)
    g.output(g.node("GlobalAveragePool", [xn], "gap"), xq)
    name = f"MEAN {h}x{w}x{c} zp {xq.zero_point}"
    return Case(name, "MEAN", TARGET[act], t.build([tx], [ty]), g.model(), [x], feeds, xq,
                _to_nhwc)


def concatenation(rng: np.random.Generator, act: str) -> Case:
    rank = int(rng.integers(1, 5))
    axis = int(rng.integers(0, rank))
    base = [int(d) for d in rng.integers(1, 5, size=rank)]
    count = int(rng.integers(2, 5))
    shapes = []
    for _ in range(count):
        s = list(base)
        s[axis] = int(rng.integers(1, 5))
        shapes.append(tuple(s))
    out_shape = list(base)
    out_shape[axis] = sum(s[axis] for s in shapes)
    q = _quant(rng, act)
    xs = [_data(rng, s, act) for s in shapes]
    t = TFLiteGraph()
    tins = [t.tensor(f"x{i}", s, act, scale=q.scale, zero_point=q.zero_point)
            for i, s in enumerate(shapes)]
    ty = t.tensor("y", out_shape, act, scale=q.scale, zero_point=q.zero_point)
    t.op("CONCATENATION", tins, [ty], ("ConcatenationOptions", {"Axis": axis}))
    g = QDQGraph()
    names = [g.input(f"x{i}", s, q) for i, s in enumerate(shapes)]
    g.output(g.node("Concat", names, "cat", axis=axis), q)
    name = f"CONCATENATION {shapes} axis {axis}"
    return Case(name, "CONCATENATION", TARGET[act], t.build(tins, [ty]), g.model(), xs,
                {f"x{i}": q.dequantize(x) for i, x in enumerate(xs)}, q)


def quantize(rng: np.random.Generator, act: str) -> Case:
    """QUANTIZE (requantize) of one input into a CONCATENATION's parameters.

    ortnpu expresses a Concat input on another scale as a ``Requantize``; the TFLite converter
    writes the same graph as QUANTIZE → CONCATENATION (int8 concatenation needs one scale).
    """
    rank = int(rng.integers(1, 5))
    s1 = tuple(int(d) for d in rng.integers(1, 6, size=rank))
    s2 = (*s1[:-1], int(rng.integers(1, 4)))
    q1 = _quant(rng, act)
    qy = _related(rng, q1.scale, act)
    x1, x2 = _data(rng, s1, act), _data(rng, s2, act)
    out_shape = (*s1[:-1], s1[-1] + s2[-1])
    t = TFLiteGraph()
    t1 = t.tensor("x1", s1, act, scale=q1.scale, zero_point=q1.zero_point)
    t2 = t.tensor("x2", s2, act, scale=qy.scale, zero_point=qy.zero_point)
    tq = t.tensor("x1_requantized", s1, act, scale=qy.scale, zero_point=qy.zero_point)
    ty = t.tensor("y", out_shape, act, scale=qy.scale, zero_point=qy.zero_point)
    t.op("QUANTIZE", [t1], [tq])
    t.op("CONCATENATION", [tq, t2], [ty], ("ConcatenationOptions", {"Axis": rank - 1}))
    g = QDQGraph()
    n1, n2 = g.input("x1", s1, q1), g.input("x2", s2, qy)
    g.output(g.node("Concat", [n1, n2], "cat", axis=rank - 1), qy)
    name = (f"QUANTIZE {s1} {q1.scale:.5g}/{q1.zero_point} -> {qy.scale:.5g}/{qy.zero_point} "
            "(into a CONCATENATION)")
    return Case(name, "QUANTIZE", TARGET[act], t.build([t1, t2], [ty]), g.model(), [x1, x2],
                {"x1": q1.dequantize(x1), "x2": qy.dequantize(x2)}, qy)


def _layout(rng: np.random.Generator, act: str, op: str, shape: tuple[int, ...],
            out_shape: tuple[int, ...], extra: np.ndarray, onnx_op: str,
            onnx_extra: np.ndarray | None,
            options: tuple[str, dict[str, object]] | None = None, **attrs: object) -> Case:
    q = _quant(rng, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=q.scale, zero_point=q.zero_point)
    te = t.tensor("param", extra.shape, "int32", data=extra)
    ty = t.tensor("y", out_shape, act, scale=q.scale, zero_point=q.zero_point)
    t.op(op, [tx, te], [ty], options)
    g = QDQGraph()
    ins = [g.input("x", shape, q)]
    if onnx_extra is not None:
        ins.append(g.value("param", onnx_extra))
    g.output(g.node(onnx_op, ins, "moved", **attrs), q)
    name = f"{op} {shape} -> {tuple(out_shape)} zp {q.zero_point}"
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": q.dequantize(x)}, q)


def reshape(rng: np.random.Generator, act: str) -> Case:
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 5))))
    n = math.prod(shape)
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    first = int(rng.choice(divisors))
    out = (first, n // first)
    return _layout(rng, act, "RESHAPE", shape, out, np.array(out, np.int32), "Reshape",
                   np.array(out, np.int64))


def transpose(rng: np.random.Generator, act: str) -> Case:
    rank = int(rng.integers(2, 5))
    shape = tuple(int(d) for d in rng.integers(1, 6, size=rank))
    perm = [int(p) for p in rng.permutation(rank)]
    out = tuple(shape[p] for p in perm)
    return _layout(rng, act, "TRANSPOSE", shape, out, np.array(perm, np.int32), "Transpose",
                   None, perm=perm)


def pad(rng: np.random.Generator, act: str) -> Case:
    rank = int(rng.integers(1, 5))
    shape = tuple(int(d) for d in rng.integers(1, 5, size=rank))
    pads = rng.integers(0, 3, size=(rank, 2))
    out = tuple(int(d + p.sum()) for d, p in zip(shape, pads, strict=True))
    return _layout(rng, act, "PAD", shape, out, pads.astype(np.int32), "Pad",
                   np.concatenate([pads[:, 0], pads[:, 1]]).astype(np.int64))


def mirror_pad(rng: np.random.Generator, act: str) -> Case:
    """MIRROR_PAD REFLECT (an STFT's or an image-to-image network's padding): ortnpu runs it
    as slices and a Concat (:class:`ortnpu.passes.pad_modes.PadModesAsSlices`)."""
    rank = int(rng.integers(1, 5))
    shape = tuple(int(d) for d in rng.integers(2, 6, size=rank))
    pads = np.array([[int(rng.integers(0, d)), int(rng.integers(0, d))] for d in shape])
    out = tuple(int(d + p.sum()) for d, p in zip(shape, pads, strict=True))
    return _layout(rng, act, "MIRROR_PAD", shape, out, pads.astype(np.int32), "Pad",
                   np.concatenate([pads[:, 0], pads[:, 1]]).astype(np.int64),
                   ("MirrorPadOptions", {"Mode": 0}), mode="reflect")


#: TFLite op -> case generator; each is checked on int8 and, where listed, on int16 (16x8).
GENERATORS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "TRANSPOSE_CONV": transpose_conv,
    "CONV_2D_PATCHES": conv_2d_patches,
    "FULLY_CONNECTED": fully_connected,
    "ADD": add,
    "MUL": mul,
    "AVERAGE_POOL_2D": average_pool_2d,
    "MAX_POOL_2D": max_pool_2d,
    "MEAN": mean,
    "CONCATENATION": concatenation,
    "RESHAPE": reshape,
    "TRANSPOSE": transpose,
    "PAD": pad,
    "MIRROR_PAD": mirror_pad,
    "QUANTIZE": quantize,
    "LOGISTIC": logistic,
    "TANH": tanh,
    "HARD_SWISH": hard_swish,
    "RELU": relu,
    "RELU6": relu6,
}


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` on activation type ``act`` drawn from ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, zlib.crc32(op.encode()), 16 if act == "int16" else 8])
    return GENERATORS[op](rng, act)
