"""The C kernels (ops/, module ortnpu.domain._native) equal the numpy references bit for bit.

Differential tests: each case is validated like onnxruntime would (``spec.validate``), run by
the numpy reference and by the C kernel, and compared with ``np.array_equal``. Every test runs
on every SIMD path the CPU has (AVX-512 VNNI, AVX2, portable C), most also on 1 and 2
threads. Randomized cases use fixed seeds; targeted cases cover the rounding ties, the
saturations, the zero points at the dtype extremes and every shift of every rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from ortnpu.domain import OPS_BY_NAME, kernels, native
from ortnpu.domain.arith import ROUNDING_RULES, quantize_multiplier, rescale_bounds

pytestmark = pytest.mark.usefixtures("require_c")  # fails when C is expected but missing

DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))
COUNT = {"cases": 0, "elements": 0}  # how much was compared (printed by tools, not asserted)


@pytest.fixture(params=["avx2", "scalar"])
def simd2(request: pytest.FixtureRequest) -> Iterator[str]:
    """The paths of code that has no AVX-512 variant (FC, elementwise, pooling)."""
    if request.param == "avx2" and not native.has_avx2():
        pytest.skip("this CPU has no AVX2")
    native.set_simd(request.param)
    yield request.param
    native.set_simd("auto")


@pytest.fixture(params=[1, 2])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    native.set_threads(request.param)
    monkeypatch.setattr(native, "PARALLEL_MIN_WORK", 0)   # small test shapes use every thread
    yield request.param
    native.set_threads(None)


def check(op: str, arrays: Sequence[np.ndarray], attrs: dict[str, Any] | None = None,
          out_dtype: Any = None) -> np.ndarray:
    """Validate, run both kernels, require identical dtype, shape and bits."""
    spec = OPS_BY_NAME[op]
    arrays = [np.asarray(a) for a in arrays]
    out = np.dtype(out_dtype) if out_dtype is not None else arrays[0].dtype
    full = spec.full_attrs(attrs or {})
    spec.validate(arrays, full, out)
    ref = spec.reference(arrays, full, out)
    got = native.KERNELS[op](arrays, full, out)
    COUNT["cases"] += 1
    COUNT["elements"] += ref.size
    assert got.dtype == ref.dtype and got.shape == ref.shape, (op, got.shape, ref.shape)
    if not np.array_equal(got, ref):
        bad = np.argwhere(got != ref)
        i = tuple(bad[0])
        raise AssertionError(f"{op} {native.simd()} {full}: {len(bad)} of {ref.size} differ; "
                             f"first at {i}: C {got[i]} != reference {ref[i]}")
    return ref


# ----------------------------------------------------------------------------- generators
def rand_act(rng: np.random.Generator, dtype: np.dtype, shape: Sequence[int],
             extreme: float = 0.1) -> np.ndarray:
    """Random values of a dtype, with a share of the two extremes."""
    info = np.iinfo(dtype)
    x = rng.integers(int(info.min), int(info.max) + 1, size=shape)
    pick = rng.random(size=shape)
    x = np.where(pick < extreme / 2, info.min, np.where(pick > 1 - extreme / 2, info.max, x))
    return x.astype(dtype)


def rand_zp(rng: np.random.Generator, dtype: np.dtype) -> int:
    info = np.iinfo(dtype)
    choice = rng.integers(0, 5)
    if choice == 0:
        return int(info.min)
    if choice == 1:
        return int(info.max)
    if choice == 2:
        return 0 if info.min < 0 else int(info.max // 2 + 1)
    return int(rng.integers(int(info.min), int(info.max) + 1))


def rescale_params(rng: np.random.Generator, rule: str, est: float, n: int,
                   wild: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) mapping accumulators of size ``est`` to about ±150,
    with a share ``wild`` of arbitrary in-range pairs (saturating or vanishing outputs)."""
    (mlo, mhi), (slo, shi) = rescale_bounds(rule)
    mult = np.empty(n, np.int64)
    shift = np.empty(n, np.int64)
    for c in range(n):
        if rng.random() < wild:
            mult[c] = rng.choice([mlo if rule != "half_up" else -(1 << 31), 0, 1, 1 << 30, mhi,
                                  int(rng.integers(mlo, mhi + 1))])
            shift[c] = rng.integers(slo, shi + 1)
            continue
        real = 150.0 / max(est, 1.0) * float(rng.uniform(0.3, 3.0))
        if rule == "half_up":
            m = int(rng.integers(1, 1 << 15)) * (-1 if rng.random() < 0.1 else 1)
            s = -round(math.log2(abs(m) / real))
            mult[c], shift[c] = m, min(max(s, slo), shi)
        else:
            q, s = quantize_multiplier(real)
            mult[c], shift[c] = q, min(max(s, slo), shi)
    return mult.astype(np.int32), shift.astype(np.int32)


def out_attrs(rng: np.random.Generator, out: np.dtype) -> dict[str, int]:
    """y_zp and clamp bounds inside the output type (a fused ReLU now and then)."""
    lo, hi = int(np.iinfo(out).min), int(np.iinfo(out).max)
    y_zp = rand_zp(rng, out)
    if rng.random() < 0.3:
        a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, size=2))
        return {"y_zp": y_zp, "act_min": a, "act_max": b}
    return {"y_zp": y_zp, "act_min": lo, "act_max": hi}


def one_of(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


# ---------------------------------------------------------------------------- rescale rules
def acc_patterns(rng: np.random.Generator) -> np.ndarray:
    """int16 inputs built around powers of two (rounding ties) and the extremes."""
    vals = [0, 1, -1, 2, -2, 3, -3, 32767, -32768, 32766, -32767]
    for j in range(1, 15):
        for d in (-1, 0, 1):
            vals += [(1 << j) + d, -(1 << j) + d, 3 * (1 << (j - 1)) + d, -3 * (1 << (j - 1)) + d]
    vals += list(rng.integers(-32768, 32768, size=64))
    return np.clip(np.array(vals, dtype=np.int64), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("rule", ROUNDING_RULES)
@pytest.mark.parametrize("acc_bits", [32, 64])
def test_rescale_every_shift(simd2: str, rule: str, acc_bits: int) -> None:
    """Every shift of the rule's range, multipliers 0, 1, 2^30, 2^31-1 (and the half_up
    negatives), accumulators around ties, across the int32 and int64 ranges (via the bias)."""
    rng = np.random.default_rng(1)
    (_, mhi), (slo, shi) = rescale_bounds(rule)
    mults = [0, 1, 3, 1 << 30, (1 << 30) + 1, mhi, int(rng.integers(1 << 30, mhi))]
    mults += [int(rng.integers(1 << j, 1 << (j + 1))) for j in (8, 14, 16, 20, 24, 27)]
    mults += [0x7FFF0000, 0x7FFEFFFF, 0x7FFF8000]  # tflite_int64's 15-bit reduction edge
    if rule in ("half_up", "tosa_double"):
        mults += [-1, -(1 << 31), -3]
    shifts = list(range(slo, shi + 1))
    grid = [(m, s) for m in mults for s in shifts]
    n = len(grid)
    mult = np.array([g[0] for g in grid], np.int32)
    shift = np.array([g[1] for g in grid], np.int32)
    x = acc_patterns(rng).reshape(-1, 1)
    for bias_kind in range(6):
        if bias_kind == 0:
            bias = np.zeros(n, np.int64)
        elif bias_kind == 1:   # ties of the right shift: bias = t * 2^(r-1)
            r = np.maximum(-shift.astype(np.int64), 1)
            t = rng.integers(-1000, 1000, size=n)
            bias = (t << np.minimum(r - 1, 40)).astype(np.int64)
        elif bias_kind == 2:   # around the int32 edges (wraps with acc_bits=32)
            bias = rng.choice([(1 << 31) - 5, -(1 << 31) + 5, (1 << 31), -(1 << 31) - 1], n)
        elif bias_kind == 3:   # around tflite_int64's 2^47 saturation
            bias = rng.choice([(1 << 47) - 3, -(1 << 47) + 3, (1 << 47) + 9, -(1 << 47) - 9,
                               (1 << 46), -(1 << 46) - 5], n)
        elif bias_kind == 4:   # the int64 extremes (products wrap like numpy's int64)
            bias = rng.choice([(1 << 63) - 1, -(1 << 63), (1 << 62), -(1 << 62)], n)
        else:
            bias = rng.integers(-(1 << 63), (1 << 63) - 1, size=n, endpoint=True)
        bias = np.asarray(bias, dtype=np.int64)
        w = rng.choice(np.array([1, -1, 127, -128], np.int8), size=(n, 1)).astype(np.int8)
        # int16 output: the widest window onto the int32 result of the rescale
        out = DTYPES[2] if bias_kind % 2 == 0 else one_of(rng, DTYPES)
        lo, hi = int(np.iinfo(out).min), int(np.iinfo(out).max)
        check("FullyConnected", [x, w, bias, mult, shift],
              {"rounding": rule, "acc_bits": acc_bits, "x_zp": 0, "y_zp": rand_zp(rng, out),
               "act_min": lo, "act_max": hi}, out)


@pytest.mark.parametrize("rule", ROUNDING_RULES)
def test_requantize_every_shift(simd2: str, rule: str) -> None:
    """Requantize over all shifts per channel, every input/output type and extreme zps."""
    rng = np.random.default_rng(2)
    (_, mhi), (slo, shi) = rescale_bounds(rule)
    shifts = np.arange(slo, shi + 1, dtype=np.int32)
    for xdt in DTYPES:
        for out in DTYPES:
            x = rand_act(rng, xdt, (2, len(shifts), 7), extreme=0.3)
            mult = rng.choice([0, 1, 1 << 30, mhi, int(rng.integers(1, mhi))],
                              size=len(shifts)).astype(np.int32)
            a = {"rounding": rule, "x_zp": rand_zp(rng, xdt), **out_attrs(rng, out), "axis": 1}
            check("Requantize", [x, mult, shifts], a, out)
            # channels on the last axis (per-element parameters inside a row)
            xt = np.ascontiguousarray(np.moveaxis(x, 1, -1))
            check("Requantize", [xt, mult, shifts], {**a, "axis": -1}, out)
            # per-tensor
            m1, s1 = rescale_params(rng, rule, 300.0, 1)
            check("Requantize", [x, m1, s1], a, out)


# ------------------------------------------------------------------------------------ Conv
def conv_case(rng: np.random.Generator, *, kind: str | None = None,
              xdt: np.dtype | None = None, acc_bits: int | None = None,
              rule: str | None = None) -> tuple[list[np.ndarray], dict[str, Any], np.dtype]:
    """A random valid Conv: dtypes, groups, window geometry, parameters."""
    kind = kind or one_of(rng, ["dense", "dense", "grouped", "depthwise", "depthwise_m2", "1x1"])
    xdt = xdt or one_of(rng, DTYPES)
    out = one_of(rng, DTYPES)
    rule = rule or one_of(rng, ROUNDING_RULES)
    acc_bits = acc_bits or int(one_of(rng, [32, 32, 64]))
    n = int(rng.integers(1, 3))
    if kind == "dense":
        g, cg, cout = 1, int(rng.integers(1, 9)), int(rng.integers(1, 11))
    elif kind == "grouped":
        g = int(rng.integers(2, 4))
        cg, cout = int(rng.integers(1, 5)), g * int(rng.integers(1, 4))
    elif kind == "depthwise":
        g = int(rng.integers(1, 9))
        cg, cout = 1, g
    elif kind == "depthwise_m2":
        g = int(rng.integers(1, 6))
        cg, cout = 1, 2 * g
    else:
        g, cg, cout = 1, int(rng.integers(1, 20)), int(rng.integers(1, 12))
    if kind == "1x1":
        kh = kw = 1
        sh = sw = dh = dw = 1
        pads = [0, 0, 0, 0] if rng.random() < 0.7 else list(rng.integers(0, 2, 4))
        if rng.random() < 0.3:
            sh = sw = 2
    else:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(one_of(rng, [1, 1, 2, 3])), int(one_of(rng, [1, 1, 2]))
        pads = list(rng.integers(0, 3, 4))
    h = int(rng.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 14))
    w_ = int(rng.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 14))
    x = rand_act(rng, xdt, (n, g * cg, h, w_))
    w = rand_act(rng, np.dtype(np.int8), (cout, cg, kh, kw), extreme=0.2)
    x_zp = rand_zp(rng, xdt)
    k = cg * kh * kw
    span = max(abs(int(np.iinfo(xdt).min) - x_zp), abs(int(np.iinfo(xdt).max) - x_zp))
    est = math.sqrt(k) * span * 60
    bias = rng.integers(-int(est), int(est) + 1, size=cout).astype(np.int64)
    pc = cout if rng.random() < 0.7 else 1
    mult, shift = rescale_params(rng, rule, est, pc)
    attrs = {"group": g, "stride_h": sh, "stride_w": sw, "dilation_h": dh, "dilation_w": dw,
             "pad_top": int(pads[0]), "pad_left": int(pads[1]), "pad_bottom": int(pads[2]),
             "pad_right": int(pads[3]), "x_zp": x_zp, "rounding": rule, "acc_bits": acc_bits,
             **out_attrs(rng, out)}
    return [x, w, bias, mult, shift], attrs, out


def test_conv_random(simd: str, threads: int) -> None:
    rng = np.random.default_rng(10)
    for _ in range(160):
        arrays, attrs, out = conv_case(rng)
        check("Conv", arrays, attrs, out)


@pytest.mark.parametrize("kind", ["dense", "grouped", "depthwise", "depthwise_m2", "1x1"])
def test_conv_kinds_every_dtype(simd: str, kind: str) -> None:
    rng = np.random.default_rng(11)
    for xdt in DTYPES:
        for rule in ROUNDING_RULES:
            for acc_bits in (32, 64):
                arrays, attrs, out = conv_case(rng, kind=kind, xdt=xdt, rule=rule,
                                               acc_bits=acc_bits)
                check("Conv", arrays, attrs, out)


@pytest.mark.parametrize("path", ["channels_last", "rows"])
def test_depthwise_both_kernels(simd: str, path: str) -> None:
    """Depthwise convs on small maps run channels-last unless ORTNPU_DW_ROWS forces rows."""
    native._native.lib.ortnpu_force_dw_rows(1 if path == "rows" else 0)
    try:
        rng = np.random.default_rng(13)
        for xdt in DTYPES:
            for rule in ROUNDING_RULES:
                for _ in range(6):
                    arrays, attrs, out = conv_case(rng, kind="depthwise", xdt=xdt, rule=rule,
                                                   acc_bits=32)
                    check("Conv", arrays, attrs, out)
    finally:
        native._native.lib.ortnpu_force_dw_rows(0)


def test_depthwise_channels_last_transposes(simd: str) -> None:
    """The channels-last path's vector transposes: blocks of 16 channels and 8 pixels in, 4x4
    blocks out, with channel, row and pixel tails (channels 8 to 48, widths 3 to 17)."""
    rng = np.random.default_rng(14)
    for xdt in DTYPES:
        for c, h, w, k, stride, pad in [(16, 8, 8, 3, 1, 1), (40, 9, 17, 3, 1, 1),
                                        (24, 14, 14, 3, 2, 1), (8, 5, 3, 3, 1, 0),
                                        (33, 12, 11, 5, 2, 2), (48, 7, 16, 3, 1, 1)]:
            x = rand_act(rng, xdt, (1, c, h, w), extreme=0.2)
            wt = rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8)
            bias = rng.integers(-5000, 5000, c).astype(np.int64)
            mult = rng.integers(1 << 29, (1 << 31) - 1, c).astype(np.int32)
            shift = rng.integers(-12, -4, c).astype(np.int32)
            lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
            attrs = {"group": c, "stride_h": stride, "stride_w": stride, "pad_top": pad,
                     "pad_left": pad, "pad_bottom": pad, "pad_right": pad,
                     "x_zp": int(rng.integers(lo, hi + 1)), "y_zp": 3}
            check("Conv", [x, wt, bias, mult, shift], attrs, np.int8)


def test_depthwise_3x3_rows_whole_vectors_and_tails(simd: str) -> None:
    """The rows path's 3x3 row kernel on wide maps: whole 512-bit blocks (32 outputs at stride
    1, 16 at stride 2) then the AVX2 tail, widths around every block edge, extreme weights and
    inputs, zero points at both ends."""
    native._native.lib.ortnpu_force_dw_rows(1)
    try:
        rng = np.random.default_rng(16)
        for xdt in DTYPES:
            lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
            for w, stride, pad in [(31, 1, 1), (32, 1, 0), (33, 1, 1), (34, 1, 0), (47, 1, 1),
                                   (64, 1, 1), (65, 1, 0), (100, 1, 1), (30, 2, 1), (32, 2, 0),
                                   (33, 2, 1), (34, 2, 1), (64, 2, 1), (67, 2, 0), (99, 2, 1)]:
                c, h = 3, 4
                x = rand_act(rng, xdt, (1, c, h, w), extreme=0.3)
                wt = rng.choice(np.array([-128, 127, -1, 0, 1, 77], np.int8), (c, 1, 3, 3))
                bias = rng.integers(-9000, 9000, c).astype(np.int64)
                mult = rng.integers(1 << 29, (1 << 31) - 1, c).astype(np.int32)
                shift = rng.integers(-12, -4, c).astype(np.int32)
                attrs = {"group": c, "stride_h": stride, "stride_w": stride, "pad_top": pad,
                         "pad_left": pad, "pad_bottom": pad, "pad_right": pad,
                         "x_zp": int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))])),
                         "y_zp": 7}
                check("Conv", [x, wt, bias, mult, shift], attrs, np.int8)
    finally:
        native._native.lib.ortnpu_force_dw_rows(0)


def test_depthwise_channels_last_pads_pairs_threads(simd: str, threads: int) -> None:
    """The channels-last path's zero-point border (only the padding is filled, once per call,
    then every sample overwrites the interior), its output pixels in pairs along a row (odd
    widths end on a single pixel, stride 2 steps the pair), the copy split over threads by
    channel blocks; two samples, pads of 0 to 2 on each side, extreme weights (-128, 127)."""
    rng = np.random.default_rng(15)
    for xdt in DTYPES:
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        for c, h, w, stride, pads in [(32, 7, 7, 1, (0, 1, 2, 0)), (48, 9, 13, 2, (2, 0, 1, 2)),
                                      (20, 6, 5, 1, (1, 2, 0, 1)), (64, 14, 14, 2, (0, 0, 1, 1))]:
            x = rand_act(rng, xdt, (2, c, h, w), extreme=0.3)
            wt = rng.choice(np.array([-128, 127, -1, 0, 1, 77], np.int8), (c, 1, 3, 3))
            bias = rng.integers(-9000, 9000, c).astype(np.int64)
            mult = rng.integers(1 << 29, (1 << 31) - 1, c).astype(np.int32)
            shift = rng.integers(-12, -4, c).astype(np.int32)
            attrs = {"group": c, "stride_h": stride, "stride_w": stride, "pad_top": pads[0],
                     "pad_left": pads[1], "pad_bottom": pads[2], "pad_right": pads[3],
                     "x_zp": int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))])),
                     "y_zp": -5}
            check("Conv", [x, wt, bias, mult, shift], attrs, np.int8)


def test_depthwise_byte_permutes(simd: str, threads: int) -> None:
    """The byte-permute depthwise path (AVX-512 VBMI; elsewhere these shapes test the other
    paths): rows of 16-output vectors with partial last vectors (widths 17 to 57) and groups of
    4 rows with row tails, strides 1 to 3, whole-row vectors of narrow maps (widths 3 to 8:
    2 to 5 rows per vector, the last one short), kernels of 1 to 16 columns (1 to 4 tap quads
    per row), 1 to 7 rows, column dilation, a depth multiplier of 2, int8 and uint8 inputs at
    extreme zero points (int8 values move by 128 in the plane), weights -128 and 127,
    wrapping and exact accumulators, two samples, one multiplier or one per channel."""
    rng = np.random.default_rng(18)
    cases = [  # c, mult, h, w, kh, kw, stride, dil_w, pads (t, l, b, r)
        (5, 1, 11, 17, 3, 3, 1, 1, (1, 1, 1, 1)), (4, 1, 9, 33, 3, 3, 2, 1, (0, 1, 1, 0)),
        (3, 1, 21, 57, 3, 3, 1, 1, (1, 1, 1, 1)), (6, 1, 13, 40, 5, 5, 1, 1, (2, 2, 2, 2)),
        (3, 1, 16, 30, 5, 5, 2, 1, (2, 1, 2, 2)), (4, 1, 22, 40, 3, 3, 3, 1, (1, 1, 1, 1)),
        (2, 1, 12, 24, 1, 16, 1, 1, (0, 7, 0, 8)), (3, 1, 14, 26, 7, 1, 1, 1, (3, 0, 3, 0)),
        (3, 1, 9, 30, 3, 9, 1, 2, (1, 8, 1, 8)), (4, 2, 12, 12, 3, 3, 1, 1, (1, 1, 1, 1)),
        (5, 1, 20, 8, 3, 3, 1, 1, (1, 1, 1, 1)), (4, 1, 22, 5, 3, 3, 1, 1, (1, 1, 1, 1)),
        (3, 1, 31, 7, 5, 5, 2, 1, (2, 2, 2, 2)), (4, 2, 17, 3, 3, 3, 1, 1, (0, 0, 0, 0)),
        (2, 1, 44, 6, 3, 3, 2, 1, (1, 1, 1, 1)), (3, 1, 9, 64, 3, 13, 2, 1, (1, 6, 1, 6)),
    ]
    for xdt in (np.dtype(np.int8), np.dtype(np.uint8)):
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        for i, (c, mdw, h, w, kh, kw, stride, dil, pads) in enumerate(cases):
            acc_bits = 64 if i % 4 == 3 else 32
            x = rand_act(rng, xdt, (2, c, h, w), extreme=0.3)
            wt = rng.choice(np.array([-128, 127, -1, 0, 1, 77, -90], np.int8),
                            (c * mdw, 1, kh, kw))
            est = kh * kw * 128 * 200
            bias = rng.integers(-est, est, c * mdw).astype(np.int64)
            mult, shift = rescale_params(rng, "tflite_double", est, c * mdw if i % 2 else 1,
                                         wild=0.0)
            attrs = {"group": c, "stride_h": stride, "stride_w": stride, "dilation_w": dil,
                     "pad_top": pads[0], "pad_left": pads[1], "pad_bottom": pads[2],
                     "pad_right": pads[3], "acc_bits": acc_bits,
                     "x_zp": int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))])),
                     **out_attrs(rng, np.dtype(np.int8))}
            check("Conv", [x, wt, bias, mult, shift], attrs, np.int8)


@pytest.mark.parametrize("per_channel", [False, True])
def test_depthwise_global_window(simd: str, threads: int, per_channel: bool) -> None:
    """A depthwise window over the whole unpadded plane (a global average pool lowered to a
    convolution) is one dot product per channel and one epilogue over the channels: every
    dtype and rule, one multiplier or one per channel (the lanes epilogue), two samples,
    channel counts off the vector widths, planes of 1x1 to 7x7, extreme weights, wrapping
    sums (int16 inputs and weights -128 make sums beyond int32 on 32-bit accumulators)."""
    rng = np.random.default_rng(16)
    for xdt in DTYPES:
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        for rule in ROUNDING_RULES:
            for c, h, w in [(1280, 7, 7), (37, 3, 5), (9, 1, 1), (16, 2, 2)]:
                x = rand_act(rng, xdt, (2, c, h, w), extreme=0.5)
                wt = rng.choice(np.array([-128, 127, -1, 5, 1], np.int8), (c, 1, h, w))
                est = h * w * 128 * (256 if xdt.itemsize == 1 else 20000)
                bias = rng.integers(-est, est, c).astype(np.int64)
                n = c if per_channel else 1
                mult, shift = rescale_params(rng, rule, est, n, wild=0.0)
                out = np.int16 if xdt == np.int16 else np.int8
                attrs = {"group": c, "rounding": rule, "x_zp": int(rng.choice([lo, hi, 0])),
                         "acc_bits": 32, **out_attrs(rng, np.dtype(out))}
                check("Conv", [x, wt, bias, mult, shift], attrs, out)


def test_conv_narrow_last_slice(simd: str, threads: int) -> None:
    """Grids whose last 16-column slice keeps at most 8 columns take the 8-column tile (7x7
    maps: 49 = 3 x 16 + 1; 3x3 pad 1 on 5x5: 33 grid pixels) on both int16 tile orders (im2col
    tile in L1 with few taps, or slice by slice), channel blocks of 1-4 rows, extreme values."""
    rng = np.random.default_rng(17)
    for cin, cout, hw, k in [(8, 13, 7, 1), (200, 13, 7, 1), (40, 6, 5, 3), (96, 33, 7, 1),
                             (3, 5, 3, 1), (320, 9, 15, 1), (5, 7, 7, 1), (9, 6, 5, 3)]:
        for xdt in DTYPES[:2]:
            x = rand_act(rng, xdt, (2, cin, hw, hw), extreme=0.3)
            w = rand_act(rng, np.dtype(np.int8), (cout, cin, k, k), extreme=0.3)
            est = math.sqrt(cin * k * k) * 128 * 90
            bias = rng.integers(-int(est), int(est), size=cout).astype(np.int64)
            mult, shift = rescale_params(rng, "tflite_double", est, cout, wild=0.0)
            a = {"group": 1, "pad_top": k // 2, "pad_left": k // 2, "pad_bottom": k // 2,
                 "pad_right": k // 2, "x_zp": int(rand_zp(rng, xdt)), "y_zp": -7}
            check("Conv", [x, w, bias, mult, shift], a, np.int8)


def test_conv_larger_shapes(simd: str, threads: int) -> None:
    """Shapes that span several pixel tiles and cout blocks (the GEMM tiling, the 1x1 path)."""
    rng = np.random.default_rng(12)
    for (cin, cout, hw, k, g, stride, pad) in [(16, 24, 20, 3, 1, 1, 1), (32, 20, 17, 1, 1, 1, 0),
                                               (24, 24, 23, 3, 24, 2, 1), (8, 13, 31, 5, 1, 2, 2),
                                               (12, 12, 19, 3, 3, 1, 1)]:
        x = rand_act(rng, np.dtype(np.int8), (2, cin, hw, hw))
        w = rand_act(rng, np.dtype(np.int8), (cout, cin // g, k, k))
        est = math.sqrt(cin // g * k * k) * 128 * 60
        bias = rng.integers(-int(est), int(est), size=cout).astype(np.int64)
        mult, shift = rescale_params(rng, "tflite_double", est, cout, wild=0.0)
        a = {"group": g, "stride_h": stride, "stride_w": stride, "pad_top": pad,
             "pad_left": pad, "pad_bottom": pad, "pad_right": pad, "x_zp": -3, "y_zp": 4}
        check("Conv", [x, w, bias, mult, shift], a, np.int8)


@pytest.mark.parametrize("out", [np.int8, np.uint8])
def test_conv_8bit_epilogue_32_wide(simd: str, out: type) -> None:
    """The 8-bit epilogue that packs 32 outputs at once (int16 then 8-bit saturating packs, the
    zero point added in int16, the clamp on bytes): zero points at both ends of the type, narrow
    clamps, multipliers with left shifts, sums far outside the output range (the saturating
    packs at work), rows of 32k + a tail."""
    rng = np.random.default_rng(15)
    lo, hi = int(np.iinfo(out).min), int(np.iinfo(out).max)
    for y_zp in (lo, lo + 1, (lo + hi) // 2, hi - 1, hi):
        for act_min, act_max in ((lo, hi), (lo + 7, lo + 9), (hi - 1, hi), (lo + 40, hi - 90)):
            x = rand_act(rng, np.dtype(np.int8), (1, 8, 9, 11), extreme=0.3)
            w = rand_act(rng, np.dtype(np.int8), (6, 8, 1, 1), extreme=0.3)
            bias = rng.integers(-40000, 40000, size=6).astype(np.int64)
            mult, shift = rescale_params(rng, "tflite_double", 2000.0, 6, wild=0.5)
            if act_max - act_min > 100:  # every shift kind: left by 1 and 2, none, right
                shift = np.array([1, 2, 0, -1, -9, -20], np.int32)
            a = {"x_zp": int(rng.integers(-128, 128)), "y_zp": y_zp, "act_min": act_min,
                 "act_max": act_max}
            check("Conv", [x, w, bias, mult, shift], a, out)


@pytest.mark.parametrize("xdt", DTYPES)
def test_conv_wide_rows_every_stride_phase(simd: str, xdt: np.dtype) -> None:
    """Rows wide enough for the vector loops of the stride-phase split (even and odd left
    pads, strides 2 and 3) and of the depthwise pair rows."""
    rng = np.random.default_rng(14)
    for (cin, cout, hw, k, g, stride, pad) in [(3, 16, 70, 3, 1, 2, 1), (3, 8, 67, 3, 1, 2, 0),
                                               (5, 8, 66, 4, 1, 2, 3), (4, 6, 50, 3, 1, 3, 1),
                                               (8, 8, 71, 3, 8, 2, 1), (8, 8, 40, 3, 8, 1, 1)]:
        x = rand_act(rng, xdt, (1, cin, hw, hw))
        w = rand_act(rng, np.dtype(np.int8), (cout, cin // g, k, k))
        est = math.sqrt(cin // g * k * k) * 255 * 60
        bias = rng.integers(-int(est), int(est), size=cout).astype(np.int64)
        mult, shift = rescale_params(rng, "tflite_double", est, cout, wild=0.0)
        a = {"group": g, "stride_h": stride, "stride_w": stride, "pad_top": pad,
             "pad_left": pad, "pad_bottom": pad, "pad_right": pad + 1,
             "x_zp": rand_zp(rng, xdt), "y_zp": 4}
        check("Conv", [x, w, bias, mult, shift], a, np.int8)


def test_conv_int16_acc64_exact(simd: str) -> None:
    """int16 inputs with |sum| far beyond int32: the 64-bit accumulator must be exact (the
    int32 blocks of the AVX2/portable GEMM), the 32-bit one must wrap."""
    rng = np.random.default_rng(13)
    x = np.full((1, 64, 6, 6), -32768, np.int16)
    x[0, :, ::2, ::3] = 32767
    w = np.full((4, 64, 3, 3), -128, np.int8)
    w[1] = 127
    w[2] = rand_act(rng, np.dtype(np.int8), (64, 3, 3))
    bias = np.array([0, 1 << 40, -(1 << 33), 5], np.int64)
    for rule in ROUNDING_RULES:
        for acc_bits in (32, 64):
            mult, shift = rescale_params(rng, rule, 2.0 ** 33, 4, wild=0.0)
            for pad in (0, 1):
                a = {"rounding": rule, "acc_bits": acc_bits, "pad_top": pad, "pad_left": pad,
                     "pad_bottom": pad, "pad_right": pad, "x_zp": int(one_of(rng, [0, -32768]))}
                check("Conv", [x, w, bias, mult, shift], a, np.int16)
    # depthwise with a kernel so large that int32 blocks are needed (kh*kw*2^22 > 2^31)
    xd = np.full((1, 2, 24, 24), -32768, np.int16)
    wd = np.full((2, 1, 23, 23), -128, np.int8)
    mult, shift = rescale_params(rng, "tflite_int64", 2.0 ** 33, 2, wild=0.0)
    for acc_bits in (32, 64):
        check("Conv", [xd, wd, np.zeros(2, np.int64), mult, shift],
              {"group": 2, "rounding": "tflite_int64", "acc_bits": acc_bits, "pad_top": 1},
              np.int16)


def test_huge_k_8bit_acc64_blocks(simd: str) -> None:
    """K = 140000 8-bit taps at the extremes: beyond one exact int32 block of every path
    (int16 pairs, u8 quads, FC dot blocks), so the 64-bit sums go through the block adds."""
    k = 140000
    for xdt, xval, x_zp in ((np.int8, -128, 127), (np.uint8, 255, 0), (np.int8, 127, -128)):
        x = np.full((1, k, 1, 1), xval, xdt)
        w = np.full((3, k, 1, 1), -128, np.int8)
        w[1] = 127
        w[2, ::3] = 5
        bias = np.array([0, 1 << 35, -7], np.int64)
        for acc_bits in (32, 64):
            mult, shift = rescale_params(np.random.default_rng(3), "tflite_double", 2.0 ** 40, 3,
                                         wild=0.0)
            attrs = {"acc_bits": acc_bits, "x_zp": x_zp, "y_zp": 0, "act_min": -32768,
                     "act_max": 32767}
            check("Conv", [x, w, bias, mult, shift], attrs, np.int16)
            check("FullyConnected", [x.reshape(1, k), w.reshape(3, k), bias, mult, shift],
                  attrs, np.int16)


def test_conv_ties_and_saturation(simd: str) -> None:
    """Accumulators on exact .5 points of the final shift, and outputs beyond both ends."""
    x = np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(1, 1, 16, 16)
    w = np.ones((6, 1, 1, 1), np.int8)
    w[3:] = -1
    bias = np.array([0, 1, -1, 0, 1 << 20, -(1 << 20)], np.int64)
    for rule in ROUNDING_RULES:
        (_, mhi), _ = rescale_bounds(rule)
        # multiplier 2^30 with shift -1 halves twice: .5 and .25 ties everywhere
        for m, s in [(1 << 30, -1), (1 << 30, 0), (mhi, -1), (1 << 30, -3), (mhi, 5)]:
            if rule == "tflite_int64" and s > 7:
                continue
            mult = np.full(6, m, np.int32)
            shift = np.full(6, s, np.int32)
            for out in DTYPES:
                lo, hi = int(np.iinfo(out).min), int(np.iinfo(out).max)
                check("Conv", [x, w, bias, mult, shift],
                      {"rounding": rule, "x_zp": 0, "y_zp": 0, "act_min": lo, "act_max": hi},
                      out)


# ------------------------------------------------------------------------ FC and MatMul
def test_fully_connected_random(simd2: str) -> None:
    rng = np.random.default_rng(20)
    for i in range(120):
        xdt, out = one_of(rng, DTYPES), one_of(rng, DTYPES)
        rule, acc_bits = one_of(rng, ROUNDING_RULES), int(one_of(rng, [32, 64]))
        k = int(one_of(rng, [1, 2, 7, 16, 17, 33, 100, 600]))
        n = int(rng.integers(1, 11))
        lead = one_of(rng, [(1,), (3,), (2, 3), (5,), ()])
        if i % 10 == 0:
            lead = (1,)
        x = rand_act(rng, xdt, (*lead, k))
        w = rand_act(rng, np.dtype(np.int8), (n, k))
        x_zp = rand_zp(rng, xdt)
        est = math.sqrt(k) * 128 * max(abs(int(np.iinfo(xdt).min) - x_zp), 128)
        bias = rng.integers(-int(est), int(est) + 1, size=n).astype(np.int64)
        mult, shift = rescale_params(rng, rule, est, n if rng.random() < 0.7 else 1)
        check("FullyConnected", [x, w, bias, mult, shift],
              {"x_zp": x_zp, "rounding": rule, "acc_bits": acc_bits, **out_attrs(rng, out)}, out)


def test_fully_connected_int16_acc64_blocks(simd2: str) -> None:
    """K = 1500 int16 at the extremes: sums need 64 bits; exact blocks of 496."""
    x = np.full((3, 1500), -32768, np.int16)
    x[1] = 32767
    x[2, ::7] = 12345
    w = np.full((5, 1500), -128, np.int8)
    w[1] = 127
    w[3, ::2] = 100
    bias = np.array([0, -5, 1 << 45, -(1 << 45), 7], np.int64)
    for rule in ROUNDING_RULES:
        for acc_bits in (32, 64):
            for x_zp in (0, 32767, -32768):
                mult, shift = rescale_params(np.random.default_rng(0), rule, 2.0 ** 37, 5,
                                             wild=0.0)
                check("FullyConnected", [x, w, bias, mult, shift],
                      {"rounding": rule, "acc_bits": acc_bits, "x_zp": x_zp, "y_zp": 0,
                       "act_min": -32768, "act_max": 32767}, np.int16)


def test_matmul_random(simd: str, threads: int) -> None:
    rng = np.random.default_rng(30)
    for _ in range(100):
        adt, bdt, out = one_of(rng, DTYPES), one_of(rng, DTYPES), one_of(rng, DTYPES)
        rule, acc_bits = one_of(rng, ROUNDING_RULES), int(one_of(rng, [32, 64]))
        m, k, n = (int(v) for v in rng.integers(1, 20, 3))
        if rng.random() < 0.2:
            k = int(rng.integers(200, 700))
        ba, bb = one_of(rng, [((), ()), ((2,), (2,)), ((3, 1), (1, 2)), ((2,), ()), ((), (3,))])
        xa = rand_act(rng, adt, (*ba, m, k))
        xb = rand_act(rng, bdt, (*bb, k, n))
        a_zp, b_zp = rand_zp(rng, adt), rand_zp(rng, bdt)
        est = math.sqrt(k) * 200.0 * 200.0 * (200 if adt.itemsize == 2 else 1)
        mult, shift = rescale_params(rng, rule, est, 1)
        check("MatMul", [xa, xb, mult, shift],
              {"a_zp": a_zp, "b_zp": b_zp, "rounding": rule, "acc_bits": acc_bits,
               **out_attrs(rng, out)}, out)


def test_matmul_int16_extremes(simd: str) -> None:
    """int16 x int16 at the extremes (products 2^30, pair sums 2^31) and zero points."""
    xa = np.full((2, 5, 40), -32768, np.int16)
    xb = np.full((2, 40, 6), -32768, np.int16)
    xa[1, ::2] = 32767
    for rule in ROUNDING_RULES:
        for acc_bits in (32, 64):
            for zps in ((0, 0), (32767, -32768), (0, 5)):
                mult, shift = rescale_params(np.random.default_rng(1), rule, 2.0 ** 36, 1,
                                             wild=0.0)
                check("MatMul", [xa, xb, mult, shift],
                      {"a_zp": zps[0], "b_zp": zps[1], "rounding": rule, "acc_bits": acc_bits,
                       "y_zp": 0, "act_min": -32768, "act_max": 32767}, np.int16)


# --------------------------------------------------------------------------- elementwise
def elementwise_shapes(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return one_of(rng, [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)),
                        ((4, 1, 6), (1, 5, 6)), ((7,), ()), ((), (3, 2)), ((1, 8, 300), (8, 1)),
                        ((3, 1), (1, 1000)), ((2, 2, 2, 2, 2, 3), (2, 1, 2, 1, 2, 1))])


def test_add_random(simd2: str) -> None:
    rng = np.random.default_rng(40)
    for _ in range(150):
        sa, sb = elementwise_shapes(rng)
        adt, bdt, out = one_of(rng, DTYPES), one_of(rng, DTYPES), one_of(rng, DTYPES)
        rule = one_of(rng, ROUNDING_RULES)
        ls = int(one_of(rng, [20, 15, 0, 31, int(rng.integers(0, 32))]))
        a_zp, b_zp = rand_zp(rng, adt), rand_zp(rng, bdt)
        est = 65536.0 * 2.0 ** ls
        ma, sha = rescale_params(rng, rule, est / 2 ** 20, 1)
        mb, shb = rescale_params(rng, rule, est / 2 ** 20, 1)
        my, shy = rescale_params(rng, rule, 2.0 ** 20 / 150, 1)
        attrs = {"a_zp": a_zp, "b_zp": b_zp, "left_shift": ls, "rounding": rule,
                 "a_multiplier": int(ma[0]), "a_shift": int(sha[0]),
                 "b_multiplier": int(mb[0]), "b_shift": int(shb[0]),
                 "y_multiplier": int(my[0]), "y_shift": int(shy[0]), **out_attrs(rng, out)}
        check("Add", [rand_act(rng, adt, sa), rand_act(rng, bdt, sb)], attrs, out)


@pytest.mark.parametrize("op", ["Sub", "SquaredDifference"])
def test_sub_random(op: str) -> None:
    """TFLite's SUB (Add's scheme with b's multiplier negated) and SQUARED_DIFFERENCE (Add's
    rescales, the difference squared with int32 wrap) in C, every rounding rule."""
    rng = np.random.default_rng(42)
    for _ in range(300):
        sa, sb = elementwise_shapes(rng)
        adt, bdt, out = one_of(rng, DTYPES), one_of(rng, DTYPES), one_of(rng, DTYPES)
        rule = one_of(rng, ROUNDING_RULES)
        ls = int(one_of(rng, [20, 15, 7, 0, 31, int(rng.integers(0, 32))]))
        est = 65536.0 * 2.0 ** ls
        ma, sha = rescale_params(rng, rule, est / 2 ** 20, 1)
        mb, shb = rescale_params(rng, rule, est / 2 ** 20, 1)
        my, shy = rescale_params(rng, rule, 2.0 ** 20 / 150, 1)
        if rule == "half_up" and rng.random() < 0.3:
            mb = -mb   # half_up multipliers may be negative: negated again by the kernel
        attrs = {"a_zp": rand_zp(rng, adt), "b_zp": rand_zp(rng, bdt), "left_shift": ls,
                 "rounding": rule, "a_multiplier": int(ma[0]), "a_shift": int(sha[0]),
                 "b_multiplier": int(mb[0]), "b_shift": int(shb[0]),
                 "y_multiplier": int(my[0]), "y_shift": int(shy[0]), **out_attrs(rng, out)}
        check(op, [rand_act(rng, adt, sa), rand_act(rng, bdt, sb)], attrs, out)


@pytest.mark.parametrize("op", ["Maximum", "Minimum"])
def test_maximum_minimum_random(op: str) -> None:
    rng = np.random.default_rng(43)
    for _ in range(100):
        sa, sb = elementwise_shapes(rng)
        dt = one_of(rng, DTYPES)
        check(op, [rand_act(rng, dt, sa), rand_act(rng, dt, sb)], {}, dt)


def test_slice_random() -> None:
    """Slice as a strided copy: negative and large steps, clamped and negative bounds."""
    rng = np.random.default_rng(44)
    for _ in range(300):
        shape = tuple(int(d) for d in rng.integers(1, 7, int(rng.integers(1, 6))))
        dt = one_of(rng, DTYPES)
        n = int(rng.integers(1, len(shape) + 1))
        axes = rng.permutation(len(shape))[:n] - (len(shape) if rng.random() < 0.3 else 0)
        steps = rng.choice([1, 1, 2, 3, -1, -2, 7], n)
        starts = rng.integers(-8, 8, n)
        ends = rng.choice([-9, -1, 0, 2, 5, 8, 2 ** 62, -(2 ** 62)], n)
        check("Slice", [rand_act(rng, dt, shape), starts.astype(np.int64),
                        ends.astype(np.int64), axes.astype(np.int64), steps.astype(np.int64)])


@pytest.mark.parametrize("step", [-6808833013370616367, (1 << 63) - 1, -(1 << 63), 1 << 62])
def test_slice_with_a_huge_step_takes_one_element(step: int) -> None:
    """ONNX allows any step; a huge one takes the first element only. Its stride (step times
    the axis's stride) overflowed int64 in the C wrapper: OverflowError inside the kernel
    (edge fuzz seed 0 case 76, through onnxruntime)."""
    x = np.arange(72, dtype=np.int8).reshape(2, 6, 6)
    for axis in (0, 1, -1):
        start = 0 if step > 0 else -1
        end = (1 << 62) if step > 0 else -(1 << 62)
        check("Slice", [x, np.array([start], np.int64), np.array([end], np.int64),
                        np.array([axis], np.int64), np.array([step], np.int64)])


def test_mul_random(simd2: str) -> None:
    rng = np.random.default_rng(41)
    for _ in range(150):
        sa, sb = elementwise_shapes(rng)
        adt, bdt, out = one_of(rng, DTYPES), one_of(rng, DTYPES), one_of(rng, DTYPES)
        rule = one_of(rng, ROUNDING_RULES)
        m, s = rescale_params(rng, rule, 1e4 if adt.itemsize + bdt.itemsize == 2 else 1e9, 1)
        attrs = {"a_zp": rand_zp(rng, adt), "b_zp": rand_zp(rng, bdt), "rounding": rule,
                 "multiplier": int(m[0]), "shift": int(s[0]), **out_attrs(rng, out)}
        check("Mul", [rand_act(rng, adt, sa), rand_act(rng, bdt, sb)], attrs, out)


def test_lut_every_type(simd2: str) -> None:
    rng = np.random.default_rng(50)
    for xdt in DTYPES:
        for out in DTYPES:
            table = rand_act(rng, out, (1 << (8 * xdt.itemsize),))
            x = rand_act(rng, xdt, (3, 7, 50), extreme=0.2)
            check("Lut", [x, table], {}, out)


# ------------------------------------------------------------------------------- pooling
def test_pools_random(simd2: str) -> None:
    rng = np.random.default_rng(60)
    for _ in range(120):
        xdt = one_of(rng, DTYPES)
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pads = [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]
        h = int(rng.integers(max(1, kh - pads[0] - pads[2]), 12))
        w = int(rng.integers(max(1, kw - pads[1] - pads[3]), 12))
        x = rand_act(rng, xdt, (int(rng.integers(1, 3)), int(rng.integers(1, 5)), h, w))
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        if rng.random() < 0.3:
            lo, hi = sorted(int(v) for v in rng.integers(lo, hi + 1, 2))
        base = {"kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                "pad_top": pads[0], "pad_left": pads[1], "pad_bottom": pads[2],
                "pad_right": pads[3], "act_min": lo, "act_max": hi}
        check("AveragePool", [x], base)
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        fits_h = dh * (kh - 1) + 1 <= h + pads[0] + pads[2]
        if fits_h and dw * (kw - 1) + 1 <= w + pads[1] + pads[3]:
            check("MaxPool", [x], {**base, "dilation_h": dh, "dilation_w": dw})
        check("GlobalAveragePool", [x], {"act_min": lo, "act_max": hi})


def test_max_pool_2x2_wide_rows(simd2: str) -> None:
    """2x2 stride-2 max pooling on rows wide enough for the vector steps (8 outputs, the last
    step overlapping the previous one), odd sizes, clamps inside the type, every 8-bit type."""
    rng = np.random.default_rng(61)
    for xdt in DTYPES:
        for h, w in [(16, 16), (17, 23), (28, 28), (9, 34), (4, 18)]:
            x = rand_act(rng, xdt, (2, 3, h, w), extreme=0.3)
            lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
            for a_min, a_max in [(lo, hi), (lo + 20, hi - 30)]:
                check("MaxPool", [x], {"kernel_h": 2, "kernel_w": 2, "stride_h": 2,
                                       "stride_w": 2, "act_min": a_min, "act_max": a_max})


def test_max_pool_3_stride_2_rows(simd2: str, threads: int) -> None:
    """3-wide windows at stride 2 on 8-bit planes (SSE2, 8 outputs per step, the rest one at a
    time): widths around the vector steps, with and without padding (only the padding of the
    copy is filled with the type's minimum, once per plane), clamps inside the type."""
    rng = np.random.default_rng(63)
    for xdt in DTYPES:
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        for h, w, pads in [(9, 17, (0, 0, 0, 0)), (7, 18, (1, 1, 1, 1)), (6, 35, (0, 1, 1, 0)),
                           (11, 36, (1, 0, 0, 1)), (5, 49, (2, 2, 1, 2)), (3, 3, (0, 0, 0, 0))]:
            x = rand_act(rng, xdt, (2, 3, h, w), extreme=0.4)
            for a_min, a_max in [(lo, hi), (lo + 20, hi - 30)]:
                check("MaxPool", [x], {"kernel_h": 3, "kernel_w": 3, "stride_h": 2,
                                       "stride_w": 2, "pad_top": pads[0], "pad_left": pads[1],
                                       "pad_bottom": pads[2], "pad_right": pads[3],
                                       "act_min": a_min, "act_max": a_max}, xdt)


def test_pool_edges(simd2: str) -> None:
    """Average ties (±.5 with truncating division), windows holding only padding (MaxPool with
    dilation), GlobalAveragePool ties."""
    x = np.array([[[[0, 1, -1, 0, 2, -3, 5, -6]]]], np.int8)
    check("AveragePool", [x], {"kernel_h": 1, "kernel_w": 2, "stride_w": 2})
    check("AveragePool", [x], {"kernel_h": 1, "kernel_w": 4, "stride_w": 1, "pad_left": 3,
                               "pad_right": 3})
    check("GlobalAveragePool", [x.reshape(1, 4, 1, 2)], {})
    xm = np.arange(16, dtype=np.int16).reshape(1, 1, 4, 4) - 100
    check("MaxPool", [xm], {"kernel_h": 2, "kernel_w": 1, "dilation_h": 5, "pad_top": 1,
                            "pad_bottom": 1, "act_min": -50, "act_max": 50}, np.int16)
    # padded max pooling (the padded-copy path): windows mostly padding, act_min at and above
    # the type's minimum, ResNet's stem pool
    rng = np.random.default_rng(62)
    for xdt in DTYPES:
        lo, hi = int(np.iinfo(xdt).min), int(np.iinfo(xdt).max)
        xp = rand_act(rng, xdt, (1, 2, 5, 6), extreme=0.5)
        for a_min in (lo, lo + 7):
            check("MaxPool", [xp], {"kernel_h": 3, "kernel_w": 2, "stride_h": 3,
                                    "pad_top": 2, "pad_bottom": 2, "pad_left": 1,
                                    "pad_right": 1, "act_min": a_min, "act_max": hi}, xdt)
        check("MaxPool", [rand_act(rng, xdt, (1, 3, 112, 112), extreme=0.3)],
              {"kernel_h": 3, "kernel_w": 3, "stride_h": 2, "stride_w": 2, "pad_top": 1,
               "pad_left": 1, "pad_bottom": 1, "pad_right": 1, "act_min": lo, "act_max": hi},
              xdt)
    big = np.full((1, 2, 256, 256), 127, np.int8)
    big[0, 1] = -128
    check("GlobalAveragePool", [big], {})


# ---------------------------------------------------------------------- integration, safety
def test_dispatch_through_kernels_run() -> None:
    """kernels.run picks the C kernel in mode "c" and gives the reference's bits."""
    rng = np.random.default_rng(70)
    arrays, attrs, out = conv_case(rng, kind="dense")
    spec = OPS_BY_NAME["Conv"]
    full = spec.full_attrs(attrs)
    before = kernels.get_mode()
    try:
        kernels.set_mode("c")
        got = kernels.run(spec, arrays, full, out)
        kernels.set_mode("numpy")
        ref = kernels.run(spec, arrays, full, out)
    finally:
        kernels.set_mode(before)
    assert np.array_equal(got, ref)
    assert "C kernels" in kernels.describe()


def test_thread_counts_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(71)
    arrays, attrs, out = conv_case(rng, kind="dense")
    spec = OPS_BY_NAME["Conv"]
    full = spec.full_attrs(attrs)
    results = []
    for t in (1, 2, 3, 8):
        native.set_threads(t)
        results.append(native.KERNELS["Conv"](arrays, full, out))
    native.set_threads(None)
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_c_refuses_bad_arguments() -> None:
    """The C entry points return an error code, never touch memory, on inconsistent sizes."""
    ffi, lib = native._native.ffi, native._native.lib
    x = np.zeros((1, 2, 5, 5), np.int8)
    w = np.zeros((2, 2, 3, 3), np.int8)
    bias = np.zeros(2, np.int64)
    m = np.full(2, 1 << 30, np.int32)
    s = np.zeros(2, np.int32)
    y = np.zeros((1, 2, 3, 3), np.int8)
    base = {"n": 1, "c": 2, "h": 5, "w": 5, "cout": 2, "cg": 2, "kh": 3, "kw": 3, "group": 1,
            "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 0, "pl": 0, "pb": 0, "pr": 0, "oh": 3,
            "ow": 3, "x_zp": 0, "xtype": 0, "n_params": 2}
    o = ffi.new("ortnpu_out_t *", {"rule": 0, "acc_bits": 32, "y_zp": 0, "act_min": -128,
                                   "act_max": 127, "otype": 0})

    def call(**change: int) -> int:
        p = ffi.new("ortnpu_conv_t *", {**base, **change})
        return lib.ortnpu_conv2d(p, o, ffi.from_buffer(x), ffi.from_buffer("int8_t[]", w),
                                 ffi.from_buffer("int64_t[]", bias),
                                 ffi.from_buffer("int32_t[]", m),
                                 ffi.from_buffer("int32_t[]", s), ffi.from_buffer(y), 1, 0)

    assert call() == 0
    for bad in ({"oh": 4}, {"ow": 99}, {"cg": 3}, {"group": 3}, {"kh": 9}, {"xtype": 7},
                {"n_params": 5}, {"sh": 0}, {"x_zp": 300}, {"pt": -1}):
        assert call(**bad) == -1, bad
    s[0] = 40  # shift outside tflite_double's range
    assert call() == -1
    win = np.array([3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 4, 3], np.int64)  # wrong oh
    assert lib.ortnpu_pool2d(0, 1, 2, 5, 5, ffi.from_buffer("int64_t[]", win), ffi.from_buffer(x),
                             0, -128, 127, ffi.from_buffer(y), 1) == -1
    assert lib.ortnpu_lut(4, ffi.from_buffer(x), 0, ffi.from_buffer(x), 0, 50,
                          ffi.from_buffer(y), 1) == -1


def test_describe_names_path_and_threads() -> None:
    text = native.describe()
    assert ("AVX2" in text) or ("portable" in text)
    assert "thread" in text


def test_small_work_runs_on_one_thread() -> None:
    native.set_threads(2)
    try:
        assert native.threads_for(100) == 1
        assert native.threads_for(native.PARALLEL_MIN_WORK * 8) == 2
    finally:
        native.set_threads(None)
