"""Oracle cases of the ops a LayerNorm decomposes into, as TFLite runs them: MEAN over the
last (channel) axis with keep_dims (ONNX ReduceMean(axes=[-1])) and MUL of a tensor by itself
(ONNX Pow(x, 2)), each with output parameters of its own. Seeded, biased towards the edges
(zero points at the ends, odd and long rows, output scales a power of two or a hair off)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cases import _data, _quant, _related
from qdq_builder import Case, QDQGraph
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


GENERATORS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "MEAN_LAST_AXIS": mean_last_axis,
    "SQUARE": square,
}


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` on ``act`` drawn from ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, 3000 + sorted(GENERATORS).index(op),
                                 16 if act == "int16" else 8])
    return GENERATORS[op](rng, act)
