"""Softmax over the last axis: TFLite's integer reference algorithms (8-bit and int16)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain import fixed_point as fp
from ortnpu.domain.arith import (
    rescale_tflite_double,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from ortnpu.domain.spec import Attr, Input, OpSpec
from ortnpu.errors import KernelError

#: Longest row. 8-bit: with 512 values at the row maximum the sum of exponentials (Q12.19)
#: reaches 2^28 and TFLite's final shift exceeds 31 bits (its reference kernel aborts on
#: TFLITE_CHECK(exponent <= 31)); 511 values are always safe. int16: the sum of Q0.15 values
#: fits int32 up to 65536 ones.
MAX_DEPTH = {1: 511, 2: 65536}


class Softmax(OpSpec):
    """Softmax along the last axis, as TFLite's reference SOFTMAX computes it on integers."""

    name = "Softmax"
    tflite = ("SOFTMAX. 8-bit (reference_ops::Softmax, the kernel the reference resolver runs): "
              "diff = x - max(row); rows with diff < diff_min count as 0; exp of "
              "MultiplyByQuantizedMultiplierGreaterThanOne(diff) read as Q5.26 with gemmlowp's "
              "exp_on_negative_values, the sum in Q12.19, 1/sum with GetReciprocal (Newton-"
              "Raphson); multiplier from PreprocessSoftmaxScaling(beta, s_in, 5), diff_min = "
              "-CalculateInputRadius(5, shift). int16 (reference_ops::SoftmaxInt16): exp and "
              "1/(1+x) from two 513-entry tables (gen_lut in double) with linear "
              "interpolation; multiplier QuantizeMultiplier(s_in·beta / (10/65535)).")
    doc = ("Per row r of the last axis, d = x - max(r). 8-bit x: e = exp_on_negative_values("
           "SRDHM(d · 2^shift, multiplier)) (Q0.31) where d ≥ diff_min; S = Σ RDBPOT(e, 12); "
           "(R, k) = GetReciprocal(S, 12); y = clamp(RDBPOT(SRDHM(R, e), k + 23) + min(type)), "
           "min(type) where d < diff_min (output scale 1/256, zero point min(type)). int16 x: "
           "e = lut(exp, clamp(rescale(d, multiplier, shift) + 32767)); S = Σ e; h = clz(S); "
           "R = lut(1/(1+x), clamp((((S << (h-1)) + 2^13) >> 14) - 98304)); "
           "y = clamp((e·R + 2^(30-h)) >> (31-h), 0, 32767) (output scale 1/32768, zero "
           "point 0).")
    inputs = (Input("x", "act", "input, normalized along its last axis"),)
    attrs = (
        Attr("multiplier", int, 0, "fixed-point multiplier of beta · s_in", lo=0,
             hi=(1 << 31) - 1),
        Attr("shift", int, 0, "8-bit: left shift (0..31); int16: signed shift of the rescale",
             lo=-31, hi=31),
        Attr("diff_min", int, 0, "8-bit: smallest difference to the row maximum that counts",
             lo=-(1 << 31), hi=0),
    )
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x = arrays[0]
        if x.ndim < 1:
            raise KernelError(f"{where}{cls.name}: x must have at least one axis")
        limit = MAX_DEPTH[x.dtype.itemsize]
        if x.shape[-1] > limit:
            raise KernelError(f"{where}{cls.name}: rows of {x.shape[-1]} values exceed the "
                              f"{limit} TFLite's {x.dtype.itemsize * 8}-bit softmax computes "
                              "for every input")
        if x.dtype.itemsize == 1:
            if a["shift"] < 0:
                raise KernelError(f"{where}{cls.name}: an 8-bit softmax needs a left shift "
                                  f"(shift ≥ 0), got {a['shift']}")
            if -a["diff_min"] * (1 << a["shift"]) >= (1 << 31):
                raise KernelError(f"{where}{cls.name}: diff_min {a['diff_min']} shifted by "
                                  f"{a['shift']} leaves the int32 range")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x = arrays[0].astype(np.int64)
        if x.size == 0:
            return np.empty(x.shape, out_dtype)
        diff = x - x.max(axis=-1, keepdims=True)
        if arrays[0].dtype.itemsize == 2:
            return softmax_int16(diff, a["multiplier"], a["shift"]).astype(out_dtype)
        return softmax_8bit(diff, a["multiplier"], a["shift"], a["diff_min"],
                            out_dtype).astype(out_dtype)


def softmax_8bit(diff: np.ndarray, multiplier: int, shift: int, diff_min: int,
                 out_dtype: np.dtype) -> np.ndarray:
    """reference_ops::Softmax on the differences to the row maximum (last axis)."""
    counted = diff >= diff_min
    scaled = saturating_rounding_doubling_high_mul(np.where(counted, diff, 0) << shift,
                                                   multiplier)
    e = fp.exp_on_negative_values(scaled, 5)
    total = wrap_int32(np.where(counted, rounding_divide_by_pot(e, 12), 0)
                       .sum(axis=-1, keepdims=True))
    reciprocal, over = fp.get_reciprocal(total, 12)
    lo, hi = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    out = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(reciprocal, e),
                                 over + 31 - 8 * np.dtype(out_dtype).itemsize) + lo
    return np.where(counted, np.clip(out, lo, hi), lo)


def softmax_int16(diff: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """reference_ops::SoftmaxInt16 on the differences to the row maximum (last axis)."""
    exp_lut, recip_lut = fp.softmax_int16_tables()
    scaled = rescale_tflite_double(diff, np.int64(multiplier), np.int64(shift))
    e = fp.lut_lookup_int16(np.clip(scaled + 32767, -32768, 32767), exp_lut)
    total = e.sum(axis=-1, keepdims=True)
    headroom = fp.count_leading_zeros32(total)
    shifted = ((total << (headroom - 1)) + (1 << 13)) >> 14
    reciprocal = fp.lut_lookup_int16(
        np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), recip_lut)
    right = 31 - headroom
    out = (e * reciprocal + (np.int64(1) << (right - 1))) >> right
    return np.clip(out, 0, 32767)


def int16_floor_share(depth: int) -> float:
    """Share of the sum that TFLite's int16 SOFTMAX gives to the rest of a confident row.

    Its exp table starts at exp(-10): every value 10 or more below the row maximum (in units
    of beta · input) reads as the table's first entry (2 of 32767) instead of about 0. On a
    row with one clear maximum the other ``depth - 1`` values add up to this share of the sum,
    and the largest probability reads ``1 - share`` instead of 1.00 (6625 values: 0.29).
    """
    exp_lut, _ = fp.softmax_int16_tables()
    peak = int(fp.lut_lookup_int16(np.array([32767]), exp_lut)[0])
    floor = int(fp.lut_lookup_int16(np.array([-32768]), exp_lut)[0])
    rest = (max(depth, 1) - 1) * floor
    return rest / (peak + rest)


def softmax_params(input_scale: float, dtype: np.dtype, beta: float = 1.0
                   ) -> dict[str, int] | str:
    """``multiplier``/``shift``/``diff_min`` of a softmax of inputs on ``input_scale``, as
    TFLite's SoftmaxPrepare computes them (``input_scale`` as the float32 it stores), or why
    TFLite refuses the scale."""
    from ortnpu.domain.arith import quantize_multiplier

    scale = float(np.float32(input_scale))
    if np.dtype(dtype).itemsize == 2:
        mult, shift = quantize_multiplier(scale * beta / (10.0 / 65535.0))
        if not -31 <= shift <= 31:
            return (f"the input scale {scale:g} gives a rescale shift {shift} outside "
                    "[-31, 31]")
        return {"multiplier": mult, "shift": shift, "diff_min": 0}
    real = min(beta * scale * float(1 << 26), float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    if shift < 0:
        return (f"the input scale {scale:g} is below 2^-26: TFLite's 8-bit softmax needs a "
                "multiplier above one (QuantizeMultiplierGreaterThanOne)")
    radius = math.floor(31.0 * float(1 << 26) / float(1 << shift))
    return {"multiplier": mult, "shift": shift, "diff_min": -radius}
