"""Lookup tables of the ``Lut`` op: one output per input value, built as TFLite builds them.

A table is the whole function of an elementwise op on one quantized input, so the table decides
every output bit. TFLite builds most int8 tables in float32 (``LUTPopulate``) but computes
HARD_SWISH in 16-bit fixed point; the builders here follow the reference kernel of each op and
are checked against LiteRT's reference kernels by tests/oracle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ortnpu.domain.arith import quantize_multiplier, rounding_divide_by_pot
from ortnpu.quant.params import QuantParams


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
