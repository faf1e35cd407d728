"""Cases of the elementwise ops: Add, Sub, SquaredDifference, Mul, Maximum, Minimum,
Requantize, Lut."""

from __future__ import annotations

import numpy as np

from ortnpu.conformance.build import case, clamp_bounds, param, sweep, tensor, zero_point
from ortnpu.conformance.case import Case
from ortnpu.conformance.edges import (
    effective_factor,
    sample_values,
    seeded_rng,
    with_extremes,
)
from ortnpu.conformance.profile import Profile

_I8, _U8, _I16 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)


def _log2_factor(rounding: str, m: int, s: int) -> tuple[int, int]:
    """Integer log2 of a rescale's factor, as (bits of the multiplier - 1, exponent)."""
    big, e = effective_factor(rounding, m, s)
    return abs(big).bit_length() - 1, e


def _grid(p: Profile, dtype: np.dtype, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two operands whose broadcast covers every pair of sampled values ([n, 1] and [1, n])."""
    values = sample_values(dtype, rng, 64)
    if dtype == p.act:
        values = values[(values >= p.act_range[0]) & (values <= p.act_range[1])]
    return values.reshape(-1, 1), rng.permutation(values).reshape(1, -1)


def _add(p: Profile, name: str, a: np.ndarray, b: np.ndarray, *, scales: tuple[float, ...],
         zps: tuple[int, int, int], left_shift: int | None = None, clamp: dict | None = None,
         doc: str = "", op: str = "Add", negate: str | None = None) -> Case:
    """TFLite's parameter choice: inputs to a common scale 2*max(s1, s2), output rescale."""
    s1, s2, so = scales
    ls = p.add_left_shift if left_shift is None else left_shift
    twice = 2 * max(s1, s2)
    am, ash = p.quantize(s1 / twice)
    bm, bsh = p.quantize(s2 / twice)
    ym, ysh = p.quantize(twice / ((1 << ls) * so))
    attrs = {"a_zp": zps[0], "b_zp": zps[1], "y_zp": zps[2], "left_shift": ls,
             "a_multiplier": am, "a_shift": ash, "b_multiplier": bm, "b_shift": bsh,
             "y_multiplier": ym, "y_shift": ysh, "rounding": p.rounding,
             **(clamp or clamp_bounds(p, p.act))}
    if op == "Sub":
        attrs["negate"] = p.sub_negate if negate is None else negate
    return case(p, op, name, [tensor("a", a), tensor("b", b)], attrs, doc=doc)


def add_cases(p: Profile) -> list[Case]:
    """Add: every value pair, broadcasting, scales far apart, zero points, clamps."""
    rng = seeded_rng(p.suite, "Add")
    lo, hi = p.act_range
    a, b = _grid(p, p.act, rng)
    z = (zero_point(p, rng), zero_point(p, rng), zero_point(p, rng))
    cases = [
        _add(p, "grid", a, b, scales=(0.05, 0.03, 0.06), zps=z,
             doc="every pair of sampled values, scales of one order"),
        _add(p, "broadcast", with_extremes(rng, (2, 3, 4, 5), lo, hi, p.act),
             with_extremes(rng, (3, 1, 1), lo, hi, p.act), scales=(0.02, 0.5, 0.4), zps=z,
             doc="channel-wise operand, scales 25x apart"),
        _add(p, "saturate", a, b, scales=(0.1, 0.1, 0.01), zps=z,
             doc="output scale 10x too small: saturates at both ends"),
        _add(p, "relu", a, b, scales=(0.04, 0.07, 0.05), zps=z,
             clamp={"act_min": max(z[2], lo), "act_max": hi}, doc="fused ReLU"),
    ]
    if not p.symmetric:
        cases.append(_add(p, "zp_extremes", a, b, scales=(0.03, 0.05, 0.05), zps=(lo, hi, lo),
                          doc="zero points at the type ends"))
    return cases


def sub_cases(p: Profile) -> list[Case]:
    """Sub (Add's parameters, b negated where the profile's ``sub_negate`` says): every value
    pair, broadcasting the subtrahend, saturation both ways, zero points at the type ends, and
    the grid once more with the other negation order (where b's rescale rounds ties)."""
    rng = seeded_rng(p.suite, "Sub")
    lo, hi = p.act_range
    a, b = _grid(p, p.act, rng)
    z = (zero_point(p, rng), zero_point(p, rng), zero_point(p, rng))
    cases = [
        _add(p, "grid", a, b, scales=(0.05, 0.03, 0.06), zps=z, op="Sub",
             doc="every pair of sampled values (ties of the negated rescale)"),
        _add(p, "broadcast_b", with_extremes(rng, (2, 3, 4), lo, hi, p.act),
             with_extremes(rng, (4,), lo, hi, p.act), scales=(0.5, 0.02, 0.4), zps=z,
             op="Sub", doc="trailing-axis subtrahend, scales 25x apart"),
        _add(p, "saturate", a, b, scales=(0.1, 0.1, 0.01), zps=z, op="Sub",
             doc="output scale 10x too small: saturates at both ends"),
        _add(p, "ties_other_order", a, b, scales=(0.04, 0.02, 0.08), zps=z, left_shift=0,
             op="Sub", negate="result" if p.sub_negate == "multiplier" else "multiplier",
             doc="no left shift, b rescaled by 1/4 (ties on every other even value), the sum "
                 "by 1: negated in the other order"),
    ]
    if not p.symmetric:
        cases.append(_add(p, "zp_extremes", a, b, scales=(0.03, 0.05, 0.05), zps=(hi, lo, lo),
                          op="Sub", doc="zero points at the type ends"))
    return cases


def _squared_difference(p: Profile, name: str, a: np.ndarray, b: np.ndarray, *,
                        scales: tuple[float, float, float], zps: tuple[int, int, int],
                        doc: str) -> Case:
    """TFLite's SQUARED_DIFFERENCE parameters: left shift 7, inputs on 2·max(s1, s2), output
    multiplier (2·max)² / (2^14 · s_y)."""
    s1, s2, so = scales
    twice = 2 * max(s1, s2)
    am, ash = p.quantize(s1 / twice)
    bm, bsh = p.quantize(s2 / twice)
    ym, ysh = p.quantize(twice * twice / ((1 << 14) * so))
    attrs = {"a_zp": zps[0], "b_zp": zps[1], "y_zp": zps[2], "left_shift": 7,
             "a_multiplier": am, "a_shift": ash, "b_multiplier": bm, "b_shift": bsh,
             "y_multiplier": ym, "y_shift": ysh, "rounding": p.rounding,
             **clamp_bounds(p, p.act)}
    return case(p, "SquaredDifference", name, [tensor("a", a), tensor("b", b)], attrs, doc=doc)


def squared_difference_cases(p: Profile) -> list[Case]:
    """SquaredDifference: every value pair, a broadcast mean (a LayerNorm's), saturation,
    zero points at the type ends."""
    rng = seeded_rng(p.suite, "SquaredDifference")
    lo, hi = p.act_range
    a, b = _grid(p, p.act, rng)
    z = (zero_point(p, rng), zero_point(p, rng), zero_point(p, rng))
    cases = [
        _squared_difference(p, "grid", a, b, scales=(0.05, 0.03, 0.05 * 0.05 * (hi - lo)),
                            zps=z, doc="every pair of sampled values"),
        _squared_difference(p, "broadcast_mean", with_extremes(rng, (2, 3, 8), lo, hi, p.act),
                            with_extremes(rng, (2, 3, 1), lo, hi, p.act),
                            scales=(0.04, 0.01, 0.2), zps=z,
                            doc="a row mean subtracted from its row, scales 4x apart"),
        _squared_difference(p, "saturate", a, b, scales=(0.1, 0.1, 0.01), zps=z,
                            doc="output scale far too small: saturates at the top"),
    ]
    if not p.symmetric:
        cases.append(_squared_difference(p, "zp_extremes", a, b, scales=(0.03, 0.05, 2.0),
                                         zps=(hi, lo, lo), doc="zero points at the type ends"))
    return cases


def min_max_cases(p: Profile) -> list[Case]:
    """Maximum and Minimum: every value pair (equal values included), broadcasting."""
    rng = seeded_rng(p.suite, "MinMax")
    lo, hi = p.act_range
    a, b = _grid(p, p.act, rng)
    cases = []
    for op in ("Maximum", "Minimum"):
        cases.append(case(p, op, "grid", [tensor("a", a), tensor("b", b)], {},
                          doc="every pair of sampled values, the type ends included"))
        cases.append(case(p, op, "broadcast", [
            tensor("a", with_extremes(rng, (2, 3, 4), lo, hi, p.act)),
            tensor("b", with_extremes(rng, (3, 1), lo, hi, p.act))], {},
            doc="a middle-axis operand"))
    return cases


def _mul(p: Profile, name: str, a: np.ndarray, b: np.ndarray, real: float,
         zps: tuple[int, int, int], doc: str) -> Case:
    m, s = p.quantize(real)
    attrs = {"a_zp": zps[0], "b_zp": zps[1], "y_zp": zps[2], "multiplier": m, "shift": s,
             "rounding": p.rounding, **clamp_bounds(p, p.act)}
    return case(p, "Mul", name, [tensor("a", a), tensor("b", b)], attrs, doc=doc)


def mul_cases(p: Profile) -> list[Case]:
    """Mul: every value pair, broadcasting, saturation, zero points."""
    rng = seeded_rng(p.suite, "Mul")
    lo, hi = p.act_range
    a, b = _grid(p, p.act, rng)
    z = (zero_point(p, rng), zero_point(p, rng), zero_point(p, rng))
    full = float(hi - lo) ** 2 / 4
    span = (hi - lo) / 2
    cases = [
        _mul(p, "grid", a, b, span / full, z, "every pair of sampled values"),
        _mul(p, "broadcast", with_extremes(rng, (2, 3, 4), lo, hi, p.act),
             with_extremes(rng, (4,), lo, hi, p.act), span / full * 1.7, z,
             "trailing-axis operand"),
        _mul(p, "saturate", a, b, span / full * 20, z, "products saturate at both ends"),
    ]
    if not p.symmetric:
        cases.append(_mul(p, "zp_extremes", a, b, span / full, (hi, lo, hi),
                          "zero points at the type ends"))
    return cases


def _requant(p: Profile, name: str, x: np.ndarray, mult: np.ndarray, shift: np.ndarray,
             out: np.dtype, zps: tuple[int, int], axis: int = 0, doc: str = "") -> Case:
    attrs = {"x_zp": zps[0], "y_zp": zps[1], "axis": axis, "rounding": p.rounding,
             **clamp_bounds(p, out)}
    inputs = [tensor("x", x), param("multiplier", mult, np.int32),
              param("shift", shift, np.int32)]
    return case(p, "Requantize", name, inputs, attrs, out, doc)


def requantize_cases(p: Profile) -> list[Case]:
    """Requantize: the rescale sweep over every input value, type changes, zero points."""
    rng = seeded_rng(p.suite, "Requantize")
    cases = []
    values = sample_values(p.act, rng)
    values = values[(values >= p.act_range[0]) & (values <= p.act_range[1])]
    grid = [(m, s) for m, s, _ in sweep(p, -(1 << 20), 1 << 20, p.per_channel)]
    if p.per_channel:
        x = np.broadcast_to(values, (len(grid), values.size)).copy()
        mult = np.array([g[0] for g in grid], np.int32)
        shift = np.array([g[1] for g in grid], np.int32)
        cases.append(_requant(p, "sweep", x, mult, shift, p.act, (0, 0), 0,
                              "every shift of the rule x edge multipliers (one per row), every "
                              "input value"))
    else:
        bits = 8 * p.act.itemsize
        useful = [(m, s) for m, s in grid
                  if sum(_log2_factor(p.rounding, m, s)) >= -bits - 2] or grid
        for m, s in useful[:: max(len(useful) // 6, 1)]:
            cases.append(_requant(p, f"m{m}_s{s}".replace("-", "n"), values.reshape(1, -1),
                                  np.array([m], np.int32), np.array([s], np.int32), p.act,
                                  (0, 0), 0, "one multiplier and shift of the sweep"))
    x = with_extremes(rng, (2, 3, 4, 5), *p.act_range, p.act)
    if p.per_channel:
        for name, axis, reals in (("per_axis1", 1, (0.3, 0.77, 1.9)),
                                  ("per_axis_last", -1, (0.5, 1.0, 0.25, 3.0, 0.9))):
            pairs = [p.quantize(r) for r in reals]
            cases.append(_requant(p, name, x, np.array([m for m, _ in pairs], np.int32),
                                  np.array([s for _, s in pairs], np.int32), p.act,
                                  (zero_point(p, rng), zero_point(p, rng)), axis,
                                  f"per-channel parameters on axis {axis}"))
    for out in dict.fromkeys((p.relu_out, _I8, _U8, _I16)):
        if out == p.act:
            continue
        info = np.iinfo(out)
        real = (int(info.max) - int(info.min)) / (p.act_range[1] - p.act_range[0]) * 1.1
        m, s = p.quantize(real)
        y_zp = 0 if out == p.relu_out or p.symmetric else zero_point(p, rng, out)
        cases.append(_requant(p, f"to_{out.name}", x, np.array([m], np.int32),
                              np.array([s], np.int32), out,
                              (zero_point(p, rng), y_zp), 1,
                              f"{p.act.name} to {out.name}, full output range"))
    if not p.symmetric:
        lo = p.act_range[0]
        m, s = p.quantize(0.6)
        cases.append(_requant(p, "zp_extremes", x, np.array([m], np.int32),
                              np.array([s], np.int32), p.act, (lo, lo), 1,
                              "zero points at the type ends"))
    return cases


def lut_cases(p: Profile) -> list[Case]:
    """Lut: a full table per input type (256 or 65536 entries), every input value."""
    rng = seeded_rng(p.suite, "Lut")
    cases = []
    for out in dict.fromkeys((p.act, p.relu_out)):
        info = np.iinfo(out)
        size = 1 << (8 * p.act.itemsize)
        table = rng.integers(int(info.min), int(info.max), size=size, endpoint=True).astype(out)
        table[0], table[-1] = info.max, info.min
        x = sample_values(p.act, rng, 512)
        cases.append(case(p, "Lut", f"to_{out.name}", [tensor("x", x.reshape(-1, 8)),
                                                       param("table", table, out)], {}, out,
                          "every input value (8 bits) or 512 (16 bits) through a random table"))
    return cases
