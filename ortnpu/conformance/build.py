"""Small helpers shared by the case builders: parameters chosen like a quantizer would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ortnpu.conformance.case import Case, Tensor
from ortnpu.conformance.edges import tie_accumulators
from ortnpu.conformance.profile import Profile


def case(p: Profile, op: str, name: str, inputs: Sequence[Tensor], attrs: dict[str, Any],
         out: np.dtype | None = None, doc: str = "") -> Case:
    """Build a :class:`Case` of suite ``p.suite``."""
    return Case(p.suite, op, name, tuple(inputs), dict(attrs),
                np.dtype(out if out is not None else p.act), doc)


def zero_point(p: Profile, rng: np.random.Generator, dtype: np.dtype | None = None) -> int:
    """A zero point inside the middle half of the type (0 on symmetric targets)."""
    dtype = np.dtype(dtype or p.act)
    if p.symmetric and dtype == p.act:
        return 0
    info = np.iinfo(dtype)
    quarter = (int(info.max) - int(info.min)) // 4
    return int(rng.integers(int(info.min) + quarter, int(info.max) - quarter, endpoint=True))


def clamp_bounds(p: Profile, out: np.dtype) -> dict[str, int]:
    """Full clamp range of an output type (the target's narrow range for its activations)."""
    if np.dtype(out) == p.act:
        lo, hi = p.act_range
    else:
        info = np.iinfo(out)
        lo, hi = int(info.min), int(info.max)
    return {"act_min": lo, "act_max": hi}


def rescale_for(p: Profile, acc: np.ndarray, axis: int | None, span: float, gain: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Multiplier and shift that map the accumulator's spread onto ``span`` output steps.

    Args:
        acc: exact accumulators.
        axis: channel axis for per-channel parameters, or None for per-tensor.
        span: half the output range.
        gain: above 1 saturates part of the output on purpose.
    """
    if axis is None:
        peaks = np.array([max(float(np.abs(acc).max()), 1.0)])
    else:
        moved = np.moveaxis(np.abs(acc), axis, 0).reshape(acc.shape[axis], -1)
        peaks = np.maximum(moved.max(axis=1).astype(np.float64), 1.0)
    jitter = rng.uniform(0.7, 1.3, size=peaks.shape)
    pairs = [p.quantize(span / pk * gain * j) for pk, j in zip(peaks, jitter, strict=True)]
    mult = np.array([m for m, _ in pairs], dtype=np.int32)
    shift = np.array([s for _, s in pairs], dtype=np.int32)
    return mult, shift


def sweep(p: Profile, lo: int, hi: int, per_channel: bool) -> list[tuple[int, int, int]]:
    """``(multiplier, shift, accumulator)`` triples: every shift and edge multiplier of the
    rule, each with an accumulator on a rounding tie (or a large one when no tie fits)."""
    out = []
    grid = p.multiplier_grid()
    if not per_channel:
        grid = grid[:: max(len(grid) // 12, 1)]
    for k, (m, s) in enumerate(grid):
        ties = tie_accumulators(p.rounding, m, s, lo, hi, count=2)
        acc = ties[k % len(ties)] if ties else (hi // 3 if k % 2 else lo // 3)
        out.append((m, s, acc))
    return out


def tensor(name: str, value: np.ndarray, param: bool = False) -> Tensor:
    """Shorthand for :class:`Tensor`."""
    return Tensor(name, value, param)


def param(name: str, value: Any, dtype: Any) -> Tensor:
    """A parameter (initializer) tensor."""
    return Tensor(name, np.asarray(value, dtype=dtype).reshape(np.shape(value)), True)
