"""Oracle cases of BATCH_MATMUL with two activation operands (attention Q·Kᵀ and attn·V).

Kept in a file of their own so that the seeds of the other generators (drawn from the index of
the op in their table) stay as they are. Same conventions as ``cases.py``: seeded, biased
towards edge values (zero points at the extremes, saturation, broadcast batch dimensions, odd
sizes, long sums).
"""

from __future__ import annotations

import numpy as np
from cases import _data, _limits, _quant, _related
from qdq_builder import Case, QDQGraph
from tflite_builder import TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}


def _batch_dims(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Batch dimensions of the two operands: equal, broadcast (a 1 against a size) or of
    different ranks (rank 2 to 4 in all: the presets' max_rank)."""
    full = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(0, 3))))
    r = rng.random()
    if r < 0.4:
        return full, full
    if r < 0.7:
        a = tuple(d if rng.random() < 0.6 else 1 for d in full)
        b = tuple(d if rng.random() < 0.6 or a[i] == 1 else 1 for i, d in enumerate(full))
        return a, b
    cut = int(rng.integers(0, len(full) + 1))
    return (full, full[cut:]) if rng.random() < 0.5 else (full[cut:], full)


def batch_matmul(rng: np.random.Generator, act: str) -> Case:
    """BATCH_MATMUL of two activations (attention Q·Kᵀ, attn·V): zero points of both operands,
    broadcast batch dimensions, adj_y (ONNX: a Transpose of the last two axes of b), odd
    sizes, an output scale that saturates part of the outputs."""
    ba, bb = _batch_dims(rng)
    m, k, n = (int(v) for v in rng.integers(1, 12, size=3))
    if rng.random() < 0.15:
        k = int(rng.integers(40, 130))   # long sums: large accumulators
    adj_y = bool(rng.random() < 0.5)
    sa, sb = (*ba, m, k), (*bb, n, k) if adj_y else (*bb, k, n)
    out = (*np.broadcast_shapes(ba, bb), m, n)
    qa, qb = _quant(rng, act), _quant(rng, act)
    top = _limits(act)[1]
    spread = qa.scale * qb.scale * top * top * np.sqrt(k) / 2.0
    qy = _related(rng, spread / top, act)
    a, b = _data(rng, sa, act), _data(rng, sb, act)
    t = TFLiteGraph()
    ta = t.tensor("a", sa, act, scale=qa.scale, zero_point=qa.zero_point)
    tb = t.tensor("b", sb, act, scale=qb.scale, zero_point=qb.zero_point)
    ty = t.tensor("y", out, act, scale=qy.scale, zero_point=qy.zero_point)
    t.op("BATCH_MATMUL", [ta, tb], [ty], ("BatchMatMulOptions", {"AdjX": False,
                                                                "AdjY": adj_y}))
    g = QDQGraph()
    rhs = g.input("b", sb, qb)
    if adj_y:
        perm = [*range(len(sb) - 2), len(sb) - 1, len(sb) - 2]
        rhs = g.node("Transpose", [rhs], "b_t", perm=perm)
    g.output(g.node("MatMul", [g.input("a", sa, qa), rhs], "mm"), qy)
    name = (f"BATCH_MATMUL {sa}x{sb}{' adj_y' if adj_y else ''} zp {qa.zero_point},"
            f"{qb.zero_point}->{qy.zero_point} scales {qa.scale:.4g},{qb.scale:.4g}->"
            f"{qy.scale:.4g}")
    return Case(name, "BATCH_MATMUL", TARGET[act], t.build([ta, tb], [ty]), g.model(), [a, b],
                {"a": qa.dequantize(a), "b": qb.dequantize(b)}, qy)


def make_case(act: str, seed: int) -> Case:
    """The BATCH_MATMUL case on activation type ``act`` drawn from ``seed`` (reproducible)."""
    return batch_matmul(np.random.default_rng([seed, 2000, 16 if act == "int16" else 8]), act)
