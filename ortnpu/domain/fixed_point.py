"""gemmlowp's fixed-point functions as TFLite's integer softmax uses them (numpy reference).

TFLite's 8-bit reference SOFTMAX (reference_ops::Softmax) computes ``exp`` and ``1 / x`` on
int32 fixed-point numbers with gemmlowp (fixedpoint.h): a Q5.26 input, a polynomial on
[-1/4, 0) and a barrel shifter of ``exp(-2^k)`` constants, a Newton-Raphson reciprocal. Its
int16 SOFTMAX interpolates two 513-entry tables instead. This module states both on int64
numpy arrays holding int32 values; ops/kernels_softmax.c is the C twin and must equal it.

``FixedPoint<int32, I>`` is a raw int32 with ``31 - I`` fractional bits. Its ``+``/``-`` wrap
(two's complement, what TFLite's int32 adds do), ``*`` is SaturatingRoundingDoublingHighMul.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from ortnpu.domain.arith import (
    INT32_MAX,
    INT32_MIN,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

_mul = saturating_rounding_doubling_high_mul

#: exp(-2^k) in Q0.31 for k = -2..4: the barrel shifter of exp_on_negative_values
EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
              (2, 39332535), (3, 720401), (4, 242))
EXP_MINUS_ONE_EIGHTH = 1895147668     # exp(-1/8) in Q0.31
ONE_THIRD = 715827883                 # 1/3 in Q0.31
FORTY_EIGHT_OVER_17 = 1515870810      # 48/17 in Q2.29
MINUS_32_OVER_17 = -1010580540        # -32/17 in Q2.29


def saturating_left_shift(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT`` with a positive exponent."""
    return np.clip(np.asarray(x, np.int64) << exponent, INT32_MIN, INT32_MAX)


def count_leading_zeros32(x: np.ndarray) -> np.ndarray:
    """Leading zero bits of ``x`` read as uint32 (32 for 0)."""
    u = np.asarray(x, np.int64) & 0xFFFFFFFF
    n = np.full(u.shape, 32, np.int64)
    nz = u != 0
    # frexp gives the bit length exactly for integers below 2^53
    n[nz] = 32 - np.frexp(u[nz].astype(np.float64))[1]
    return n


def _exp_on_quarter_interval(a: np.ndarray) -> np.ndarray:
    """``exp(a)`` for ``a`` in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8."""
    x = wrap_int32(a + (1 << 28))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap_int32(_mul(wrap_int32(x4_over_4 + x3), ONE_THIRD) + x2), 1)
    return wrap_int32(EXP_MINUS_ONE_EIGHTH + _mul(np.int64(EXP_MINUS_ONE_EIGHTH),
                                                    wrap_int32(x + poly)))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values``: ``exp(a)`` of a non-positive Q(I).(31-I) value, in
    Q0.31 (``exp(0)`` is 2^31 - 1). Only ``integer_bits`` ≤ 5 (the softmax's 5) is stated."""
    if integer_bits > 5:
        raise ValueError("exp_on_negative_values is stated here for at most 5 integer bits")
    a = np.asarray(a, np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = wrap_int32((a & (quarter - 1)) - quarter)
    result = _exp_on_quarter_interval(saturating_left_shift(a_mod, integer_bits))
    remainder = wrap_int32(a_mod - a)
    for k, mult in EXP_BARREL:
        if integer_bits > k:
            bit = (remainder >> (frac + k)) & 1
            result = np.where(bit != 0, _mul(result, np.int64(mult)), result)
    return np.where(a == 0, np.int64(INT32_MAX), result)


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: ``1 / (1 + a)``, Q0.31 in and out, by
    three Newton-Raphson steps in Q2.29."""
    a = np.asarray(a, np.int64)
    total = a + INT32_MAX                      # RoundingHalfSum(a, One): (sum ± 1) / 2 in int64
    num = total + np.where(total >= 0, 1, -1)
    half = np.where(num >= 0, num // 2, -((-num) // 2))
    x = wrap_int32(FORTY_EIGHT_OVER_17 + _mul(half, np.int64(MINUS_32_OVER_17)))
    for _ in range(3):
        one_minus = wrap_int32((1 << 29) - _mul(half, x))
        x = wrap_int32(x + saturating_left_shift(_mul(x, one_minus), 2))
    return saturating_left_shift(x, 1)


def get_reciprocal(x: np.ndarray, integer_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite ``GetReciprocal``: ``(1 / x`` scaled into Q0.31, ``num_bits_over_unit)`` of a
    positive Q(I).(31-I) value."""
    x = np.asarray(x, np.int64)
    clz = count_leading_zeros32(x)
    shifted = wrap_int32(((x & 0xFFFFFFFF) << clz) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted), integer_bits - clz


def lut_lookup_int16(value: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """TFLite's int16 ``LUTLookup``: linear interpolation in a 513-entry table, 128 input
    values per step, ``(slope · offset + 64) >> 7`` rounding."""
    v = np.asarray(value, np.int64)
    table = np.asarray(lut, np.int64)
    index = 256 + (v >> 7)
    offset = v & 0x7F
    base = table[index]
    slope = wrap_int16(table[index + 1] - base)
    return wrap_int16(base + ((slope * offset + 64) >> 7))


def wrap_int16(x: np.ndarray) -> np.ndarray:
    """Keep the low 16 bits as a signed value (a cast to int16_t)."""
    return ((np.asarray(x, np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def _libm_double(name: str) -> Callable[[float], float]:
    """The C library's double function ``name`` (TFLite's ``std::exp``), else Python's."""
    import ctypes
    import ctypes.util

    try:
        path = ctypes.util.find_library("m")
        fn = getattr(ctypes.CDLL(path) if path else ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return getattr(math, name)
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    return fn


def _round(v: float) -> float:
    """TfLiteRound: half away from zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def gen_lut_int16(func: Callable[[float], float], input_min: float, input_max: float,
                  output_min: float, output_max: float) -> np.ndarray:
    """TFLite's ``gen_lut<double, int16_t, int16_t>``: 512 samples of ``func`` plus the end
    point, each sample biased by half the error of the interpolated midpoint, in double."""
    steps = 512
    step = (input_max - input_min) / steps
    half = step / 2
    inv = 65536.0 / (output_max - output_min)
    lut = np.empty(steps + 1, np.int64)
    for i in range(steps):
        val = func(input_min + i * step)
        mid = func(input_min + i * step + half)
        nxt = func(input_min + (i + 1) * step)
        sample = _round(val * inv)
        interp = _round((nxt * inv + _round(val * inv)) / 2)
        bias = _round((interp - _round(mid * inv)) / 2)
        lut[i] = int(min(max(sample - bias, -32768.0), 32767.0))
    lut[steps] = int(min(max(_round(func(input_max) * inv), -32768.0), 32767.0))
    return lut


@functools.cache
def softmax_int16_tables() -> tuple[np.ndarray, np.ndarray]:
    """The two tables of TFLite's int16 SOFTMAX (SoftmaxPrepare): ``exp`` on [-10, 0] and
    ``1 / (1 + x)`` on [0, 1], outputs on [-1, 1]; int16 values, read-only."""
    exp = _libm_double("exp")
    tables = (gen_lut_int16(exp, -10.0, 0.0, -1.0, 1.0),
              gen_lut_int16(lambda v: 1.0 / (1.0 + v), 0.0, 1.0, -1.0, 1.0))
    out = tuple(t.astype(np.int16) for t in tables)
    for t in out:
        t.flags.writeable = False
    return out[0], out[1]
