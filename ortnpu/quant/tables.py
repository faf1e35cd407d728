"""Lookup tables of the ``Lut`` op: one output per input value, built as TFLite builds them.

A table is the whole function of an elementwise op on one quantized input, so the table decides
every output bit. TFLite builds most int8 tables in float32 (``LUTPopulate``) but computes
HARD_SWISH in 16-bit fixed point; the builders here follow the reference kernel of each op and
are checked against LiteRT's reference kernels by tests/oracle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ortnpu.domain.arith import (
    quantize_multiplier,
    rescale,
    round_half_away,
    rounding_divide_by_pot,
)
from ortnpu.quant.params import QuantParams, multiplier
from ortnpu.target import Arithmetic


def float_table(fn: Callable[[np.ndarray], np.ndarray], xp: QuantParams,
                yp: QuantParams) -> np.ndarray:
    """TFLite's ``LUTPopulate``: ``f`` on every dequantized input in float32, quantized out.

    ``real = s_in * (q - zp_in)`` and ``f(real)`` are float32, as in the reference kernel; the
    result is quantized by ``yp`` (round half away from zero, saturated).
    """
    info = np.iinfo(xp.dtype)
    q = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    real = (np.float32(xp.scale) * (q - xp.zero_point).astype(np.float32)).astype(np.float32)
    with np.errstate(over="ignore"):  # expf overflow gives the exact limit, as in C
        f = np.asarray(fn(real)).astype(np.float32)
    return yp.quantize(f)


def _srdhm16(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int16 values (held in int64)."""
    a = np.asarray(a, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    s = ab + nudge
    high = np.where(s >= 0, s >> 15, -((-s) >> 15))        # C division truncates
    return np.where((a == -32768) & (b == -32768), 32767, high)


def _sat16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """``QuantizeMultiplier`` then ``DownScaleInt32ToInt16Multiplier``: ``(M16, exponent)``."""
    m, e = quantize_multiplier(real)
    if m >= (1 << 31) - 1 - (1 << 15):
        return 32767, e
    return (m + (1 << 15)) >> 16, e


def hard_swish_int8_table(xp: QuantParams, yp: QuantParams) -> np.ndarray | None:
    """TFLite's int8 HARD_SWISH (reference_ops::HardSwish) for every input value.

    The kernel works in 16-bit fixed point: the input on a "hires" scale ``s_in / 128``, a
    "reluish" factor ``relu6(x + 3) / 6`` in Q0.15, the product truncated (no rounding), then
    a rounding shift. Its multipliers come from float32 scale ratios cut to 16 bits. ``None``
    when TFLite refuses the parameters (an output multiplier of 1 or more).
    """
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(xp.scale))
    out_m, out_e = _int16_multiplier(float(np.float32(hires / np.float32(yp.scale))))
    if out_e > 0:
        return None
    relu_m, relu_e = _int16_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    q = np.arange(-128, 128, dtype=np.int64)
    value = _sat16(q - xp.zero_point)                        # int16 of (x - zp), |.| <= 255
    hires_value = value * 128                                # fits int16 (|.| <= 32640)
    preshift = _srdhm16(hires_value, out_m)
    reluish = hires_value
    if relu_e > 0:
        reluish = _sat16(reluish * (1 << (relu_e - 1)))
    reluish = _srdhm16(reluish, relu_m)
    if relu_e > 0:
        reluish = _sat16(reluish * 2)
    if relu_e < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_e)
    reluish = (reluish + (1 << 15)) >> 1
    prod = reluish * preshift
    preshift_out = np.where(prod >= 0, prod >> 15, -((-prod) >> 15))   # truncating division
    preshift_out = np.where((reluish == -32768) & (preshift == -32768), 32767, preshift_out)
    out = rounding_divide_by_pot(preshift_out.astype(np.int64), -out_e) + yp.zero_point
    return np.clip(out, yp.qmin, yp.qmax).astype(yp.dtype)


def sigmoid_nodes() -> np.ndarray:
    """The 256 interpolation nodes of TFLite's int16 LOGISTIC and TANH: ``sigmoid(i / 24)`` in
    0.16 fixed point, ``i = 0..255``.

    TFLite interpolates linearly between these nodes. They are not ``round(65536 * sigmoid)``:
    each node sits ``h^2 * |f''| / 16`` above the curve (``h = 1/24``), half the midpoint error
    of linear interpolation, the placement that balances the error over an interval. That
    offset, rounded, gives every node of TFLite's table (none is closer than 0.0039 to a .5 tie,
    so the float64 evaluation is safe); the last node is the uint16 maximum, 65535. The oracle
    test ``test_int16_logistic_tanh_every_input`` checks every interval against LiteRT.
    """
    s = 1.0 / (1.0 + np.exp(-np.arange(256, dtype=np.float64) / 24.0))
    second = s * (1.0 - s) * (1.0 - 2.0 * s) / 24.0 ** 2      # f''(i/24) * h^2
    nodes = np.round(65536.0 * (s - second / 16.0)).astype(np.int64)
    nodes[255] = 65535
    return nodes


def _checked_log2(x: float) -> tuple[bool, int]:
    """TFLite's ``CheckedLog2`` in float32: (|log2 x - round| < 1e-3, the rounded log2)."""
    log2 = np.float32(np.float32(np.log(np.float32(x))) * np.float32(1.0 / np.log(np.float32(2))))
    rounded = np.float32(round_half_away(np.float64(log2)))
    return bool(abs(np.float32(log2 - rounded)) < np.float32(1e-3)), int(rounded)


def tflite_int16_sigmoid_tanh_table(op: str, xp: QuantParams, yp: QuantParams
                                    ) -> np.ndarray | None:
    """TFLite's int16 LOGISTIC (``op == "Sigmoid"``) or TANH for every int16 input value.

    Prepare (activations.cc): with a power-of-two input scale (2^-12; TANH also 2^-11) the
    input is multiplied by ``3 << shift``; otherwise by ``M = (int)(s_in * 4096 * 3 * 2^k)``
    with ``k`` doubling M until it exceeds 16383.5, then shifted right by ``k`` with rounding.
    The kernel (reference_integer_ops::Logistic / Tanh) interpolates :func:`sigmoid_nodes` on
    the absolute value (9 fraction bits for LOGISTIC, 8 for TANH, as tanh(x) = 2 sigmoid(2x)
    - 1), mirrors negative inputs and rounds back to 16 bits. ``None`` when TFLite refuses the
    parameters (zero points not 0, output scale not 2^-15) or its int32 product would
    overflow: the caller then uses the float function.
    """
    if xp.dtype != "int16" or yp.dtype != "int16" or xp.zero_point or yp.zero_point:
        return None
    out_pot, out_log2 = _checked_log2(yp.scale)
    if not out_pot or out_log2 != -15 or (op == "Sigmoid" and
                                          np.float32(yp.scale) != np.float32(2.0 ** -15)):
        return None
    pot, log2 = _checked_log2(xp.scale)
    left = 12 + log2
    pot = pot and (left == 0 or (op == "Tanh" and left == 1))
    mult = 0
    if not pot:
        m = float(np.float32(xp.scale)) * 4096.0 * 3.0
        left = 0
        while m <= 32767.0 / 2.0 and left <= 30:
            left += 1
            m *= 2.0
        mult = int(m)
    if mult == 0:                      # power-of-two scale
        mult, left = 3 << left, 0
    half = (1 << (left - 1)) if left > 0 else 0
    if 32768 * mult + half > (1 << 31) - 1:
        return None                    # TFLite's int32 product would overflow
    x = np.arange(-32768, 32768, dtype=np.int64)
    v = (x * mult + half) >> left      # arithmetic shift, as on int32
    a = np.abs(v)
    nodes = sigmoid_nodes()
    frac_bits = 9 if op == "Sigmoid" else 8
    uh = a >> frac_bits
    inside = uh < 255
    k = np.where(inside, uh, 0)
    lo, hi = nodes[k], nodes[np.minimum(k + 1, 255)]
    r = (lo << frac_bits) + (a & ((1 << frac_bits) - 1)) * (hi - lo)
    if op == "Sigmoid":
        r = np.where(inside, r, 0x7FFF << 10)
        r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) >> 10
    else:
        r = np.where(inside, r, 0xFFFF << 8)
        r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1) >> 8
    return r.astype(np.int16)


def _libm(name: str) -> Callable[[float], float] | None:
    """The C library's float function ``name`` (``tanhf``, ``expm1f``, ``erff``...), or None.

    TFLite builds its tables with ``std::tanh(float)`` and friends, i.e. the C library's
    single-precision functions; numpy's float32 kernels may be vectorized implementations that
    differ from them in the last bit, which moves a table entry sitting on a rounding tie.
    """
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(path) if path else ctypes.CDLL(None)
        fn = getattr(lib, name)
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def float32_function(name: str, fallback: Callable[[np.ndarray], np.ndarray]
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """Elementwise float32 ``name`` from the C library (numpy ``fallback`` without one)."""
    fn = _libm(name)
    if fn is None:
        return lambda v: np.asarray(fallback(np.asarray(v, np.float32)), np.float32)
    return lambda v: np.array([fn(float(x)) for x in np.asarray(v, np.float32).reshape(-1)],
                              np.float32).reshape(np.shape(v))


def lut_populate(fn: Callable[[np.ndarray], np.ndarray], xp: QuantParams,
                 yp: QuantParams) -> np.ndarray:
    """TFLite's ``LUTPopulate`` for 8-bit tables (ELU, GELU...), all in float32.

    ``dequantized = s_in * (q - zp_in)``, ``rescaled = round(f(dequantized) * (1 / s_out))``
    (a float32 product with the float32 reciprocal, not a division), ``(int32)(rescaled +
    zp_out)``, clamped. A value beyond int32 (or NaN) converts as x86's ``cvttss2si`` does, to
    INT32_MIN, which the clamp makes the type's minimum.
    """
    info = np.iinfo(xp.dtype)
    q = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    real = (np.float32(xp.scale) * (q - xp.zero_point).astype(np.float32)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        f = np.asarray(fn(real)).astype(np.float32)
        rescaled = (f * (np.float32(1.0) / np.float32(yp.scale))).astype(np.float32)
        rounded = round_half_away(rescaled.astype(np.float64)).astype(np.float32)
        total = (rounded + np.float32(yp.zero_point)).astype(np.float64)
    fits = np.isfinite(total) & (total >= -2.0 ** 31) & (total < 2.0 ** 31)
    ints = np.where(fits, np.trunc(np.where(fits, total, 0.0)), float(-(1 << 31)))
    return np.clip(ints.astype(np.int64), yp.qmin, yp.qmax).astype(yp.dtype)


def lut_populate_int16(fn: Callable[[np.ndarray], np.ndarray], xp: QuantParams,
                       yp: QuantParams) -> np.ndarray:
    """TFLite's int16 ``LUTPopulate`` and ``LUTLookup`` (GELU on 16x8), for every input value.

    ``LUTPopulateInt16`` samples ``f`` in float32 at 513 points evenly spread over the input
    range and stores each sample on the output scale (no zero point: 16x8 is symmetric),
    lowered by half the rounded error that linear interpolation makes at the interval's
    midpoint. ``LUTLookup`` indexes it with the high 9 bits of the input and interpolates with
    the low 7: ``base + ((slope * (x & 127) + 64) >> 7)``, wrapped to int16.
    """
    f32 = np.float32

    def rnd(v: np.ndarray) -> np.ndarray:            # roundf: half away from zero, in float32
        return round_half_away(np.asarray(v, np.float64)).astype(f32)

    s_in, s_out = f32(xp.scale), f32(yp.scale)
    in_min = f32(s_in * f32(-32768 - xp.zero_point))
    in_max = f32(s_in * f32(32767 - xp.zero_point))
    out_min = f32(s_out * f32(-32768 - yp.zero_point))
    out_max = f32(s_out * f32(32767 - yp.zero_point))
    step = f32((in_max - in_min) / f32(512))
    half = f32(step / f32(2))
    inv = f32(f32(65536) / f32(out_max - out_min))
    i = np.arange(512, dtype=f32)
    at = (in_min + (i * step).astype(f32)).astype(f32)
    nxt = (in_min + ((i + f32(1)) * step).astype(f32)).astype(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        val = np.asarray(fn(at), f32)
        mid = np.asarray(fn((at + half).astype(f32)), f32)
        val_next = np.asarray(fn(nxt), f32)
        last = np.asarray(fn(np.array([in_max], f32)), f32)
        sample = rnd((val * inv).astype(f32))
        interp = rnd(((val_next * inv).astype(f32) + sample).astype(f32) / f32(2))
        err = (interp - rnd((mid * inv).astype(f32))).astype(f32)
        lut = np.clip((sample - rnd(err / f32(2))).astype(f32), -32768, 32767)
        end = np.clip(rnd((last * inv).astype(f32)), -32768, 32767)
    table = np.concatenate([lut, end]).astype(np.int64)        # 513 entries
    x = np.arange(-32768, 32768, dtype=np.int64)
    index = 256 + (x >> 7)
    base, slope = table[index], table[index + 1] - table[index]
    y = base + ((slope * (x & 0x7F) + 64) >> 7)
    return (((y + 32768) & 0xFFFF) - 32768).astype(np.int16)


def leaky_relu_table(xp: QuantParams, yp: QuantParams, alpha: float, rule: str,
                     arith: Arithmetic) -> np.ndarray:
    """TFLite's ``QuantizeLeakyRelu`` for every input value (one table, the exact integers).

    The kernel rescales ``x - zp_in`` by an identity multiplier (``s_in / s_out``) where it
    is non-negative and by an alpha multiplier (``s_in * alpha / s_out``) elsewhere, both
    computed in float32 (LeakyReluPrepare), then adds the output zero point and saturates.
    """
    s_in, s_out = np.float32(xp.scale), np.float32(yp.scale)
    identity = multiplier(float(np.float32(s_in / s_out)), arith, rule)
    slope = multiplier(float(np.float32(np.float32(s_in * np.float32(alpha)) / s_out)), arith,
                       rule)
    info = np.iinfo(xp.dtype)
    x = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64) - xp.zero_point
    pos = rescale(x, np.int64(identity[0]), np.int64(identity[1]), rule)
    neg = rescale(x, np.int64(slope[0]), np.int64(slope[1]), rule)
    out = np.where(x >= 0, pos, neg) + yp.zero_point
    return np.clip(out, yp.qmin, yp.qmax).astype(yp.dtype)


def inv_sqrt_multiplier(value: np.ndarray, reverse_shift: int = -1
                        ) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's ``GetInvSqrtQuantizedMultiplierExp``: ``1 / sqrt(value)`` of positive int32
    values as ``(multiplier, shift)`` (shift times ``reverse_shift``: -1 gives a left shift).

    The value is normalized by bit pairs into [2^27, 2^29), read as a Q3.28 number halved, and
    five Newton-Raphson steps ``x = 1.5·x - (v/2)·x³`` run from ``x = 1`` in gemmlowp fixed point
    (every product SaturatingRoundingDoublingHighMul, the Q6/Q9 results shifted back to Q3 with
    saturation, the difference wrapping); the result is multiplied by √2/2 in Q0.31. Values 0
    and 1 give ``(2^31 - 1, 0)``.
    """
    from ortnpu.domain.arith import INT32_MAX, saturating_rounding_doubling_high_mul, wrap_int32
    from ortnpu.domain.fixed_point import count_leading_zeros32, saturating_left_shift

    mul = saturating_rounding_doubling_high_mul
    v = np.asarray(value, np.int64).copy()
    small = v <= 1
    v = np.where(small, 2, v)
    shift = np.full(v.shape, 11, np.int64)
    while np.any(big := v >= (1 << 29)):
        v = np.where(big, v // 4, v)
        shift = shift + big
    pairs = (count_leading_zeros32(v) - 1) // 2 - 1
    shift = shift - pairs
    v = v << (2 * pairs)
    half_input = rounding_divide_by_pot(v >> 1, 1)
    half_three = np.int64((1 << 28) + (1 << 27))
    x = np.full(v.shape, 1 << 28, np.int64)
    for _ in range(5):
        x3 = saturating_left_shift(mul(mul(x, x), x), 6)
        x = saturating_left_shift(wrap_int32(mul(half_three, x) - mul(half_input, x3)), 3)
    x = mul(x, np.int64(1518500250))
    x = np.where(shift < 0, wrap_int32(x << np.maximum(-shift, 0)), x)
    shift = np.maximum(shift, 0) * reverse_shift
    return np.where(small, INT32_MAX, x), np.where(small, 0, shift)


def rsqrt_int8_table(xp: QuantParams, yp: QuantParams) -> np.ndarray:
    """TFLite's int8 RSQRT (elementwise.cc ``RsqrtEvalQuantizedInt8``) for every input value.

    ``v = q - zp_in``; ``v = 0`` gives the type's maximum; otherwise
    ``data = MBQM(1, inv_sqrt(v), inv_shift + 20)`` (1/√v with 20 fractional bits) and
    ``y = MBQM(data, M, shift - 20) + zp_out``, saturated, where ``(M, shift)`` quantizes
    ``1 / (sqrtf(s_in) · s_out)`` (a float32 square root and product, the division in
    double). TFLite refuses inputs below the zero point at run time; their entries here are
    the type's maximum (the value of ``v = 0``).
    """
    s = np.float32(np.sqrt(np.float32(xp.scale)) * np.float32(yp.scale))
    m, e = quantize_multiplier(1.0 / float(s))
    info = np.iinfo(xp.dtype)
    v = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64) - xp.zero_point
    inv, inv_shift = inv_sqrt_multiplier(np.maximum(v, 1))
    data = rescale(np.ones_like(v), inv, inv_shift + 20, "tflite_double")
    y = rescale(data, np.int64(m), np.int64(e - 20), "tflite_double") + yp.zero_point
    y = np.where(v <= 0, yp.qmax, y)
    return np.clip(y, yp.qmin, yp.qmax).astype(yp.dtype)


def rsqrt_int16_table(xp: QuantParams, yp: QuantParams) -> np.ndarray:
    """TFLite's int16 RSQRT: ``LUTPopulate<int16_t>`` of ``1.0f / std::sqrt(v)`` (``v <= 0``
    gives ``32767 · s_out``), looked up and interpolated as every int16 table
    (:func:`lut_populate_int16`). Zero points are 0."""
    f32 = np.float32
    top = f32(f32(32767) * f32(yp.scale))

    def fn(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, f32)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (f32(1) / np.sqrt(np.where(v > 0, v, f32(1)))).astype(f32)
        return np.where(v <= 0, top, r).astype(f32)

    return lut_populate_int16(fn, xp, yp)


def sqrt_table(xp: QuantParams, yp: QuantParams) -> np.ndarray:
    """TFLite's quantized SQRT (``SqrtEvalQuantized``, int8 and int16) for every input value:
    ``(int)(sqrtf(s_in · (q - zp_in)) / s_out) + zp_out`` in float32, truncated toward zero,
    saturated. TFLite refuses negative inputs at run time; their entries here are the zero
    point's (the square root of 0)."""
    f32 = np.float32
    info = np.iinfo(xp.dtype)
    q = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    real = (f32(xp.scale) * (q - xp.zero_point).astype(f32)).astype(f32)
    root = np.sqrt(np.maximum(real, f32(0))).astype(f32)
    out = np.trunc((root / f32(yp.scale)).astype(f32)).astype(np.int64) + yp.zero_point
    return np.clip(out, yp.qmin, yp.qmax).astype(yp.dtype)
