"""Integer rescale arithmetic: the numpy reference every kernel, C or exported, must equal.

All functions take and return ``int64`` numpy arrays (holding 32-bit values where the reference
is 32-bit) so that intermediate products never overflow silently. Formulas follow TFLite's
reference kernels (tensorflow/lite/kernels/internal/common.h) and N2D2's shift rescaling; see
docs/op-domain.md for the statement of each rule.

Conventions shared by the whole op domain:

* A rescale is ``y = x * multiplier * 2**shift`` rounded by a named rule. ``shift`` is signed:
  positive shifts left, negative shifts right (TFLite's convention).
* Where the reference has undefined behaviour (int32 overflow of ``x << left``) ortnpu defines it
  as two's-complement wrap-around, which is what 32-bit hardware adders and shifters do; where the
  reference asserts a range (TFLite's int64 rescale), ortnpu saturates.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: The rounding rules a kernel's ``rounding`` attribute may name.
ROUNDING_RULES = ("tflite_double", "tflite_single", "tflite_int64", "half_up", "tosa_double")
#: Where a Sub negates its subtrahend: b's multiplier (TFLite) or b's rescaled value (TOSA).
SUB_NEGATE_MODES = ("multiplier", "result")


def round_half_away(x: float | np.ndarray) -> np.ndarray:
    """Round half away from zero (C's ``round``/TFLite's ``TfLiteRound``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what an int32 adder does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturate(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Clamp to ``[lo, hi]`` keeping int64."""
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def quantize_multiplier(real: float, *, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ≈ qm * 2**(shift - 31)`` with ``qm`` in [2^30, 2^31).

    Args:
        real: the real multiplier (non-negative, finite).
        single_rounding: apply the clamp of the single-rounding build (shift at most 30).

    Returns:
        ``(qm, shift)`` with TFLite's signed shift (positive = left).
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and non-negative, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    qm = int(round_half_away(q * float(1 << 31)))
    if qm == (1 << 31):
        qm //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return INT32_MAX, 30
    return qm, shift


def mean_multiplier(real: float, count: int) -> tuple[int, int]:
    """TFLite's MEAN rescale: ``QuantizeMultiplier(real)`` renormalized by ``1 / count``.

    reference_ops::QuantizedMeanOrSum folds the division into the multiplier:
    ``k = min(floor(log2 count), 32, 31 + shift)``, ``M' = (M << k) / count`` (truncating),
    ``shift' = shift - k``; the mean is then ``MultiplyByQuantizedMultiplier(sum - zp·count, M',
    shift')``. This is not ``QuantizeMultiplier(real / count)``: the last bits of M' differ.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    qm, shift = quantize_multiplier(real)
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (qm << k) // count, shift - k


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C integer division truncates toward zero; numpy's >> floors, so work on magnitudes.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where(overflow, np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def rescale_tflite_double(x: np.ndarray, qm: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (int32, double rounding), the default build.

    The rule takes an int32 input; a 64-bit accumulator is saturated to int32 first.
    """
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap_int32(saturate(x, INT32_MIN, INT32_MAX) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, qm), right)


def rescale_tflite_single(x: np.ndarray, qm: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` of the single-rounding build (shift ≤ 30).

    The rule takes an int32 input; a 64-bit accumulator is saturated to int32 first.
    """
    x = saturate(x, INT32_MIN, INT32_MAX)
    total = 31 - np.asarray(shift, dtype=np.int64)
    result = (x * np.asarray(qm, dtype=np.int64) + (np.int64(1) << (total - 1))) >> total
    return saturate(result, INT32_MIN, INT32_MAX)


def rescale_tflite_int64(x: np.ndarray, qm: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier(int64 x, ...)`` used by the 16x8 kernels.

    The 32-bit multiplier is reduced to 15 bits and one rounding-half-up shift is applied. TFLite
    asserts ``|x| < 2^47`` and an int32 result; ortnpu saturates both instead.
    """
    x = saturate(x, -(1 << 47), (1 << 47) - 1)
    qm = np.asarray(qm, dtype=np.int64)
    reduced = np.where(qm < 0x7FFF0000, (qm + (1 << 15)) >> 16, np.int64(0x7FFF))
    total = 15 - np.asarray(shift, dtype=np.int64)
    result = (x * reduced + (np.int64(1) << (total - 1))) >> total
    return saturate(result, INT32_MIN, INT32_MAX)


def rescale_half_up(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x * m * 2**shift`` rounding half up: ``(x*m + 2^(r-1)) >> r`` for a right shift r.

    The rule of N2D2's single-shift (m = 1), double-shift (m = 2^a + 1) and fixed-point16/32
    rescaling, and of TOSA's RESCALE with single rounding. It is exact for every input in
    [-2^62, 2^62] (beyond, the input saturates) and every multiplier of 32 bits: the product,
    up to 2^93, is formed from two 31-bit limbs so nothing wraps. The result saturates to int32.
    """
    lim = np.int64(1) << 62
    x = np.clip(np.asarray(x, dtype=np.int64), -lim, lim)
    m = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(-shift, 0)
    left = np.maximum(shift, 0)
    low_mask = np.int64((1 << 31) - 1)
    big = np.int64(1) << 40            # any value beyond int32 saturates the same way
    with np.errstate(over="ignore"):
        # right shifts: x*m = H*2^31 + L with H = (x >> 31)*m and L = (x & (2^31-1))*m
        high = (x >> 31) * m                                   # |high| <= 2^62
        low = (x & low_mask) * m + np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0),
                                            0)                 # |low| < 2^63
        a = high + (low >> 31)                                 # value = a*2^31 + rem
        rem = low & low_mask
        by_big_shift = a >> np.maximum(right - 31, 0)
        fits = np.abs(a) <= (np.int64(1) << (np.minimum(right, 31) + 1))
        by_small_shift = np.where(
            fits, a * (np.int64(1) << np.maximum(31 - right, 0)) + (rem >> np.minimum(right, 63)),
            np.sign(a) * big)
        shifted_right = np.where(right >= 31, by_big_shift, by_small_shift)
        # left shifts (and shift 0): exact when small, saturated otherwise
        estimate = x.astype(np.float64) * m.astype(np.float64) * np.exp2(left.astype(np.float64))
        shifted_left = np.where(np.abs(estimate) > float(big), np.sign(estimate).astype(np.int64)
                                * big, (x * m) << np.where(np.abs(estimate) > float(big), 0, left))
    return saturate(np.where(right > 0, shifted_right, shifted_left), INT32_MIN, INT32_MAX)


def rescale_tosa_double(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TOSA ``apply_scale_32`` with ``double_round`` (RESCALE ``rounding_mode = DOUBLE_ROUND``).

    TOSA rounds half up once, ``(x·m + 2^(r-1)) >> r``, but for a right shift r > 31 the
    rounding offset also gets ``+2^30`` (x ≥ 0) or ``-2^30`` (x < 0): the single-step form of
    rounding at bit 31 first, as a 32-bit datapath does. With r ≤ 31 (and for left shifts) the
    rule equals ``half_up``. The input is an int32 (TOSA requires it; a wider accumulator is
    saturated to int32 first, as the TFLite rules do), so ``|x·m| ≤ 2^62`` and nothing wraps.
    TOSA also requires ``|x| < 2^(r-1)`` so that the result fits int32; ortnpu saturates.
    """
    x = saturate(x, INT32_MIN, INT32_MAX)
    m = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(-shift, 0)
    offset = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    offset = offset + np.where(right > 31, np.where(x >= 0, np.int64(1 << 30),
                                                    np.int64(-(1 << 30))), 0)
    by_right = saturate((x * m + offset) >> right, INT32_MIN, INT32_MAX)
    return np.where(right > 0, by_right, rescale_half_up(x, m, np.maximum(shift, 0)))


_RULES = {
    "tflite_double": rescale_tflite_double,
    "tflite_single": rescale_tflite_single,
    "tflite_int64": rescale_tflite_int64,
    "half_up": rescale_half_up,
    "tosa_double": rescale_tosa_double,
}


def rescale(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """Apply the rescale rule ``rounding`` (one of :data:`ROUNDING_RULES`)."""
    return _RULES[rounding](x, multiplier, shift)


def rescale_bounds(rounding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Allowed ``(multiplier range, shift range)`` of a rounding rule; kernels check them."""
    if rounding == "tflite_double":
        return (0, INT32_MAX), (-31, 31)
    if rounding == "tflite_single":
        return (0, INT32_MAX), (-31, 30)
    if rounding == "tflite_int64":
        return (0, INT32_MAX), (-31, 7)
    return (-(1 << 31), INT32_MAX), (-62, 31)


def accumulate_wrap(acc: np.ndarray, acc_bits: int) -> np.ndarray:
    """Bring an exact accumulator to the accumulator width (int32 wraps, int64 is exact here)."""
    return wrap_int32(acc) if acc_bits == 32 else np.asarray(acc, dtype=np.int64)
