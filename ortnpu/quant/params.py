"""Quantization parameters chosen from calibration ranges and the target's arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ortnpu.domain.arith import quantize_multiplier, rescale_bounds, round_half_away
from ortnpu.errors import UnsupportedError
from ortnpu.target import Arithmetic, integer_range


@dataclass(frozen=True)
class QuantParams:
    """Affine parameters of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int
    dtype: str  # numpy dtype name: int8, uint8, int16

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float to integer, rounding half away from zero (as TFLite's converter)."""
        q = round_half_away(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((np.asarray(q, np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype}


def _pow2_ceil(x: float) -> float:
    return float(2.0 ** math.ceil(math.log2(x)))


def activation_params(lo: float, hi: float, arith: Arithmetic, *,
                      unsigned: bool = False, bits: int | None = None) -> QuantParams:
    """Scale and zero point of an activation with calibrated range ``[lo, hi]``.

    The range always contains 0 so that zero (padding) is exact. ``unsigned`` selects the
    unsigned range used after a ReLU on targets with ``unsigned_after_relu``. ``bits=16`` on an
    8-bit target gives TFLite's 16x8 form (symmetric int16, zero point 0) for mixed precision.
    """
    if bits is not None and bits != arith.activation_bits:
        import dataclasses

        arith = dataclasses.replace(arith, activation_bits=bits, activation_signed=True,
                                    activation_symmetric=True, activation_narrow_range=False)
        unsigned = False
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UnsupportedError(f"calibrated range [{lo}, {hi}] is not finite")
    bits = arith.activation_bits
    if unsigned:
        qmin, qmax = integer_range(bits, False)
        dtype = f"uint{bits}"
    else:
        qmin, qmax = arith.activation_range
        dtype = f"int{bits}"
    if hi - lo < 1e-12:
        hi = lo + 1e-6  # constant tensor: any scale represents it; keep it tiny but valid
    if unsigned or arith.activation_symmetric:
        top = max(abs(lo), abs(hi))
        scale = top / qmax
        zp = 0
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = None
    if arith.power_of_two_scales:
        scale = _pow2_ceil(scale)
    scale = float(np.float32(scale))
    if zp is None:
        zp = int(np.clip(round_half_away(qmin - lo / scale), qmin, qmax))
    return QuantParams(scale=scale, zero_point=zp, dtype=dtype)


def weight_params(w: np.ndarray, arith: Arithmetic, per_channel: bool,
                  axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weight quantization: ``(int8 weights, float scales per channel or [1])``."""
    wlo, whi = arith.weight_range
    w = np.asarray(w, np.float64)
    if per_channel:
        reduce = tuple(d for d in range(w.ndim) if d != axis)
        top = np.abs(w).max(axis=reduce) if w.size else np.zeros(w.shape[axis])
    else:
        top = np.array([np.abs(w).max() if w.size else 0.0])
    scales = np.where(top > 0, top / whi, 1.0)
    if arith.power_of_two_scales:
        scales = np.array([_pow2_ceil(s) for s in scales])
    scales = scales.astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = np.clip(round_half_away(w / scales.reshape(shape)), wlo, whi).astype(np.int8)
    return q, scales


def fit_bias(w: np.ndarray, q: np.ndarray, scales: np.ndarray, bias: np.ndarray | None,
             x_scale: float, bias_bits: int, arith: Arithmetic, axis: int = 0,
             y_scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights whose scales leave the bias room in ``bias_bits`` (TFLite's converter does the
    same, ``AdjustWeightsForBiasScale``).

    The bias is stored in accumulator units ``b / (s_x · s_w)``: a channel whose weights are
    all but zero (a dead channel, a channel scaled by a learned factor near 0) gets a tiny
    ``s_w`` and a bias that saturates the integer (PP-OCRv4's recognizer: ``s_w = 7e-19``
    beside a bias of 4.6), so the channel's output lost its bias. Such a channel takes the
    smallest scale at which the bias needs at most half the integer range, rounded up to a
    power of two on targets with power-of-two scales, and its weights are requantized on it.
    With ``y_scale``, the scale is also kept large enough that the channel's rescale
    ``s_x · s_w / s_y`` stays above ``2^-30`` (TFLite's multipliers end near ``2^-31``; below,
    the multiplier is 0 and the channel's output is 0 whatever its bias).

    Returns:
        ``(q, scales)``, unchanged when every bias fits.
    """
    if bias is None or not np.size(bias):
        return q, scales
    b = np.abs(np.asarray(bias, np.float64).reshape(-1))
    top = float(2 ** (bias_bits - 1) - 1) / 2
    need = b / (np.float64(x_scale) * top)
    if y_scale is not None:
        need = np.where(b > 0, np.maximum(need, 2.0 ** -30 * y_scale / np.float64(x_scale)), 0)
    need = np.full(1, need.max()) if scales.size == 1 else np.broadcast_to(need, scales.shape)
    if not (need > scales).any():
        return q, scales
    raised = np.maximum(scales, need)
    if arith.power_of_two_scales:
        raised = np.array([_pow2_ceil(s) if s > 0 else s for s in raised])
    raised = raised.astype(np.float32).astype(np.float64)
    wlo, whi = arith.weight_range
    shape = [1] * w.ndim
    if raised.size > 1:
        shape[axis] = -1
    requantized = np.clip(round_half_away(np.asarray(w, np.float64) / raised.reshape(shape)),
                          wlo, whi).astype(np.int8)
    # Only the raised channels are requantized: the others keep their integers, which may be
    # a learned rounding's (GPTQ's on every ReLU6 layer of EfficientNet-Lite0, whose dead
    # channels raise a scale, were all rounded to nearest again before)
    moved = np.broadcast_to(need > scales, raised.shape).reshape(shape)
    return np.where(moved, requantized, np.asarray(q)).astype(np.int8), raised


def bias_values(bias: np.ndarray | None, x_scale: float, w_scales: np.ndarray, channels: int,
                bias_bits: int) -> np.ndarray:
    """Bias in accumulator units, ``round(b / (s_x * s_w[c]))``, saturated to the bias width."""
    if bias is None:
        return np.zeros(channels, np.int64)
    s = np.float64(x_scale) * np.broadcast_to(w_scales, (channels,))
    q = round_half_away(np.asarray(bias, np.float64) / s)
    lo, hi = integer_range(bias_bits, True)
    return np.clip(q, lo, hi).astype(np.int64)


def rescale_rule(arith: Arithmetic, *, elementwise: bool = False) -> str:
    """The kernel ``rounding`` attribute for this target (elementwise ops use the 32-bit rule)."""
    if arith.rounding == "tflite_int64" and elementwise:
        return "tflite_double"
    return arith.rounding


def linear_rule(arith: Arithmetic, wide: bool) -> tuple[str, int, int]:
    """``(rounding, acc_bits, bias_bits)`` of a conv/matmul; ``wide`` when a 16-bit tensor is
    involved on an 8-bit target (mixed precision): TFLite's 16x8 kernels then apply."""
    if not wide or arith.accumulator_bits == 64:
        return arith.rounding, arith.accumulator_bits, arith.bias_bits
    rule = "tflite_int64" if arith.rounding.startswith("tflite") else arith.rounding
    return rule, 64, 64


def multiplier(real: float, arith: Arithmetic, rule: str) -> tuple[int, int]:
    """Represent a real multiplier as ``(M, shift)`` for the target's rescale mode.

    Returns:
        ``(M, shift)`` with ``real ≈ M * 2**shift`` (half_up) or TFLite's ``M * 2**(shift-31)``.
    """
    if not math.isfinite(real) or real < 0:
        raise UnsupportedError(f"rescale multiplier {real!r} is not a finite non-negative number")
    if rule.startswith("tflite"):
        qm, shift = quantize_multiplier(real, single_rounding=(rule == "tflite_single"))
        lo, hi = rescale_bounds(rule)[1]
        if not lo <= shift <= hi:
            raise UnsupportedError(f"the rescale multiplier {real:.6g} is outside what rounding "
                                   f"{rule!r} represents (shift {shift} not in [{lo}, {hi}])")
        return qm, shift
    if real == 0.0:
        return 0, 0
    mode = arith.rescale
    if mode == "single_shift" and real <= 1.0:
        shift = round(math.log2(real))
        return 1, max(shift, -62)
    if mode == "double_shift" and real <= 1.0:
        best = None
        for n in range(0, 40):
            for m in range(n + 1, n + 16):
                approx = 2.0 ** -n + 2.0 ** -m
                err = abs(approx - real)
                if best is None or err < best[0]:
                    best = (err, n, m)
        _, n, m = best
        return (1 << (m - n)) + 1, -m
    shift_modes = ("fixed_point16", "single_shift", "double_shift")  # α > 1 falls back to 16 bits
    bits = 16 if mode in shift_modes else arith.multiplier_bits
    q, e = math.frexp(real)
    mant = int(round_half_away(q * (1 << (bits - 1))))
    shift = e - (bits - 1)
    if mant == 1 << (bits - 1):
        mant //= 2
        shift += 1
    if shift < -62:
        return 0, 0
    return mant, min(shift, 31)
