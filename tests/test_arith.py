"""The rescale rules against independent big-integer statements of the same formulas."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ortnpu.domain import arith

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def c_div(a: int, b: int) -> int:
    """C's truncating integer division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm_bigint(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    p = a * b
    return c_div(p + ((1 << 30) if p >= 0 else 1 - (1 << 30)), 1 << 31)


def round_half_away(fr: Fraction) -> int:
    f = abs(fr)
    n = int(f + Fraction(1, 2))
    return n if fr >= 0 else -n


def wrap32(x: int) -> int:
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


def tflite_double_bigint(x: int, qm: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return round_half_away(Fraction(srdhm_bigint(wrap32(x << left), qm), 1 << right))


EDGE_X = [0, 1, -1, 2, -2, 127, -128, 255, 32767, -32768, 1 << 20, -(1 << 20), I32_MAX, I32_MIN,
          I32_MAX - 1, I32_MIN + 1, 12345678, -87654321]
EDGE_M = [0, 1, 1 << 30, (1 << 30) + 1, I32_MAX, I32_MAX - 1, 1518500250, 1 << 15]


def test_srdhm_matches_bigint_including_saturation_and_ties() -> None:
    rng = np.random.default_rng(0)
    xs = EDGE_X + [int(v) for v in rng.integers(I32_MIN, I32_MAX, 300)]
    ms = EDGE_M + [I32_MIN, -5] + [int(v) for v in rng.integers(I32_MIN, I32_MAX, 30)]
    a = np.array([x for x in xs for _ in ms], np.int64)
    b = np.array([m for _ in xs for m in ms], np.int64)
    got = arith.saturating_rounding_doubling_high_mul(a, b)
    want = [srdhm_bigint(int(x), int(m)) for x, m in zip(a, b, strict=True)]
    assert got.tolist() == want
    # exact ties: a*b = ±2^30 rounds up (toward +infinity), as gemmlowp does
    assert arith.saturating_rounding_doubling_high_mul(np.int64(1 << 15), np.int64(1 << 15)) == 1
    assert arith.saturating_rounding_doubling_high_mul(np.int64(-(1 << 15)),
                                                       np.int64(1 << 15)) == 0


@pytest.mark.parametrize("exponent", range(0, 32))
def test_rounding_divide_by_pot_is_half_away_from_zero(exponent: int) -> None:
    d = 1 << exponent
    xs = [0, 1, -1, d // 2, -(d // 2), d // 2 - 1, -(d // 2) + 1, d + d // 2, -(d + d // 2),
          3 * d // 2 + 1, I32_MAX, I32_MIN, 123456789, -123456789]
    got = arith.rounding_divide_by_pot(np.array(xs, np.int64), exponent)
    assert got.tolist() == [round_half_away(Fraction(x, d)) for x in xs]


def test_quantize_multiplier_known_values() -> None:
    assert arith.quantize_multiplier(0.5) == (1 << 30, 0)
    assert arith.quantize_multiplier(1.0) == (1 << 30, 1)
    assert arith.quantize_multiplier(0.75) == (3 << 29, 0)
    assert arith.quantize_multiplier(1 - 2.0 ** -40) == (1 << 30, 1)   # rounds to 2^31: halved
    assert arith.quantize_multiplier(2.0 ** -40) == (0, 0)              # shift < -31
    assert arith.quantize_multiplier(0.0) == (0, 0)
    assert arith.quantize_multiplier(2.0 ** 40, single_rounding=True) == (I32_MAX, 30)
    qm, shift = arith.quantize_multiplier(0.0123)
    assert (1 << 30) <= qm < (1 << 31)
    assert abs(qm * 2.0 ** (shift - 31) - 0.0123) < 1e-11


@pytest.mark.parametrize("shift", range(-31, 32))
def test_tflite_double_every_shift(shift: int) -> None:
    rng = np.random.default_rng(shift + 100)
    xs = EDGE_X + [int(v) for v in rng.integers(-(1 << 20), 1 << 20, 40)]
    for qm in (1 << 30, I32_MAX, 1518500250):
        got = arith.rescale_tflite_double(np.array(xs, np.int64), np.int64(qm), np.int64(shift))
        assert got.tolist() == [tflite_double_bigint(x, qm, shift) for x in xs]


@pytest.mark.parametrize("shift", range(-31, 31))
def test_tflite_single_every_shift(shift: int) -> None:
    xs = [x for x in EDGE_X]
    for qm in (1 << 30, I32_MAX, 1 << 15):
        got = arith.rescale_tflite_single(np.array(xs, np.int64), np.int64(qm), np.int64(shift))
        total = 31 - shift
        want = [min(max((x * qm + (1 << (total - 1))) >> total, I32_MIN), I32_MAX) for x in xs]
        assert got.tolist() == want


@pytest.mark.parametrize("shift", range(-31, 8))
def test_tflite_int64_every_shift(shift: int) -> None:
    xs = [*EDGE_X, (1 << 47) - 1, -(1 << 47), 1 << 50, -(1 << 50)]
    for qm in (1 << 30, I32_MAX, 0x7FFF0000, 0x7FFEFFFF, 1 << 15):
        got = arith.rescale_tflite_int64(np.array(xs, np.int64), np.int64(qm), np.int64(shift))
        reduced = (qm + (1 << 15)) >> 16 if qm < 0x7FFF0000 else 0x7FFF
        total = 15 - shift
        want = []
        for x in xs:
            x = min(max(x, -(1 << 47)), (1 << 47) - 1)
            r = (x * reduced + (1 << (total - 1))) >> total
            want.append(min(max(r, I32_MIN), I32_MAX))
        assert got.tolist() == want


@pytest.mark.parametrize("shift", [*list(range(-62, 32, 3)), -1, 0, 1])
def test_half_up_every_shift(shift: int) -> None:
    xs = EDGE_X
    for m in (1, 3, 5, (1 << 15) - 1, I32_MAX, -7):
        got = arith.rescale_half_up(np.array(xs, np.int64), np.int64(m), np.int64(shift))
        want = []
        for x in xs:
            exact = Fraction(x * m) * Fraction(2) ** shift
            r = int((exact + Fraction(1, 2)).__floor__())   # round half up
            want.append(min(max(r, I32_MIN), I32_MAX))
        assert got.tolist() == want


def tosa_apply_scale_32(value: int, multiplier: int, shift: int, double_round: bool) -> int:
    """The TOSA 1.0 specification's apply_scale_32 in Python integers (right shift ``shift``)."""
    rnd = 1 << (shift - 1)
    if double_round and shift > 31:
        rnd += (1 << 30) if value >= 0 else -(1 << 30)
    return (value * multiplier + rnd) >> shift


@pytest.mark.parametrize("right", range(2, 63))
def test_tosa_double_matches_the_tosa_specification(right: int) -> None:
    """Every TOSA shift (2..62), multipliers up to 2^31-1, inputs inside TOSA's REQUIRE range
    |x| < 2^(shift-1), including the ties of the single rounding and those the 2^30 moves."""
    rng = np.random.default_rng(right)
    lim = min(1 << (right - 1), 1 << 31)
    xs = [x for x in EDGE_X if -lim <= x < lim] + [-lim, lim - 1]
    xs += [int(v) for v in rng.integers(-lim, lim, size=40)]
    for m in (0, 1, 3, 1 << 30, (1 << 30) + 1, I32_MAX, 1518500250, 1 << 15, (1 << 15) - 1):
        # inputs whose product lands on the tie of the single rounding or near the 2^30 move
        if m:
            for k in (1, 3, -1, -3):
                t = (k << (right - 1)) // m
                xs_t = [t - 1, t, t + 1]
                xs += [x for x in xs_t if -lim <= x < lim]
        x = np.array(xs, np.int64)
        got = arith.rescale_tosa_double(x, np.int64(m), np.int64(-right))
        want = [min(max(tosa_apply_scale_32(int(v), m, right, True), I32_MIN), I32_MAX)
                for v in xs]
        assert got.tolist() == want, (m, right)
        single = arith.rescale_half_up(x, np.int64(m), np.int64(-right))
        assert single.tolist() == [min(max(tosa_apply_scale_32(int(v), m, right, False), I32_MIN),
                                         I32_MAX) for v in xs], (m, right)


def test_tosa_double_differs_from_single_only_beyond_shift_31() -> None:
    """The measured difference: 2^30 added to the offset moves results only when r > 31."""
    x = np.arange(-4096, 4096, dtype=np.int64) * 977
    for r in (31, 32, 40):
        m = np.int64((1 << 30) + 12345)
        d = arith.rescale_tosa_double(x, m, np.int64(-r)) - arith.rescale_half_up(x, m,
                                                                                 np.int64(-r))
        assert (d != 0).any() == (r > 31)
        assert set(np.unique(d).tolist()) <= {-1, 0, 1}


BIG_X = [(1 << 62), -(1 << 62), (1 << 62) + 5, -(1 << 63), (1 << 40) - 1, -(1 << 47) + 3,
         (1 << 33) + 1, -(1 << 35) - 7, 123456789012345, -98765432109876]


@pytest.mark.parametrize("shift", [-62, -61, -40, -33, -32, -31, -30, -17, -1, 0, 1, 5, 31])
def test_half_up_is_exact_on_64_bit_accumulators(shift: int) -> None:
    """No int64 wrap: the product of a 62-bit input and a 32-bit multiplier is exact."""
    for m in (1, 3, (1 << 15) - 1, (1 << 30) + 1, I32_MAX, -I32_MAX, I32_MIN):
        got = arith.rescale_half_up(np.array(BIG_X, np.int64), np.int64(m), np.int64(shift))
        want = []
        for x in BIG_X:
            x = min(max(x, -(1 << 62)), 1 << 62)
            r = int((Fraction(x * m) * Fraction(2) ** shift + Fraction(1, 2)).__floor__())
            want.append(min(max(r, I32_MIN), I32_MAX))
        assert got.tolist() == want, (m, shift)


def test_32_bit_rules_saturate_a_64_bit_accumulator_first() -> None:
    x = np.array([1 << 40, -(1 << 40), (1 << 31), -(1 << 31) - 1], np.int64)
    saturated = np.array([I32_MAX, I32_MIN, I32_MAX, I32_MIN], np.int64)
    for rule in ("tflite_double", "tflite_single"):
        for qm, shift in ((1 << 30, 0), (I32_MAX, -5), (1 << 30, 1)):
            got = arith.rescale(x, np.int64(qm), np.int64(shift), rule)
            assert got.tolist() == arith.rescale(saturated, np.int64(qm), np.int64(shift),
                                                 rule).tolist(), rule
        half = arith.rescale(x, np.int64(1 << 30), np.int64(0), rule)   # multiplier 0.5
        assert half.tolist() == [1 << 30, -(1 << 30), 1 << 30, -(1 << 30)], rule
