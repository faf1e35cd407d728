"""Oracle cases of the ops issue 14 moved to the NPU: SLICE, STRIDED_SLICE, SUB, MAXIMUM,
MINIMUM, LEAKY_RELU, ELU, GELU, QUANTIZE (int8 → int8, a DequantizeLinear → QuantizeLinear
pair in ONNX), SQUEEZE and EXPAND_DIMS (ONNX Squeeze / Unsqueeze).

Kept apart from ``cases.py`` so that the seeds of its cases (drawn from the index of the op in
its table) stay as they are. Same conventions: seeded, biased towards edge values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cases import (
    _activation,
    _broadcast_shapes,
    _data,
    _onnx_activation,
    _quant,
    _related,
    _unary,
)
from qdq_builder import Case, QDQGraph
from tflite_builder import ACTIVATIONS, TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}


def _shape(rng: np.random.Generator, rank_lo: int = 1) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(rank_lo, 5))))


def slice_(rng: np.random.Generator, act: str) -> Case:
    """SLICE (begin, size) = ONNX Slice with ends = begin + size."""
    shape = _shape(rng)
    begin = [int(rng.integers(0, d)) for d in shape]
    size = [int(rng.integers(1, d - b + 1)) for d, b in zip(shape, begin, strict=True)]
    q = _quant(rng, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=q.scale, zero_point=q.zero_point)
    tb = t.tensor("begin", (len(shape),), "int32", data=np.array(begin))
    ts = t.tensor("size", (len(shape),), "int32", data=np.array(size))
    ty = t.tensor("y", size, act, scale=q.scale, zero_point=q.zero_point)
    t.op("SLICE", [tx, tb, ts], [ty])
    g = QDQGraph()
    ins = [g.input("x", shape, q), g.value("starts", np.array(begin, np.int64)),
           g.value("ends", np.array(begin, np.int64) + np.array(size, np.int64))]
    g.output(g.node("Slice", ins, "sliced"), q)
    return Case(f"SLICE {shape} begin {begin} size {size}", "SLICE", TARGET[act],
                t.build([tx], [ty]), g.model(), [x], {"x": q.dequantize(x)}, q)


def strided_slice(rng: np.random.Generator, act: str) -> Case:
    """STRIDED_SLICE with positive and negative strides (indices inside the axis)."""
    shape = _shape(rng)
    begin, end, strides, out = [], [], [], []
    for d in shape:
        step = int(rng.choice([1, 2, 3, -1, -2]))
        if step > 0:
            b = int(rng.integers(0, d))
            e = int(rng.integers(b + 1, d + 1))
        else:
            b = int(rng.integers(0, d))
            e = int(rng.integers(0, b + 1)) if b > 0 else 0
            if e == b:   # keep one element at least: b > e for a negative step
                step, e = 1, b + 1
        begin.append(b)
        end.append(e)
        strides.append(step)
        out.append(len(range(b, e, step)))
    q = _quant(rng, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=q.scale, zero_point=q.zero_point)
    params = [t.tensor(n, (len(shape),), "int32", data=np.array(v))
              for n, v in (("begin", begin), ("end", end), ("strides", strides))]
    ty = t.tensor("y", out, act, scale=q.scale, zero_point=q.zero_point)
    t.op("STRIDED_SLICE", [tx, *params], [ty], ("StridedSliceOptions", {}))
    g = QDQGraph()
    ins = [g.input("x", shape, q), g.value("starts", np.array(begin, np.int64)),
           g.value("ends", np.array(end, np.int64)),
           g.value("axes", np.arange(len(shape), dtype=np.int64)),
           g.value("steps", np.array(strides, np.int64))]
    g.output(g.node("Slice", ins, "sliced"), q)
    return Case(f"STRIDED_SLICE {shape} {begin}:{end}:{strides}", "STRIDED_SLICE", TARGET[act],
                t.build([tx], [ty]), g.model(), [x], {"x": q.dequantize(x)}, q)


def sub(rng: np.random.Generator, act: str) -> Case:
    """SUB: TFLite's ADD kernel with the second input's multiplier negated."""
    sa, sb = _broadcast_shapes(rng)
    shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    fused = _activation(rng)
    qa = _quant(rng, act)
    qb = _related(rng, qa.scale, act) if rng.random() < 0.5 else _quant(rng, act)
    qy = _related(rng, max(qa.scale, qb.scale), act)
    a, b = _data(rng, sa, act), _data(rng, sb, act)
    t = TFLiteGraph()
    ta = t.tensor("a", sa, act, scale=qa.scale, zero_point=qa.zero_point)
    tb = t.tensor("b", sb, act, scale=qb.scale, zero_point=qb.zero_point)
    ty = t.tensor("y", shape, act, scale=qy.scale, zero_point=qy.zero_point)
    # PotScaleInt16 false: the general 16-bit path (the default true takes TFLite's LSTM-only
    # power-of-two path when every scale is a power of two and the zero points are 0)
    t.op("SUB", [ta, tb], [ty], ("SubOptions", {"FusedActivationFunction": ACTIVATIONS[fused],
                                                "PotScaleInt16": False}))
    g = QDQGraph()
    y = g.node("Sub", [g.input("a", sa, qa), g.input("b", sb, qb)], "diff")
    g.output(_onnx_activation(g, y, fused), qy)
    name = (f"SUB {sa}-{sb} {fused} zp {qa.zero_point},{qb.zero_point}->{qy.zero_point} "
            f"scales {qa.scale:.4g},{qb.scale:.4g}->{qy.scale:.4g}")
    return Case(name, "SUB", TARGET[act], t.build([ta, tb], [ty]), g.model(), [a, b],
                {"a": qa.dequantize(a), "b": qb.dequantize(b)}, qy)


def _min_max(rng: np.random.Generator, act: str, op: str) -> Case:
    """MAXIMUM/MINIMUM: inputs and output share one scale and zero point (TFLite's rule)."""
    sa, sb = _broadcast_shapes(rng)
    shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    q = _quant(rng, act)
    a, b = _data(rng, sa, act), _data(rng, sb, act)
    t = TFLiteGraph()
    ta = t.tensor("a", sa, act, scale=q.scale, zero_point=q.zero_point)
    tb = t.tensor("b", sb, act, scale=q.scale, zero_point=q.zero_point)
    ty = t.tensor("y", shape, act, scale=q.scale, zero_point=q.zero_point)
    t.op(op, [ta, tb], [ty])
    g = QDQGraph()
    y = g.node("Max" if op == "MAXIMUM" else "Min", [g.input("a", sa, q), g.input("b", sb, q)],
               "m")
    g.output(y, q)
    return Case(f"{op} {sa},{sb} zp {q.zero_point}", op, TARGET[act], t.build([ta, tb], [ty]),
                g.model(), [a, b], {"a": q.dequantize(a), "b": q.dequantize(b)}, q)


def maximum(rng: np.random.Generator, act: str) -> Case:
    return _min_max(rng, act, "MAXIMUM")


def minimum(rng: np.random.Generator, act: str) -> Case:
    return _min_max(rng, act, "MINIMUM")


def leaky_relu(rng: np.random.Generator, act: str) -> Case:
    """LEAKY_RELU: identity and alpha multipliers from float32 scale products."""
    alpha = float(np.float32(rng.choice([0.01, 0.1, 0.2, 0.3, 0.5, 0.9, 1.5])))
    xq = _quant(rng, act)
    yq = _related(rng, xq.scale, act)
    case = _unary(rng, act, "LEAKY_RELU", "LeakyRelu", xq, yq, alpha=alpha)
    # _unary builds the op without options: rebuild the .tflite with the alpha
    shape = case.tflite_inputs[0].shape
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("LEAKY_RELU", [tx], [ty], ("LeakyReluOptions", {"Alpha": alpha}))
    case.tflite = t.build([tx], [ty])
    case.name += f" alpha {alpha}"
    return case


def elu(rng: np.random.Generator, act: str) -> Case:
    xq = _quant(rng, act, 5e-3, 0.1)
    yq = _quant(rng, act, 5e-3, 0.05)
    return _unary(rng, act, "ELU", "Elu", xq, yq)


def _gelu(rng: np.random.Generator, act: str, approximate: bool) -> Case:
    xq = _quant(rng, act, 5e-3, 0.1)
    yq = _quant(rng, act, 5e-3, 0.05)
    case = _unary(rng, act, "GELU", "Gelu", xq, yq,
                  approximate="tanh" if approximate else "none")
    shape = case.tflite_inputs[0].shape
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("GELU", [tx], [ty], ("GeluOptions", {"Approximate": approximate}))
    case.tflite = t.build([tx], [ty])
    case.name += " tanh" if approximate else " exact"
    return case


def gelu(rng: np.random.Generator, act: str) -> Case:
    return _gelu(rng, act, False)


def gelu_tanh(rng: np.random.Generator, act: str) -> Case:
    return _gelu(rng, act, True)


def squeeze(rng: np.random.Generator, act: str) -> Case:
    """SQUEEZE of chosen size-1 axes (ONNX Squeeze with the axes as an input, opset 13+); rank
    at most 4, the NPU's (the targets' max_rank)."""
    rank = int(rng.integers(2, 5))
    shape = [int(d) for d in rng.integers(1, 5, size=rank)]
    axes = sorted(int(a) for a in rng.choice(rank, size=int(rng.integers(1, rank)), replace=False))
    for a in axes:
        shape[a] = 1
    out = [d for i, d in enumerate(shape) if i not in axes]
    q = _quant(rng, act)
    x = _data(rng, tuple(shape), act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=q.scale, zero_point=q.zero_point)
    ty = t.tensor("y", out, act, scale=q.scale, zero_point=q.zero_point)
    t.op("SQUEEZE", [tx], [ty], ("SqueezeOptions", {"SqueezeDims": axes}))
    g = QDQGraph()
    ins = [g.input("x", tuple(shape), q), g.value("axes", np.array(axes, np.int64))]
    g.output(g.node("Squeeze", ins, "squeezed"), q)
    return Case(f"SQUEEZE {tuple(shape)} axes {axes}", "SQUEEZE", TARGET[act],
                t.build([tx], [ty]), g.model(), [x], {"x": q.dequantize(x)}, q)


def expand_dims(rng: np.random.Generator, act: str) -> Case:
    """EXPAND_DIMS at one axis, negative axes included (ONNX Unsqueeze); output rank <= 4."""
    shape = tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(1, 4))))
    axis = int(rng.integers(-len(shape) - 1, len(shape) + 1))
    pos = axis if axis >= 0 else axis + len(shape) + 1
    out = [*shape[:pos], 1, *shape[pos:]]
    q = _quant(rng, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=q.scale, zero_point=q.zero_point)
    ta = t.tensor("axis", (1,), "int32", data=np.array([axis]))
    ty = t.tensor("y", out, act, scale=q.scale, zero_point=q.zero_point)
    t.op("EXPAND_DIMS", [tx, ta], [ty])
    g = QDQGraph()
    ins = [g.input("x", shape, q), g.value("axes", np.array([axis], np.int64))]
    g.output(g.node("Unsqueeze", ins, "unsqueezed"), q)
    return Case(f"EXPAND_DIMS {shape} axis {axis}", "EXPAND_DIMS", TARGET[act],
                t.build([tx], [ty]), g.model(), [x], {"x": q.dequantize(x)}, q)


def quantize(rng: np.random.Generator, act: str) -> Case:
    """QUANTIZE int8 → int8 (a requantization): DequantizeLinear → QuantizeLinear in ONNX."""
    shape = _shape(rng)
    xq = _quant(rng, act)
    yq = _related(rng, xq.scale, act)
    x = _data(rng, shape, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("QUANTIZE", [tx], [ty])
    g = QDQGraph()
    g.output(g.input("x", shape, xq), yq)   # x → Q → DQ → Q(y) → DQ: a bare DQ → Q pair
    name = f"QUANTIZE {shape} {xq.scale:.5g}/{xq.zero_point} -> {yq.scale:.5g}/{yq.zero_point}"
    return Case(name, "QUANTIZE", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


#: TFLite op -> case generator (GELU_TANH is GELU with approximate=True).
GENERATORS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "SLICE": slice_,
    "STRIDED_SLICE": strided_slice,
    "SUB": sub,
    "MAXIMUM": maximum,
    "MINIMUM": minimum,
    "LEAKY_RELU": leaky_relu,
    "ELU": elu,
    "GELU": gelu,
    "GELU_TANH": gelu_tanh,
    "QUANTIZE": quantize,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": expand_dims,
}
#: The seed index of each op: the first ten in sorted order (their cases stay as they were),
#: later ops appended.
SEED_ORDER = ("ELU", "GELU", "GELU_TANH", "LEAKY_RELU", "MAXIMUM", "MINIMUM", "QUANTIZE", "SLICE",
              "STRIDED_SLICE", "SUB", "SQUEEZE", "EXPAND_DIMS")
assert sorted(SEED_ORDER) == sorted(GENERATORS)
#: TFLite ops with an int8 kernel only (ELU builds its table for 8 bits; GELU has a 16x8 one,
#: the interpolated 513-entry LUTPopulate<int16_t>).
INT8_ONLY = frozenset({"ELU"})


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` on activation type ``act`` drawn from ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, 1000 + SEED_ORDER.index(op), 16 if act == "int16" else 8])
    return GENERATORS[op](rng, act)
