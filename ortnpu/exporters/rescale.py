"""Every rounding rule of ``arith.py`` lowered to standard int64 ONNX ops, exactly.

The multiplier and shift are constants of the NPU graph, so everything that depends only on
them (left/right shift amounts, powers of two, rounding offsets, reduced multipliers, which
channels could hit the INT32_MIN·INT32_MIN saturation) is computed here in numpy and stored as
constants; the graph only does the data-dependent part. Arithmetic right shifts are
``floor(a / 2^e)`` built from ``Mod`` (floor modulo) and ``Div`` (exact after subtracting the
remainder), which is exact on the whole int64 range, unlike onnxruntime's BitShift (unsigned
types only).
"""

from __future__ import annotations

import numpy as np

from ortnpu.domain.arith import INT32_MAX, INT32_MIN, ROUNDING_RULES
from ortnpu.errors import UnsupportedError
from ortnpu.exporters.builder import I64, Builder


def _pow2(e: np.ndarray) -> np.ndarray:
    return np.left_shift(np.int64(1), np.asarray(e, dtype=np.int64))


def tflite_double(b: Builder, x: str, m: np.ndarray, s: np.ndarray) -> str:
    """``RoundingDivideByPOT(SRDHM(wrap32(x << left), m), right)``."""
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    a = b.clip(x, INT32_MIN, INT32_MAX)                  # int32 input: saturate a 64-bit acc
    if left.any():
        a = b.wrap32(b.mul_c(a, _pow2(left)))
    ab = b.mul_c(a, m)                                   # |a·m| ≤ 2^62
    neg = b.compare("Less", ab, b.const(0))
    nudge = b.where(neg, b.const(1 - (1 << 30)), b.const(1 << 30))
    high = b.div_c(b.add(ab, nudge), 1 << 31)            # C division: toward zero
    if (m == INT32_MIN).any():
        both = b.emit("And", [b.compare("Equal", a, b.const(INT32_MIN)),
                              b.const(m == INT32_MIN, np.bool_)], b.types[neg])
        high = b.where(both, b.const(INT32_MAX), high)
    if not right.any():
        return high
    p = _pow2(right)
    rem = b.mod_c(high, p)                               # == high & mask
    floor = b.div_c(b.sub(high, rem), p)
    thr = b.add(b.const((p - 1) >> 1), b.cast(b.compare("Less", high, b.const(0)), I64))
    return b.add(floor, b.cast(b.compare("Greater", rem, thr), I64))


def tflite_single(b: Builder, x: str, m: np.ndarray, s: np.ndarray) -> str:
    """``sat32((x·m + 2^(t-1)) >> t)`` with ``t = 31 - shift``."""
    total = 31 - s
    x = b.clip(x, INT32_MIN, INT32_MAX)                  # int32 input: saturate a 64-bit acc
    rounded = b.add_c(b.mul_c(x, m), _pow2(total - 1))
    return b.clip(b.floor_pow2(rounded, total), INT32_MIN, INT32_MAX)


def tflite_int64(b: Builder, x: str, m: np.ndarray, s: np.ndarray) -> str:
    """TFLite's int64 rescale: 15-bit multiplier, one rounding-half-up shift, saturations."""
    x = b.clip(x, -(1 << 47), (1 << 47) - 1)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, np.int64(0x7FFF))
    total = 15 - s
    rounded = b.add_c(b.mul_c(x, reduced), _pow2(total - 1))
    return b.clip(b.floor_pow2(rounded, total), INT32_MIN, INT32_MAX)


def half_up(b: Builder, x: str, m: np.ndarray, s: np.ndarray) -> str:
    """``(x·m + 2^(r-1)) >> r`` for right shifts, ``x·m·2^left`` otherwise, then int32.

    Exact like ``arith.rescale_half_up`` for inputs up to ±2^62: right shifts form the product
    from two 31-bit limbs of ``x`` so no int64 product wraps; left shifts clamp first, since
    anything beyond ±2^31 saturates either way.
    """
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    x = b.clip(x, -(1 << 62), 1 << 62)
    small = b.mul_c(b.clip(x, -(1 << 31) - 1, (1 << 31) + 1), m)      # |.| < 2^63
    by_left = b.mul_c(b.clip(small, -(1 << 31) - 1, (1 << 31) + 1), _pow2(left))
    if not right.any():
        return b.clip(by_left, INT32_MIN, INT32_MAX)
    high = b.floor_pow2(x, np.int64(31))
    low = b.sub(x, b.mul_c(high, 1 << 31))                             # in [0, 2^31)
    offset = np.where(right > 0, _pow2(np.maximum(right - 1, 0)), 0)
    lo_m = b.add_c(b.mul_c(low, m), offset)                            # |.| < 2^63
    carry = b.floor_pow2(lo_m, np.int64(31))
    a = b.add(b.mul_c(high, m), carry)                                 # value = a·2^31 + rem
    rem = b.sub(lo_m, b.mul_c(carry, 1 << 31))
    by_big = b.floor_pow2(a, np.maximum(right - 31, 0))
    bound = _pow2(np.minimum(right, 31) + 1)
    a_c = b.emit("Max", [b.emit("Min", [a, b.const(bound)], I64), b.const(-bound)], I64)
    exact = b.add(b.mul_c(a_c, _pow2(np.maximum(31 - right, 0))),
                  b.floor_pow2(rem, np.minimum(right, 62)))
    fits = b.compare("LessOrEqual", b.emit("Abs", [a], I64), b.const(bound))
    by_small = b.where(fits, exact, b.mul_c(b.emit("Sign", [a], I64), 1 << 40))
    by_right = b.where(b.const(right >= 31, np.bool_), by_big, by_small)
    result = b.where(b.const(right > 0, np.bool_), by_right, by_left)
    return b.clip(result, INT32_MIN, INT32_MAX)


def tosa_double(b: Builder, x: str, m: np.ndarray, s: np.ndarray) -> str:
    """TOSA ``apply_scale_32`` with double rounding: ``half_up`` plus ``±2^30`` in the rounding
    offset of right shifts beyond 31 (sign of the int32-saturated input)."""
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    if not (right > 31).any():
        return half_up(b, b.clip(x, INT32_MIN, INT32_MAX), m, s)
    x = b.clip(x, INT32_MIN, INT32_MAX)                  # int32 input: |x·m| ≤ 2^62
    offset = np.where(right > 0, _pow2(np.maximum(right - 1, 0)), 0)
    extra = np.where(right > 31, np.int64(1 << 30), 0)
    sign_extra = b.where(b.compare("Less", x, b.const(0)), b.const(-extra), b.const(extra))
    rounded = b.add(b.add_c(b.mul_c(x, m), offset), sign_extra)
    by_right = b.clip(b.floor_pow2(rounded, right), INT32_MIN, INT32_MAX)
    if not (right == 0).any():
        return by_right
    return b.where(b.const(right > 0, np.bool_), by_right, half_up(b, x, m, left))


_RULES = {"tflite_double": tflite_double, "tflite_single": tflite_single,
          "tflite_int64": tflite_int64, "half_up": half_up, "tosa_double": tosa_double}
assert set(_RULES) == set(ROUNDING_RULES), "every rounding rule needs a lowering"


def lower_rescale(b: Builder, x: str, multiplier: np.ndarray, shift: np.ndarray,
                  rounding: str) -> str:
    """Apply ``arith.rescale(x, multiplier, shift, rounding)`` to the int64 tensor ``x``.

    Args:
        b: the builder.
        x: int64 tensor.
        multiplier, shift: constants already shaped to broadcast against ``x``.
        rounding: one of ``arith.ROUNDING_RULES``.
    """
    if rounding not in _RULES:
        raise UnsupportedError(f"rounding rule {rounding!r} has no lowering; known: "
                               f"{', '.join(_RULES)}")
    return _RULES[rounding](b, x, np.asarray(multiplier, np.int64),
                            np.asarray(shift, np.int64))
