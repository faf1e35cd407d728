"""Cases of the accumulating ops: Conv, FullyConnected, MatMul."""

from __future__ import annotations

from typing import Any

import numpy as np

from ortnpu.conformance.build import (
    case,
    clamp_bounds,
    param,
    rescale_for,
    sweep,
    tensor,
    zero_point,
)
from ortnpu.conformance.case import Case
from ortnpu.conformance.edges import seeded_rng, tie_accumulators, with_extremes
from ortnpu.conformance.profile import Profile
from ortnpu.domain.ops_linear import Conv

_PAD1 = {"pad_top": 1, "pad_left": 1, "pad_bottom": 1, "pad_right": 1}

#: name, x shape (N, C, H, W), output channels, (kh, kw), attributes.
CONV_GEOMETRIES: tuple[tuple[str, tuple[int, ...], int, tuple[int, int], dict[str, int]], ...] = (
    ("3x3_pad1", (1, 3, 6, 6), 4, (3, 3), _PAD1),
    ("batch2_odd", (2, 3, 7, 5), 5, (3, 2), {}),
    ("stride2x3", (1, 4, 9, 10), 3, (3, 3), {"stride_h": 2, "stride_w": 3}),
    ("dilation2x1", (1, 2, 9, 8), 3, (3, 3),
     {"dilation_h": 2, "pad_top": 2, "pad_bottom": 2}),
    ("pads_asym", (1, 3, 5, 5), 2, (3, 3),
     {"pad_top": 0, "pad_left": 2, "pad_bottom": 1, "pad_right": 1}),
    ("depthwise", (1, 6, 7, 7), 6, (3, 3), {"group": 6, **_PAD1}),
    ("depthwise_mult2_stride2", (2, 4, 8, 8), 8, (3, 3),
     {"group": 4, "stride_h": 2, "stride_w": 2, **_PAD1}),
    ("grouped3", (1, 6, 5, 6), 9, (3, 3), {"group": 3, **_PAD1}),
    ("pointwise", (1, 16, 4, 4), 8, (1, 1), {}),
    ("kernel5x1_dil1x3_stride1x2", (1, 2, 8, 11), 4, (5, 2),
     {"dilation_w": 3, "stride_w": 2, "pad_top": 2, "pad_bottom": 2}),
)


def _conv(p: Profile, name: str, x_shape: tuple[int, ...], cout: int, k: tuple[int, int],
          geo: dict[str, int], *, per_channel: bool, out: np.dtype | None = None,
          zps: tuple[int, int] | None = None, gain: float = 1.0,
          clamp: dict[str, int] | None = None, doc: str = "") -> Case:
    rng = seeded_rng(p.suite, "Conv", name)
    out = np.dtype(out or p.act)
    x_zp, y_zp = zps if zps is not None else (zero_point(p, rng), zero_point(p, rng, out))
    if out != p.act:
        y_zp = 0
    x = with_extremes(rng, x_shape, *p.act_range, p.act)
    group = geo.get("group", 1)
    w = with_extremes(rng, (cout, x_shape[1] // group, *k), *p.weight_range, np.dtype(np.int8))
    attrs: dict[str, Any] = {"x_zp": x_zp, "y_zp": y_zp, **geo, "rounding": p.rounding,
                             "acc_bits": p.acc_bits, **(clamp or clamp_bounds(p, out))}
    full = Conv.full_attrs(attrs)
    acc = Conv.accumulate([x, w, np.zeros(cout, np.int64)], full)
    peak = int(np.abs(acc).max()) // 4 + 1
    bias = rng.integers(-peak, peak, size=cout, endpoint=True)
    span = (attrs["act_max"] - attrs["act_min"]) / 2
    mult, shift = rescale_for(p, acc + bias[None, :, None, None], 1 if per_channel else None,
                              span, gain, rng)
    inputs = [tensor("x", x), param("w", w, np.int8), param("bias", bias, np.int64),
              param("multiplier", mult, np.int32), param("shift", shift, np.int32)]
    return case(p, "Conv", name, inputs, attrs, out, doc)


def conv_cases(p: Profile) -> list[Case]:
    """Geometry (grouped, depthwise, strided, dilated, padded, odd shapes, batch) and arithmetic
    edges (clamps, zero points, saturation, ties, accumulator width) of Conv."""
    cases = [_conv(p, n, xs, co, k, g, per_channel=p.per_channel,
                   doc=f"Conv geometry {n}, {p.suite} arithmetic")
             for n, xs, co, k, g in CONV_GEOMETRIES]
    base = CONV_GEOMETRIES[0][1:]
    if p.per_channel:
        cases.append(_conv(p, "per_tensor", *base, per_channel=False,
                           doc="one multiplier/shift for every output channel"))
    relu = p.relu_out
    lo, hi = p.relu_range(0)
    cases.append(_conv(p, "relu", *base, per_channel=p.per_channel, out=relu,
                       zps=(0 if p.symmetric else 5, 0), clamp={"act_min": lo, "act_max": hi},
                       doc="fused ReLU: output clamped at the zero point"))
    cases.append(_conv(p, "clamp_narrow", *base, per_channel=p.per_channel,
                       zps=(0, 0), clamp={"act_min": -3, "act_max": 40},
                       doc="fused clip to a narrow range (ReLU6-like)"))
    cases.append(_conv(p, "saturate", *base, per_channel=p.per_channel, gain=12.0,
                       doc="multipliers 12x too large: most outputs saturate at both ends"))
    if not p.symmetric:
        a_lo, a_hi = p.act_range
        cases.append(_conv(p, "zp_min_max", *base, per_channel=p.per_channel, zps=(a_lo, a_hi),
                           doc="input zero point at the type minimum, output at the maximum"))
        cases.append(_conv(p, "zp_max_min", *base, per_channel=p.per_channel, zps=(a_hi, a_lo),
                           doc="input zero point at the type maximum, output at the minimum"))
    cases.append(conv_ties(p))
    cases.append(conv_wide(p))
    return cases


def conv_ties(p: Profile) -> Case:
    """Pointwise conv whose accumulators are the bias (input at its zero point) plus -1, 0 or 1:
    each channel's bias sits exactly on a rounding tie of its multiplier and shift."""
    rng = seeded_rng(p.suite, "Conv", "ties")
    lo, hi = accumulator_limits(p, p.acc_bits)
    lo, hi = lo + 2, hi - 2
    triples = sweep(p, lo, hi, p.per_channel)
    if not p.per_channel:
        m0, s0 = p.quantize(0.5 ** 7 * 1.5)
        ties = tie_accumulators(p.rounding, m0, s0, lo + 2, hi - 2, count=16) or [0]
        triples = [(m0, s0, ties[k % len(ties)]) for k in range(16)]
    cout = len(triples)
    x_zp = zero_point(p, rng)
    x = np.full((1, 2, 3, 3), x_zp, dtype=np.int64)
    x[0, 0, 0, 1], x[0, 0, 2, 2], x[0, 1, 1, 1] = x_zp + 1, x_zp - 1, x_zp + 1
    w = np.zeros((cout, 2, 1, 1), np.int8)
    w[:, 0] = 1
    bias = np.array([t[2] for t in triples], np.int64)
    mult = np.array([t[0] for t in triples], np.int32)
    shift = np.array([t[1] for t in triples], np.int32)
    if not p.per_channel:
        mult, shift = mult[:1], shift[:1]
    y_zp = zero_point(p, rng)
    attrs = {"x_zp": x_zp, "y_zp": y_zp, "rounding": p.rounding, "acc_bits": p.acc_bits,
             **clamp_bounds(p, p.act)}
    inputs = [tensor("x", np.clip(x, *p.act_range).astype(p.act)), param("w", w, np.int8),
              param("bias", bias, np.int64), param("multiplier", mult, np.int32),
              param("shift", shift, np.int32)]
    return case(p, "Conv", "ties", inputs, attrs, doc=conv_ties.__doc__ or "")


def conv_wide(p: Profile) -> Case:
    """Accumulators beyond int32: they wrap with a 32-bit accumulator, stay exact with 64 bits
    (and reach the 2^47 saturation of TFLite's int64 rescale)."""
    rng = seeded_rng(p.suite, "Conv", "wide_accumulator")
    _, a_hi = p.act_range
    x_zp = 0 if p.symmetric else p.act_range[0]
    x = np.full((1, 4, 3, 3), a_hi, dtype=p.act)
    x[0, :, 1, 1] = x_zp
    w = np.full((4, 4, 3, 3), p.weight_range[1], np.int8)
    w[1] = p.weight_range[0]
    w[3, :2] = 0
    if p.bias_bits == 32:
        top = (1 << 31) - 1
        near = top - 9 * 4 * 127 * (a_hi - x_zp) // 2
        bias = np.array([near, -near, top - 5, -top], np.int64)
    elif p.rounding == "tflite_int64":
        bias = np.array([(1 << 47) + 12345, -(1 << 47) - 99, (1 << 40) + 7, -(1 << 46)],
                        np.int64)
    else:
        bias = np.array([(1 << 31) + 12345, -(1 << 31) - 99, (1 << 30) + 7, -(1 << 30)],
                        np.int64)
    peak = 1 << 47 if p.rounding == "tflite_int64" and p.bias_bits == 64 else 1 << 31
    span = (p.act_range[1] - p.act_range[0]) / 2
    mult, shift = zip(*(p.quantize(span / peak * g) for g in (1.0, 1.3, 0.8, 2.0)), strict=True)
    mult_a, shift_a = np.array(mult, np.int32), np.array(shift, np.int32)
    if not p.per_channel:
        mult_a, shift_a = mult_a[:1], shift_a[:1]
    attrs = {"x_zp": x_zp, "y_zp": zero_point(p, rng), "rounding": p.rounding,
             "acc_bits": p.acc_bits, **clamp_bounds(p, p.act), **_PAD1}
    inputs = [tensor("x", x), param("w", w, np.int8), param("bias", bias, np.int64),
              param("multiplier", mult_a, np.int32), param("shift", shift_a, np.int32)]
    return case(p, "Conv", "wide_accumulator", inputs, attrs, doc=conv_wide.__doc__ or "")


def _fc(p: Profile, name: str, x_shape: tuple[int, ...], n: int, *, per_channel: bool,
        gain: float = 1.0, zps: tuple[int, int] | None = None, doc: str = "") -> Case:
    rng = seeded_rng(p.suite, "FullyConnected", name)
    x_zp, y_zp = zps if zps is not None else (zero_point(p, rng), zero_point(p, rng))
    x = with_extremes(rng, x_shape, *p.act_range, p.act)
    w = with_extremes(rng, (n, x_shape[-1]), *p.weight_range, np.dtype(np.int8))
    acc = (x.astype(np.int64) - x_zp) @ w.astype(np.int64).T
    peak = int(np.abs(acc).max()) // 4 + 1
    bias = rng.integers(-peak, peak, size=n, endpoint=True)
    attrs = {"x_zp": x_zp, "y_zp": y_zp, "rounding": p.rounding, "acc_bits": p.acc_bits,
             **clamp_bounds(p, p.act)}
    span = (attrs["act_max"] - attrs["act_min"]) / 2
    mult, shift = rescale_for(p, (acc + bias).reshape(-1, n), 1 if per_channel else None, span,
                              gain, rng)
    inputs = [tensor("x", x), param("w", w, np.int8), param("bias", bias, np.int64),
              param("multiplier", mult, np.int32), param("shift", shift, np.int32)]
    return case(p, "FullyConnected", name, inputs, attrs, doc=doc)


def fc_sweep(p: Profile, name: str, per_channel: bool, acc_bits: int,
             grid_index: int | None = None) -> Case:
    """Every shift of the rule with edge multipliers (2^31-1, 2^30, ...): output channel o has
    its own (multiplier, shift) and a bias on its rounding tie; the rows add -2..2 and the input
    extremes to it, so ties, their neighbours and both saturations are all exercised. Without
    per-channel parameters one (multiplier, shift) of the grid is used, with one tie per
    channel."""
    rng = seeded_rng(p.suite, "FullyConnected", name)
    lo, hi = accumulator_limits(p, acc_bits)
    margin = 2 * 127 * (p.act_range[1] - p.act_range[0])
    if per_channel:
        triples = sweep(p, lo + margin, hi - margin, True)
    else:
        grid = p.multiplier_grid()
        m, s = grid[grid_index or 0]
        ties = tie_accumulators(p.rounding, m, s, lo + margin, hi - margin, count=12) or [0]
        triples = [(m, s, t) for t in ties]
    n = len(triples)
    x_zp = zero_point(p, rng)
    a_lo, a_hi = p.act_range
    rows = [[x_zp + d, x_zp] for d in (0, 1, -1, 2, -2)] + [[a_lo, a_hi], [a_hi, a_lo]]
    x = np.clip(np.array(rows, np.int64), a_lo, a_hi).astype(p.act)
    w = np.zeros((n, 2), np.int8)
    w[:, 0] = 1
    w[:, 1] = rng.integers(p.weight_range[0], p.weight_range[1], size=n, endpoint=True)
    bias = np.array([t[2] for t in triples], np.int64)
    mult = np.array([t[0] for t in triples], np.int32)
    shift = np.array([t[1] for t in triples], np.int32)
    if not per_channel:
        mult, shift = mult[:1], shift[:1]
    attrs = {"x_zp": x_zp, "y_zp": zero_point(p, rng), "rounding": p.rounding,
             "acc_bits": acc_bits, **clamp_bounds(p, p.act)}
    inputs = [tensor("x", x), param("w", w, np.int8), param("bias", bias, np.int64),
              param("multiplier", mult, np.int32), param("shift", shift, np.int32)]
    return case(p, "FullyConnected", name, inputs, attrs, doc=fc_sweep.__doc__ or "")


def accumulator_limits(p: Profile, acc_bits: int) -> tuple[int, int]:
    """Accumulators worth testing: the int32 range for 32 bits; for 64 bits beyond int32 but
    with ``acc * multiplier`` inside int64 (the reference products are int64), except for
    ``tflite_int64`` whose rescale saturates at 2^47 first."""
    if acc_bits == 32:
        lo, hi = -(1 << 31), (1 << 31) - 1
    elif p.rounding == "tflite_int64":
        lo, hi = -(1 << 50), 1 << 50
    else:
        lo, hi = -(3 << 30), 3 << 30
    return max(lo, p.bias_range[0]), min(hi, p.bias_range[1])


def fc_cases(p: Profile) -> list[Case]:
    """FullyConnected: shapes, batch, per-channel/per-tensor, the rescale sweep."""
    cases = [
        _fc(p, "basic", (1, 16), 8, per_channel=p.per_channel, doc="one row"),
        _fc(p, "batch4", (4, 33), 7, per_channel=p.per_channel, doc="batch of 4, odd K and N"),
        _fc(p, "rank3", (2, 3, 10), 5, per_channel=p.per_channel, doc="[..., K] input"),
        _fc(p, "saturate", (3, 20), 6, per_channel=p.per_channel, gain=16.0,
            doc="multipliers 16x too large: outputs saturate at both ends"),
    ]
    if p.per_channel:
        cases.append(fc_sweep(p, "sweep", True, p.acc_bits))
    else:
        grid = p.multiplier_grid()
        for k in range(0, len(grid), max(len(grid) // 8, 1)):
            m, s = grid[k]
            cases.append(fc_sweep(p, f"sweep_m{m}_s{s}".replace("-", "n"), False, p.acc_bits,
                                  k))
    if p.per_channel:
        cases.append(_fc(p, "per_tensor", (2, 12), 6, per_channel=False,
                         doc="one multiplier/shift for every output"))
    if not p.symmetric:
        a_lo, a_hi = p.act_range
        cases.append(_fc(p, "zp_extremes", (2, 9), 4, per_channel=p.per_channel,
                         zps=(a_hi, a_lo), doc="zero points at the type ends"))
    return cases


def _matmul(p: Profile, name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], *,
            dtypes: tuple[np.dtype, np.dtype] | None = None,
            zps: tuple[int, int, int] | None = None, acc_bits: int | None = None,
            gain: float = 1.0, doc: str = "") -> Case:
    rng = seeded_rng(p.suite, "MatMul", name)
    da, db = dtypes or (p.act, p.act)
    za, zb, zy = zps if zps is not None else (zero_point(p, rng, da), zero_point(p, rng, db),
                                              zero_point(p, rng))

    def rng_of(d: np.dtype) -> tuple[int, int]:
        return p.act_range if d == p.act else (int(np.iinfo(d).min), int(np.iinfo(d).max))

    a = with_extremes(rng, a_shape, *rng_of(da), da)
    b = with_extremes(rng, b_shape, *rng_of(db), db)
    acc = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)
    attrs = {"a_zp": za, "b_zp": zb, "y_zp": zy, "rounding": p.rounding,
             "acc_bits": acc_bits or p.acc_bits, **clamp_bounds(p, p.act)}
    span = (attrs["act_max"] - attrs["act_min"]) / 2
    mult, shift = rescale_for(p, acc, None, span, gain, rng)
    inputs = [tensor("a", a), tensor("b", b), param("multiplier", mult, np.int32),
              param("shift", shift, np.int32)]
    return case(p, "MatMul", name, inputs, attrs, doc=doc)


def matmul_cases(p: Profile) -> list[Case]:
    """MatMul of two activations: shapes, batch broadcasting, zero points, saturation."""
    cases = [
        _matmul(p, "2d", (3, 5), (5, 4), doc="plain [M, K] @ [K, N]"),
        _matmul(p, "batch_broadcast", (2, 1, 3, 6), (3, 6, 2), doc="batch dims broadcast"),
        _matmul(p, "saturate", (4, 7), (7, 3), gain=10.0, doc="outputs saturate at both ends"),
    ]
    if not p.symmetric:
        a_lo, a_hi = p.act_range
        cases.append(_matmul(p, "zp_extremes", (2, 8), (8, 3), zps=(a_lo, a_hi, a_hi),
                             doc="zero points at the type ends"))
    return cases
