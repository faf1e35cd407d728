"""The arithmetic a suite of conformance cases is generated with.

A target's cases must use the target's own arithmetic (types, rounding, accumulator width,
per-channel parameters, Add's left shift), otherwise the kit would test numbers the target never
produces. :class:`Profile` is that arithmetic reduced to what the case builders need; it comes
from a :class:`~ortnpu.target.Target` or, for the target-independent ``rule-*`` suites that cover
every rounding rule, from :func:`rule_profile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ortnpu.domain.arith import (
    INT32_MAX,
    ROUNDING_RULES,
    quantize_multiplier,
    rescale_bounds,
    round_half_away,
)
from ortnpu.target import Target, integer_range


@dataclass(frozen=True)
class Profile:
    """Integer arithmetic of one suite.

    Attributes:
        suite: name of the suite (a target name, or ``rule-<rounding>``).
        rounding: rescale rule of every op (see ``arith.ROUNDING_RULES``).
        act: activation dtype of inputs and outputs.
        relu_out: output dtype of a layer with a fused ReLU (uint8 on N2D2, else ``act``).
        acc_bits: accumulator width of Conv/FullyConnected/MatMul.
        bias_bits: width the bias values must fit.
        per_channel: weights (hence multipliers and shifts) per output channel.
        symmetric: activation zero points are 0.
        act_range: activation range (narrow on N2D2).
        weight_range: weight range.
        add_left_shift: Add's common left shift.
        multiplier_mode: ``fixed_point`` (32-bit), ``fixed_point16``, ``single_shift`` (m = 1,
            right shifts) or ``double_shift`` (m = 2^a + 1).
        multiplier_bits: bits of the multiplier (sign included).
        sub_negate: where Sub negates b (``multiplier``: TFLite, ``result``: TOSA).
    """

    suite: str
    rounding: str
    act: np.dtype
    relu_out: np.dtype
    acc_bits: int
    bias_bits: int
    per_channel: bool
    symmetric: bool
    act_range: tuple[int, int]
    weight_range: tuple[int, int]
    add_left_shift: int
    multiplier_mode: str = "fixed_point"
    multiplier_bits: int = 32
    sub_negate: str = "multiplier"

    @property
    def shift_bounds(self) -> tuple[int, int]:
        """Allowed shifts of the rounding rule (and of the multiplier mode)."""
        lo, hi = rescale_bounds(self.rounding)[1]
        if self.multiplier_mode in ("single_shift", "double_shift"):
            lo, hi = max(lo, -31), 0
        return lo, hi

    @property
    def bias_range(self) -> tuple[int, int]:
        """Range of bias values."""
        return integer_range(self.bias_bits, True)

    def relu_range(self, zp: int = 0) -> tuple[int, int]:
        """Clamp bounds of a fused ReLU with output zero point ``zp``."""
        if self.relu_out != self.act:
            return integer_range(8 * self.relu_out.itemsize, False)
        return max(zp, self.act_range[0]), self.act_range[1]

    def quantize(self, real: float) -> tuple[int, int]:
        """Represent a real multiplier as ``(multiplier, shift)`` in this arithmetic.

        The result is what the target's quantizer would store: TFLite's QuantizeMultiplier for
        the fixed-point rules, a power of two for single-shift, ``2^a + 1`` times a power of two
        for double-shift, a ``multiplier_bits`` integer for ``half_up`` fixed point.
        """
        real = max(real, 1e-12)
        lo, hi = self.shift_bounds
        if self.multiplier_mode == "single_shift":
            return 1, int(min(max(round(math.log2(real)), lo), hi))
        if self.multiplier_mode == "double_shift":
            # 2^n + 2^m = 2^m (2^(n-m) + 1): the largest such value not above real.
            e = math.floor(math.log2(real))
            m, s = 1, e
            for gap in range(1, 8):
                if (1 + 2.0 ** -gap) * 2.0 ** e <= real:
                    m, s = (1 << gap) + 1, e - gap
                    break
            return m, int(min(max(s, lo), hi))
        if self.rounding in ("half_up", "tosa_double"):
            bits = self.multiplier_bits - 1
            frac, e = math.frexp(real)
            m = round(frac * (1 << bits))
            s = e - bits
            if m == 1 << bits:
                m, s = m >> 1, s + 1
            return _fit(m, s, real, 0, lo, hi, (1 << bits) - 1)
        qm, s = quantize_multiplier(real, single_rounding=self.rounding == "tflite_single")
        return _fit(qm, s, real, 31, lo, hi, INT32_MAX)

    def multiplier_grid(self) -> list[tuple[int, int]]:
        """Every shift of the rule combined with edge multipliers: the rescale sweep."""
        lo, hi = self.shift_bounds
        if self.multiplier_mode == "single_shift":
            return [(1, s) for s in range(lo, hi + 1)]
        if self.multiplier_mode == "double_shift":
            return [(m, s) for m in (3, 5, 129) for s in range(lo, hi + 1)]
        if self.rounding in ("half_up", "tosa_double"):
            top = (1 << (self.multiplier_bits - 1)) - 1
            mults = sorted({top, 1 << (self.multiplier_bits - 2), 3, 1, -(top + 1), -3})
        else:
            mults = [(1 << 31) - 1, 1 << 30, 3 << 29, 1518500250, (1 << 30) + 1]
        return [(m, s) for m in mults for s in range(lo, hi + 1)]


def _fit(m: int, s: int, real: float, base: int, lo: int, hi: int, top: int) -> tuple[int, int]:
    """Keep ``(m, s)`` inside the rule's shift range: a too small multiplier uses the smallest
    shift with fewer multiplier bits, a too large one saturates."""
    if m == 0 or s < lo:
        return int(round_half_away(real * 2.0 ** (base - lo))), lo
    if s > hi:
        return top, hi
    return m, s


def profile_of(target: Target) -> Profile:
    """The arithmetic of a target."""
    a = target.arithmetic
    act = np.dtype(a.activation_dtype)
    relu_out = np.dtype(f"uint{a.activation_bits}") if a.unsigned_after_relu else act
    mode = a.rescale
    if a.power_of_two_scales and mode == "fixed_point":
        mode = "single_shift"
    return Profile(suite=target.name, rounding=a.rounding, act=act, relu_out=relu_out,
                   acc_bits=a.accumulator_bits, bias_bits=a.bias_bits,
                   per_channel=a.per_channel, symmetric=a.activation_symmetric,
                   act_range=a.activation_range, weight_range=a.weight_range,
                   add_left_shift=a.add_left_shift, multiplier_mode=mode,
                   multiplier_bits=a.multiplier_bits, sub_negate=a.sub_negate)


def rule_profile(rounding: str, act: np.dtype | str = "int8", acc_bits: int = 32) -> Profile:
    """A target-independent profile exercising one rounding rule with the whole domain range."""
    if rounding not in ROUNDING_RULES:
        raise ValueError(f"unknown rounding rule {rounding!r}")
    act = np.dtype(act)
    info = np.iinfo(act)
    return Profile(suite=f"rule-{rounding}", rounding=rounding, act=act, relu_out=act,
                   acc_bits=acc_bits, bias_bits=acc_bits, per_channel=True, symmetric=False,
                   act_range=(int(info.min), int(info.max)), weight_range=(-128, 127),
                   add_left_shift=20 if act.itemsize == 1 else 15)
