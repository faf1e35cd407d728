"""Each op's vectorised numpy reference against a naive loop written from the op's definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ortnpu.domain import (
    OPS,
    AveragePool,
    Conv,
    FullyConnected,
    GlobalAveragePool,
    Lut,
    MaxPool,
    Requantize,
    op_type_name,
    parse_op_type,
    spec_of,
)
from ortnpu.domain.arith import rescale, wrap_int32
from ortnpu.errors import KernelError


def naive_conv(x, w, bias, mult, shift, a, out_dtype):
    n, _cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    g = a["group"]
    sh, sw, dh, dw = a["stride_h"], a["stride_w"], a["dilation_h"], a["dilation_w"]
    pt, pl, pb, pr = a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, cout, oh, ow), np.int64)
    for b, co, i, j in itertools.product(range(n), range(cout), range(oh), range(ow)):
        grp = co // (cout // g)
        acc = int(bias[co])
        for ci, r, s in itertools.product(range(cg), range(kh), range(kw)):
            yy, xx = i * sh - pt + r * dh, j * sw - pl + s * dw
            if 0 <= yy < h and 0 <= xx < wd:
                acc += (int(x[b, grp * cg + ci, yy, xx]) - a["x_zp"]) * int(w[co, ci, r, s])
        if a["acc_bits"] == 32:
            acc = int(wrap_int32(np.int64(acc)))
        m = int(mult[co if mult.size > 1 else 0])
        s_ = int(shift[co if shift.size > 1 else 0])
        v = int(rescale(np.int64(acc), np.int64(m), np.int64(s_), a["rounding"])) + a["y_zp"]
        y[b, co, i, j] = min(max(v, a["act_min"]), a["act_max"])
    return y.astype(out_dtype)


CONV_CASES = [
    dict(group=1),
    dict(group=1, stride_h=2, stride_w=1, pad_top=1, pad_left=2, pad_bottom=0, pad_right=1),
    dict(group=2, dilation_h=2, dilation_w=1, pad_top=2, pad_bottom=2),
    dict(group=4, stride_h=2, stride_w=2, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize(("in_t", "out_t", "rounding", "acc_bits"), [
    ("int8", "int8", "tflite_double", 32), ("int8", "uint8", "half_up", 32),
    ("int16", "int16", "tflite_int64", 64), ("uint8", "int8", "tflite_single", 32),
])
def test_conv_matches_naive_loops(case, in_t, out_t, rounding, acc_bits) -> None:
    rng = np.random.default_rng(case)
    info, oinfo = np.iinfo(in_t), np.iinfo(out_t)
    attrs = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
                 pad_bottom=0, pad_right=0, x_zp=int(info.min) + 3, y_zp=int(oinfo.min) + 5,
                 act_min=int(oinfo.min), act_max=int(oinfo.max), rounding=rounding,
                 acc_bits=acc_bits)
    attrs.update(CONV_CASES[case])
    g = attrs["group"]
    x = rng.integers(info.min, int(info.max) + 1, (2, 4, 5, 6)).astype(in_t)
    w = rng.integers(-127, 128, (4, 4 // g, 3, 2)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 4).astype(np.int64)
    if rounding == "half_up":
        mult = rng.integers(1, 1 << 15, 4).astype(np.int32)
        shift = rng.integers(-24, -12, 4).astype(np.int32)
    else:
        mult = rng.integers(1 << 30, (1 << 31) - 1, 4).astype(np.int32)
        shift = rng.integers(-20 if in_t != "int16" else -25, -8, 4).astype(np.int32)
    full = Conv.full_attrs(attrs)
    got = Conv.run_reference([x, w, bias, mult, shift], attrs, out_t)
    want = naive_conv(x, w, bias, mult, shift, full, np.dtype(out_t))
    assert got.dtype == np.dtype(out_t)
    assert np.array_equal(got, want)


def test_conv_accumulator_wraps_at_32_bits() -> None:
    x = np.full((1, 1, 1, 1), 127, np.int8)
    w = np.full((1, 1, 1, 1), 127, np.int8)
    bias = np.array([(1 << 31) - 100], np.int64)            # 16129 + bias overflows int32
    one = dict(rounding="half_up", act_min=-128, act_max=127)
    y32 = Conv.run_reference([x, w, bias, np.array([1], np.int32), np.array([-24], np.int32)],
                             {**one, "acc_bits": 32}, np.int8)
    y64 = Conv.run_reference([x, w, bias, np.array([1], np.int32), np.array([-24], np.int32)],
                             {**one, "acc_bits": 64}, np.int8)
    assert int(y32[0, 0, 0, 0]) == -128 and int(y64[0, 0, 0, 0]) == 127


def test_fully_connected_matches_naive() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (3, 7)).astype(np.int8)
    w = rng.integers(-127, 128, (5, 7)).astype(np.int8)
    bias = rng.integers(-900, 900, 5).astype(np.int64)
    mult = rng.integers(1 << 30, (1 << 31) - 1, 5).astype(np.int32)
    shift = rng.integers(-12, -4, 5).astype(np.int32)
    a = dict(x_zp=-7, y_zp=3, act_min=-100, act_max=120)
    got = FullyConnected.run_reference([x, w, bias, mult, shift], a, np.int8)
    for i, o in itertools.product(range(3), range(5)):
        acc = sum((int(x[i, k]) + 7) * int(w[o, k]) for k in range(7)) + int(bias[o])
        v = int(rescale(np.int64(acc), np.int64(mult[o]), np.int64(shift[o]), "tflite_double"))
        assert got[i, o] == min(max(v + 3, -100), 120)


def test_pools_match_naive() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (2, 3, 5, 7)).astype(np.int8)
    a = dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=3, pad_top=1, pad_left=1,
             pad_bottom=2, pad_right=1, act_min=-128, act_max=127)
    mx = MaxPool.run_reference([x], a)
    av = AveragePool.run_reference([x], a)
    for b, c, i, j in itertools.product(range(2), range(3), range(mx.shape[2]),
                                        range(mx.shape[3])):
        vals = [int(x[b, c, i * 2 - 1 + r, j * 3 - 1 + s]) for r in range(3) for s in range(2)
                if 0 <= i * 2 - 1 + r < 5 and 0 <= j * 3 - 1 + s < 7]
        assert mx[b, c, i, j] == max(vals)
        total, count = sum(vals), len(vals)
        q = (abs(total) + count // 2) // count      # half away from zero
        assert av[b, c, i, j] == (q if total >= 0 else -q)
    g = GlobalAveragePool.run_reference([x], dict(act_min=-128, act_max=127))
    for b, c in itertools.product(range(2), range(3)):
        total = int(x[b, c].astype(np.int64).sum())
        q = (abs(total) + 17) // 35
        assert g[b, c, 0, 0] == (q if total >= 0 else -q)


def test_requantize_per_channel_and_lut() -> None:
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 2, 8, 16)
    mult = np.array([1 << 30, (1 << 31) - 1], np.int32)
    shift = np.array([1, -3], np.int32)
    y = Requantize.run_reference([x, mult, shift], dict(x_zp=-2, y_zp=1000, act_min=-32768,
                                                         act_max=32767), np.int16)
    assert y.dtype == np.int16
    assert np.array_equal(y[0, 0], x[0, 0].astype(np.int64) + 2 + 1000)   # multiplier 1.0
    table = (np.arange(256) - 128).astype(np.int8)[::-1].copy()
    out = Lut.run_reference([x, table], {}, np.int8)
    assert np.array_equal(out, table[x.astype(np.int64) + 128])


def test_op_type_names_round_trip_and_table_is_complete() -> None:
    names = [t for op in OPS for t, _, _ in op.op_types()]
    assert len(names) == len(set(names))
    for t in names:
        base, count, dtype = parse_op_type(t)
        assert op_type_name(base, dtype, count) == t
        assert spec_of(t).name == base
    with pytest.raises(KernelError):
        spec_of("Conv_f32")


@pytest.mark.parametrize(("arrays", "attrs", "fragment"), [
    ([np.zeros((1, 3, 4, 4), np.int8), np.zeros((2, 2, 3, 3), np.int8), np.zeros(2, np.int64),
      np.ones(2, np.int32), np.zeros(2, np.int32)], {}, "do not fit"),
    ([np.zeros((1, 2, 4, 4), np.int8), np.zeros((2, 2, 3, 3), np.int8), np.zeros(3, np.int64),
      np.ones(2, np.int32), np.zeros(2, np.int32)], {}, "bias must have shape [2]"),
    ([np.zeros((1, 2, 4, 4), np.int8), np.zeros((2, 2, 3, 3), np.int8), np.zeros(2, np.int64),
      np.ones(3, np.int32), np.zeros(2, np.int32)], {}, "multiplier must be a 1-D tensor"),
    ([np.zeros((1, 2, 4, 4), np.int8), np.zeros((2, 2, 3, 3), np.int8), np.zeros(2, np.int64),
      np.ones(2, np.int32), np.full(2, 40, np.int32)], {}, "shift values must lie in"),
    ([np.zeros((1, 2, 4, 4), np.int8), np.zeros((2, 2, 9, 9), np.int8), np.zeros(2, np.int64),
      np.ones(2, np.int32), np.zeros(2, np.int32)], {}, "larger than the padded input"),
    ([np.zeros((1, 2, 4, 4), np.int8), np.zeros((2, 2, 3, 3), np.int8), np.zeros(2, np.int64),
      np.ones(2, np.int32), np.zeros(2, np.int32)], {"x_zp": 300}, "outside the int8 range"),
    ([np.zeros((1, 2, 4, 4), np.float32), np.zeros((2, 2, 3, 3), np.int8),
      np.zeros(2, np.int64), np.ones(2, np.int32), np.zeros(2, np.int32)], {},
     "activations must be int8, uint8 or int16"),
    ([np.zeros((2, 2, 8, 5), np.int8), np.zeros((1, 2, 3, 2), np.int8), np.zeros(1, np.int64),
      np.ones(1, np.int32), np.zeros(1, np.int32)],
     {"pad_top": 2684, "pad_right": 65535, "stride_h": 1000, "stride_w": 10000},
     "the padded input would have 705734720 elements"),   # as fuzz seed 6, case 9807
])
def test_conv_validation_names_the_problem(arrays, attrs, fragment) -> None:
    with pytest.raises(KernelError) as info:
        Conv.run_reference(arrays, attrs, np.int8)
    assert fragment in str(info.value)


@pytest.mark.parametrize("rounding", ["tflite_double", "tflite_single", "tflite_int64",
                                      "half_up"])
def test_huge_64_bit_accumulator_saturates_under_every_rule(rounding: str) -> None:
    x = np.array([[1]], np.int8)
    w = np.array([[1]], np.int8)
    mult = np.array([1 << 30], np.int32)
    shift = np.array([0], np.int32)
    for bias, want in (((1 << 40) - 1, 32767), (-(1 << 40), -32768)):
        y = FullyConnected.run_reference(
            [x, w, np.array([bias], np.int64), mult, shift],
            dict(acc_bits=64, rounding=rounding, act_min=-32768, act_max=32767, y_zp=0),
            np.int16)
        assert int(y[0, 0]) == want, (rounding, bias)
