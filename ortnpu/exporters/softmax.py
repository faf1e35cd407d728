"""Softmax in standard int64 ONNX ops, exactly as ``ops_softmax.py`` computes it.

Everything that depends only on a row's difference to its maximum (8 bits: 256 values) is a
table computed here with the numpy reference (the exponential and its Q12.19 contribution);
the graph computes the row maximum (TopK), the sum, the reciprocal (GetReciprocal's three
Newton-Raphson steps, each SRDHM a floor division) and the final shift. int16 interpolates the
two tables of TFLite's int16 SOFTMAX with the same index, offset and rounding.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ortnpu.domain import fixed_point as fp
from ortnpu.domain.arith import INT32_MAX, INT32_MIN, rounding_divide_by_pot
from ortnpu.domain.arith import saturating_rounding_doubling_high_mul as srdhm_np
from ortnpu.exporters.builder import BOOL, I64, Builder
from ortnpu.exporters.graph import NodeContext
from ortnpu.exporters.rescale import tflite_double


def _row_max(b: Builder, x: str) -> str:
    """Maximum of each row (last axis, kept) with TopK, the same in every opset ≥ 11."""
    values, index = b.fresh("row_max"), b.fresh("row_argmax")
    b.nodes.append(helper.make_node("TopK", [x, b.const([1])], [values, index], axis=-1,
                                    name=b.fresh("TopK") if b.prefix else ""))
    b.types[values], b.types[index] = I64, I64
    return values


def _srdhm(b: Builder, a: str, c: str | int) -> str:
    """SaturatingRoundingDoublingHighMul = floor((a·c + 2^30) / 2^31) (no saturation case:
    the operands here are never both INT32_MIN)."""
    prod = b.mul(a, c) if isinstance(c, str) else b.mul_c(a, c)
    return b.floor_pow2(b.add_c(prod, 1 << 30), np.array(31))


def _sat_shl(b: Builder, a: str, k: int) -> str:
    return b.clip(b.mul_c(a, 1 << k), INT32_MIN, INT32_MAX)


def _one_over_one_plus_x(b: Builder, a: str) -> str:
    """gemmlowp's Newton-Raphson 1/(1+a) for a in [0, 1) (Q0.31, non-negative here)."""
    half = b.div_c(b.add_c(a, INT32_MAX + 1), 2)          # (a + One + 1) / 2, a + One ≥ 0
    x = b.wrap32(b.add_c(_srdhm(b, half, fp.MINUS_32_OVER_17), fp.FORTY_EIGHT_OVER_17))
    for _ in range(3):
        one_minus = b.wrap32(b.sub(b.const(1 << 29), _srdhm(b, half, x)))
        x = b.wrap32(b.add(x, _sat_shl(b, _srdhm(b, x, one_minus), 2)))
    return _sat_shl(b, x, 1)


def _count_at_least(b: Builder, total: str, bits: range) -> str:
    """Σ [total ≥ 2^k] over ``bits``: the bit length above ``bits.start`` (total ≥ 1)."""
    count = None
    for k in bits:
        flag = b.cast(b.compare("GreaterOrEqual", total, b.const(1 << k)), I64)
        count = flag if count is None else b.add(count, flag)
    assert count is not None
    return count


def _lut16(b: Builder, v: str, lut: np.ndarray) -> str:
    """TFLite's int16 LUTLookup on int64 values in [-32768, 32767]."""
    table = np.asarray(lut, np.int64)
    if np.abs(np.diff(table)).max() >= 1 << 15:
        raise AssertionError("table slopes must fit int16 (the lookup wraps them)")
    shifted = b.add_c(v, 1 << 15)                           # v + 32768 ≥ 0
    index = b.div_c(shifted, 128)                           # 256 + (v >> 7)
    offset = b.mod_c(shifted, 128)                          # v & 0x7f
    base = b.emit("Gather", [b.const(table), index], I64, axis=0)
    nxt = b.emit("Gather", [b.const(table[1:]), index], I64, axis=0)
    delta = b.floor_pow2(b.add_c(b.mul(b.sub(nxt, base), offset), 64), np.array(7))
    return b.add(base, delta)


def _softmax_8bit(b: Builder, d: str, a: dict, lo: int, hi: int) -> str:
    span = hi - lo
    diffs = np.arange(-span, 1, dtype=np.int64)
    counted = diffs >= a["diff_min"]
    e = fp.exp_on_negative_values(
        srdhm_np(np.where(counted, diffs, 0) << a["shift"], a["multiplier"]), 5)
    e = np.where(counted, e, 0)
    contrib = np.where(counted, rounding_divide_by_pot(e, 12), 0)
    index = b.add_c(d, span)
    ev = b.emit("Gather", [b.const(e), index], I64, axis=0)
    total = b.emit("ReduceSum", [b.emit("Gather", [b.const(contrib), index], I64, axis=0),
                                 b.const([-1])], I64, keepdims=1)
    over = _count_at_least(b, total, range(20, 31))          # num_bits_over_unit = 12 - clz
    scale = b.emit("Gather", [b.const(np.left_shift(np.int64(1), 12 - np.arange(12))), over],
                   I64, axis=0)
    recip = _one_over_one_plus_x(b, b.add_c(b.mul(total, scale), -(1 << 31)))
    prod = _srdhm(b, recip, ev)                               # ≥ 0
    divisor = b.emit("Gather", [b.const(np.left_shift(np.int64(1), np.arange(12) + 23)), over],
                     I64, axis=0)
    half = b.div_c(divisor, 2)
    out = b.add_c(b.emit("Div", [b.add(prod, half), divisor], I64), lo)   # both ≥ 0: floor
    inside = b.emit("Gather", [b.const(counted, np.bool_), index], BOOL, axis=0)
    return b.where(inside, out, b.const(lo))


def _softmax_int16(b: Builder, d: str, a: dict) -> str:
    exp_lut, recip_lut = fp.softmax_int16_tables()
    scaled = tflite_double(b, d, np.array([a["multiplier"]]), np.array([a["shift"]]))
    e = _lut16(b, b.clip(b.add_c(scaled, 32767), -32768, 32767), exp_lut)
    total = b.emit("ReduceSum", [e, b.const([-1])], I64, keepdims=1)
    # headroom h = clz(total) = 32 - bit length; total ≥ 2^14 (the maximum's exp is ~1)
    length = b.add_c(_count_at_least(b, total, range(15, 31)), 15)
    h_minus_1 = b.sub(b.const(31), length)
    pow_h1 = b.emit("Gather", [b.const(np.left_shift(np.int64(1), np.arange(32))), h_minus_1],
                    I64, axis=0)
    shifted = b.floor_pow2(b.add_c(b.mul(total, pow_h1), 1 << 13), np.array(14))
    recip = _lut16(b, b.clip(b.add_c(shifted, -((1 << 15) + (1 << 16))), -32768, 32767),
                   recip_lut)
    right = b.sub(b.const(31), b.add_c(h_minus_1, 1))        # 31 - h
    pow_right = b.emit("Gather", [b.const(np.left_shift(np.int64(1), np.arange(32))), right],
                       I64, axis=0)
    num = b.add(b.mul(e, recip), b.div_c(pow_right, 2))
    rem = b.emit("Mod", [num, pow_right], I64, fmod=0)
    return b.emit("Div", [b.sub(num, rem), pow_right], I64)   # exact: a floor division


def lower_softmax(b: Builder, ctx: NodeContext) -> None:
    """TFLite's integer SOFTMAX along the last axis (see module doc)."""
    from ortnpu.exporters.integer import RANGE

    x = b.i64(ctx.input(0))
    d = b.sub(x, _row_max(b, x))
    lo, hi = RANGE[b.types[ctx.input(0)]]
    if hi - lo > 255:
        b.finish(_softmax_int16(b, d, ctx.attrs), 0, hi, ctx.out_type, ctx.output)
        return
    b.finish(_softmax_8bit(b, d, ctx.attrs, lo, hi), lo, hi, ctx.out_type, ctx.output)
