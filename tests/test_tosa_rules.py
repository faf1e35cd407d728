"""TOSA helpers of import_tosa against the specification's pseudocode (no tosa-tools needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ortnpu.domain.arith import rescale
from ortnpu.frontends.tosa_import import lut_tosa_int16, reciprocal_scale


def clz32(v: int) -> int:
    """Leading zero bits of a 32-bit value, counted one bit at a time."""
    n = 0
    for bit in range(31, -1, -1):
        if v >> bit & 1:
            break
        n += 1
    return n


def test_reciprocal_scale_matches_the_specification() -> None:
    for count in range(1, 5000):
        k = 32 - clz32(count - 1)          # (1 << k) / 2 < count <= (1 << k)
        assert (1 << k) // 2 < count <= (1 << k)
        m, shift = reciprocal_scale(count)
        assert (m, shift) == ((((1 << 30) + 1) << k) // count, 30 + k)
        assert (1 << 30) <= m < (1 << 31) or count == 1


@pytest.mark.parametrize("count", [*range(1, 65), 81, 100, 121, 169, 225, 256, 1000, 4096])
def test_reciprocal_scale_equals_rounded_division(count: int) -> None:
    """Why a padded AVG_POOL2D may run as AveragePool: TOSA's reciprocal multiply and the
    division rounding half away from zero agree on every int8 window sum."""
    acc = np.arange(-128 * count, 127 * count + 1, dtype=np.int64)
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    divided = np.where(num >= 0, np.abs(num) // count, -(np.abs(num) // count))
    m, shift = reciprocal_scale(count)
    assert np.array_equal(rescale(acc, np.int64(m), np.int64(-shift), "half_up"), divided)


def apply_lookup_s(table: list[int], value: int) -> int:
    """The TOSA 1.0 specification's apply_lookup_s in Python integers."""
    clipped = min(max(value, -32768), 32767)
    index = (clipped + 32768) >> 7
    fraction = clipped & 0x7F
    base, nxt = table[index], table[index + 1]
    return (base << 7) + (nxt - base) * fraction


def test_int16_table_matches_the_specification() -> None:
    rng = np.random.default_rng(0)
    table = np.clip(np.cumsum(rng.integers(-300, 300, size=513)), -32768, 32767)
    values = np.arange(-32768, 32768, dtype=np.int64)
    got = lut_tosa_int16(values, table)
    want = [apply_lookup_s(table.tolist(), int(v)) for v in values[::7]]
    assert got[::7].tolist() == want
    assert got[-1] == apply_lookup_s(table.tolist(), 32767)
