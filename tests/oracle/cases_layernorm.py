"""Oracle cases of the ops a LayerNorm decomposes into, as TFLite runs them: MEAN over the
last (channel) axis with keep_dims (ONNX ReduceMean(axes=[-1])), MUL of a tensor by itself
(ONNX Pow(x, 2)), RSQRT (ONNX Pow(x, -0.5)), SQRT (ONNX Sqrt) and SQUARED_DIFFERENCE (ONNX
Pow(Sub(a, b), 2)), each with output parameters of its own. Seeded, biased towards the edges
(zero points at the ends, odd and long rows, output scales a power of two or a hair off)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cases import _data, _quant, _related
from qdq_builder import Case, QDQGraph, Quant
from tflite_builder import TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}


def mean_last_axis(rng: np.random.Generator, act: str) -> Case:
    """MEAN over the last axis, keep_dims, output parameters of its own."""
    lead = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(0, 3))))
    n = int(rng.choice([1, 2, 3, 7, 16, 33, 64, 127, 192, 384, 1000]))
    shape = (*lead, n)
    xq = _quant(rng, act)
    yq = _related(rng, xq.scale, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ta = t.tensor("axes", (1,), "int32", data=np.array([len(shape) - 1]))
    ty = t.tensor("y", (*lead, 1), act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("MEAN", [tx, ta], [ty], ("ReducerOptions", {"KeepDims": True}))
    g = QDQGraph()
    axes = g.value("axes", np.array([-1], np.int64))
    g.output(g.node("ReduceMean", [g.input("x", shape, xq), axes], "mean", keepdims=1), yq)
    name = (f"MEAN last axis {shape} x {xq.scale:.5g}/{xq.zero_point} -> "
            f"{yq.scale:.5g}/{yq.zero_point}")
    return Case(name, "MEAN_LAST_AXIS", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


def square(rng: np.random.Generator, act: str) -> Case:
    """MUL of a tensor by itself (ONNX Pow(x, 2), the variance's square), fused activation
    none, output parameters of its own (often saturating)."""
    shape = tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(1, 5))))
    xq = _quant(rng, act)
    yq = _related(rng, xq.scale * xq.scale * 128, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("MUL", [tx, tx], [ty], ("MulOptions", {"FusedActivationFunction": 0}))
    g = QDQGraph()
    two = g.value("two", np.array(2.0, np.float32))
    g.output(g.node("Pow", [g.input("x", shape, xq), two], "square"), yq)
    name = (f"MUL(x, x) {shape} x {xq.scale:.5g}/{xq.zero_point} -> "
            f"{yq.scale:.5g}/{yq.zero_point}")
    return Case(name, "SQUARE", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


def _non_negative(rng: np.random.Generator, shape: tuple[int, ...], xq: Quant) -> np.ndarray:
    """Inputs at or above the zero point (TFLite's RSQRT and SQRT refuse the others), every
    value of that range once when the tensor is large enough, 0 and the top planted."""
    lo, hi = xq.zero_point, int(np.iinfo(xq.dtype).max)
    x = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
    flat = x.reshape(-1)
    span = np.arange(lo, hi + 1) if hi - lo < 4096 else \
        np.unique(np.concatenate([np.arange(lo, lo + 600), rng.integers(lo, hi + 1, 600),
                                  np.arange(hi - 50, hi + 1)]))
    n = min(flat.size, span.size)
    flat[:n] = rng.permutation(span)[:n]
    flat[rng.integers(flat.size)] = lo
    flat[rng.integers(flat.size)] = hi
    return x.astype(xq.dtype)


def _elementwise_unary(rng: np.random.Generator, act: str, op: str, shape: tuple[int, ...],
                       xq: Quant, yq: Quant, onnx_op: str, exponent: float | None) -> Case:
    x = _non_negative(rng, shape, xq)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op(op, [tx], [ty])
    g = QDQGraph()
    ins = [g.input("x", shape, xq)]
    if exponent is not None:
        ins.append(g.value("exponent", np.array(exponent, np.float32)))
    g.output(g.node(onnx_op, ins, "y_float"), yq)
    name = (f"{op} {shape} x {xq.scale:.5g}/{xq.zero_point} -> "
            f"{yq.scale:.5g}/{yq.zero_point}")
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


def _shape(rng: np.random.Generator, act: str) -> tuple[int, ...]:
    size = 256 if act == "int8" else 2048
    return (1, int(rng.integers(1, 4)), size) if rng.random() < 0.7 else \
        tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(1, 5))))


def rsqrt(rng: np.random.Generator, act: str) -> Case:
    """RSQRT (ONNX Pow(x, -0.5)): int8 in TFLite's fixed point, int16 its interpolated table;
    output scales from saturating the largest outputs to leaving them room."""
    xq = _quant(rng, act, 1e-4, 4.0)
    if act == "int16":
        xq = Quant(xq.scale, 0, act)
    top = 1.0 / np.sqrt(xq.scale)                       # 1 / sqrt of one input step
    qmax = int(np.iinfo(act).max)
    yq = _related(rng, top / qmax * float(rng.choice([0.05, 0.3, 1.0, 2.0])), act)
    if act == "int16":
        yq = Quant(yq.scale, 0, act)
    return _elementwise_unary(rng, act, "RSQRT", _shape(rng, act), xq, yq, "Pow", -0.5)


def sqrt(rng: np.random.Generator, act: str) -> Case:
    """SQRT (ONNX Sqrt): the float32 kernel truncating toward zero."""
    xq = _quant(rng, act, 1e-4, 4.0)
    if act == "int16":
        xq = Quant(xq.scale, 0, act)
    qmax = int(np.iinfo(act).max)
    top = float(np.sqrt(xq.scale * max(qmax - xq.zero_point, 16)))
    yq = _related(rng, top / qmax, act)
    if act == "int16":
        yq = Quant(yq.scale, 0, act)
    return _elementwise_unary(rng, act, "SQRT", _shape(rng, act), xq, yq, "Sqrt", None)


def squared_difference(rng: np.random.Generator, act: str) -> Case:
    """SQUARED_DIFFERENCE int8 (ONNX Pow(Sub(a, b), 2), the difference not quantized): a row
    mean broadcast against its rows (a LayerNorm's) or general 4-D broadcasting, output scales
    from saturating to roomy (the output multiplier stays below 1, as the kernel requires)."""
    from cases import _broadcast_shapes

    if rng.random() < 0.5:
        lead = tuple(int(d) for d in rng.integers(1, 4, size=2))
        sa, sb = (*lead, int(rng.choice([1, 3, 7, 16, 33]))), (*lead, 1)
    else:
        sa, sb = _broadcast_shapes(rng)
    shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    qa = _quant(rng, act)
    qb = _related(rng, qa.scale, act) if rng.random() < 0.5 else _quant(rng, act)
    top = 2.0 * max(qa.scale, qb.scale) * 255
    qy = _related(rng, top * top / 4 / 255, act)
    floor = (2.0 * max(qa.scale, qb.scale)) ** 2 / (1 << 14)
    if qy.scale <= floor:
        qy = Quant(floor * 1.5, qy.zero_point, act)
    a, b = _data(rng, sa, act), _data(rng, sb, act)
    t = TFLiteGraph()
    ta = t.tensor("a", sa, act, scale=qa.scale, zero_point=qa.zero_point)
    tb = t.tensor("b", sb, act, scale=qb.scale, zero_point=qb.zero_point)
    ty = t.tensor("y", shape, act, scale=qy.scale, zero_point=qy.zero_point)
    t.op("SQUARED_DIFFERENCE", [ta, tb], [ty])
    g = QDQGraph()
    d = g.node("Sub", [g.input("a", sa, qa), g.input("b", sb, qb)], "difference")
    two = g.value("two", np.array(2.0, np.float32))
    g.output(g.node("Pow", [d, two], "square"), qy)
    name = (f"SQUARED_DIFFERENCE {sa}*{sb} zp {qa.zero_point},{qb.zero_point}->"
            f"{qy.zero_point} scales {qa.scale:.4g},{qb.scale:.4g}->{qy.scale:.4g}")
    return Case(name, "SQUARED_DIFFERENCE", TARGET[act], t.build([ta, tb], [ty]), g.model(),
                [a, b], {"a": qa.dequantize(a), "b": qb.dequantize(b)}, qy)


GENERATORS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "SQUARED_DIFFERENCE": squared_difference,
    "MEAN_LAST_AXIS": mean_last_axis,
    "SQUARE": square,
    "RSQRT": rsqrt,
    "SQRT": sqrt,
}
#: the seed index of each op: appended, never reordered, so every op keeps its cases
SEED_ORDER = ("MEAN_LAST_AXIS", "SQUARE", "RSQRT", "SQRT", "SQUARED_DIFFERENCE")


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` on ``act`` drawn from ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, 3000 + SEED_ORDER.index(op),
                                 16 if act == "int16" else 8])
    return GENERATORS[op](rng, act)
