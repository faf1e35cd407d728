"""Oracle cases of SOFTMAX (int8 and int16) and its ONNX twin, Softmax over the last axis.

Kept in a module of its own so that the seeds of the other tables stay as they are. The draws
favour what moves TFLite's fixed-point softmax: large logits (scales up to 4, where most of a
row falls below ``diff_min``), rows whose values all equal the maximum, long rows up to the
511 values the 8-bit kernel allows, odd row lengths, zero points at the ends, tiny scales.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cases import _data, _scale, _zero_point
from qdq_builder import Case, QDQGraph, Quant
from tflite_builder import TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}


def _rows(rng: np.random.Generator, act: str) -> tuple[int, ...]:
    """A shape whose last axis is the softmax's: odd lengths, 1, long rows now and then."""
    r = rng.random()
    depth = (int(rng.integers(1, 12)) if r < 0.5 else int(rng.integers(12, 200)) if r < 0.85
             else int(rng.choice([255, 256, 511] if act == "int8" else [511, 1000, 4097])))
    lead = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    return (*lead, depth)


def softmax(rng: np.random.Generator, act: str) -> Case:
    """SOFTMAX (beta 1) → Softmax(axis=-1), output on TFLite's fixed parameters."""
    shape = _rows(rng, act)
    r = rng.random()
    if act == "int16":
        xq = Quant(_scale(rng, 1e-5, 2e-3) if r < 0.8 else _scale(rng, 2e-3, 0.05), 0, act)
    else:
        scale = _scale(rng, 1e-3, 0.3) if r < 0.7 else _scale(rng, 0.3, 4.0) if r < 0.9 \
            else _scale(rng, 1e-6, 1e-3)
        xq = Quant(scale, _zero_point(rng, act), act)
    x = _data(rng, shape, act)
    kind = rng.random()
    if kind < 0.15:                       # every value of a row at its maximum
        x[...] = x[..., :1]
    elif kind < 0.3:                      # a few values near the top, the rest far below
        lo, hi = int(np.iinfo(act).min), int(np.iinfo(act).max)
        x[...] = lo
        top = int(rng.integers(lo + 10, hi + 1))
        k = rng.choice(shape[-1], size=max(1, shape[-1] // 3))
        x[..., k] = top - rng.integers(0, 10, size=k.size)
    yq = Quant(1.0 / 256, -128, act) if act == "int8" else Quant(1.0 / 32768, 0, act)
    t = TFLiteGraph()
    tx = t.tensor("x", shape, act, scale=xq.scale, zero_point=xq.zero_point)
    ty = t.tensor("y", shape, act, scale=yq.scale, zero_point=yq.zero_point)
    t.op("SOFTMAX", [tx], [ty], ("SoftmaxOptions", {"Beta": 1.0}))
    g = QDQGraph()
    g.output(g.node("Softmax", [g.input("x", shape, xq)], "probs", axis=-1), yq)
    name = f"SOFTMAX {shape} x {xq.scale:.5g}/{xq.zero_point}"
    return Case(name, "SOFTMAX", TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": xq.dequantize(x)}, yq)


GENERATORS: dict[str, Callable[[np.random.Generator, str], Case]] = {"SOFTMAX": softmax}


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` on ``act`` drawn from ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, 2000 + sorted(GENERATORS).index(op),
                                 16 if act == "int16" else 8])
    return GENERATORS[op](rng, act)
