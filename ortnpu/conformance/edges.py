"""Values that sit on the edges of the integer arithmetic: rounding ties, saturation, wrap.

Random data almost never lands exactly on a rounding tie of a 31-bit multiplier, yet ties are
where rounding rules differ. These helpers construct such values exactly instead of hoping.
"""

from __future__ import annotations

import zlib

import numpy as np


def effective_factor(rounding: str, multiplier: int, shift: int) -> tuple[int, int]:
    """The exact rational a rescale multiplies by, as ``(P, e)`` meaning ``P * 2**e``."""
    if rounding in ("tflite_double", "tflite_single"):
        return multiplier, shift - 31
    if rounding == "tflite_int64":
        reduced = (multiplier + (1 << 15)) >> 16 if multiplier < 0x7FFF0000 else 0x7FFF
        return reduced, shift - 15
    return multiplier, shift


def tie_accumulators(rounding: str, multiplier: int, shift: int, lo: int, hi: int,
                     count: int = 4) -> list[int]:
    """Accumulators ``acc`` in ``[lo, hi]`` for which ``acc * multiplier * 2^shift`` ends in .5.

    With the factor written ``p_odd * 2^v * 2^-q``, ``acc * factor`` is a half-integer exactly
    when ``acc`` is an odd multiple of ``2^(q - 1 - v)``. Small odd multiples come first, both
    signs, so the rounded results stay inside the output range where the tie is visible.
    """
    p, e = effective_factor(rounding, multiplier, shift)
    if p == 0 or e >= 0:
        return []
    q = -e
    v = (abs(p) & -abs(p)).bit_length() - 1
    if v > q - 1:
        return []
    unit = 1 << (q - 1 - v)
    out: list[int] = []
    odd = 1
    while len(out) < count and odd * unit <= max(abs(lo), abs(hi)):
        for sign in (1, -1):
            acc = sign * odd * unit
            if lo <= acc <= hi and len(out) < count:
                out.append(acc)
        odd += 2
    return out


def seeded_rng(*parts: str) -> np.random.Generator:
    """A generator seeded by the case's identity: cases do not depend on generation order."""
    return np.random.default_rng(zlib.crc32("/".join(parts).encode()))


def with_extremes(rng: np.random.Generator, shape: tuple[int, ...], lo: int, hi: int,
                  dtype: np.dtype) -> np.ndarray:
    """Uniform random integers in ``[lo, hi]`` with both ends present (when there is room)."""
    x = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    flat = x.reshape(-1)
    if flat.size >= 8:
        flat[0], flat[-1] = lo, hi
        flat[flat.size // 2] = lo
        flat[flat.size // 3] = hi
    return x.astype(dtype)


def sample_values(dtype: np.dtype, rng: np.random.Generator, count: int = 96) -> np.ndarray:
    """Every value of an 8-bit type, or edges plus random values of a 16-bit one."""
    info = np.iinfo(dtype)
    if dtype.itemsize == 1:
        return np.arange(int(info.min), int(info.max) + 1, dtype=np.int64).astype(dtype)
    lo, hi = int(info.min), int(info.max)
    edges = [lo, lo + 1, lo + 2, -1, 0, 1, 2, 3, hi - 1, hi, (lo + hi) // 2, (lo + hi) // 2 + 1]
    edges += [1 << k for k in range(2, 15)] + [-(1 << k) for k in range(2, 15)]
    edges = [v for v in edges if lo <= v <= hi]
    rest = rng.integers(lo, hi, size=max(count - len(edges), 0), endpoint=True)
    return np.concatenate([np.array(edges, np.int64), rest]).astype(dtype)
