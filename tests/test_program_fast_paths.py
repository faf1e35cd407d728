"""The compiled programs' fast paths are bit-exact with the numpy reference on edge cases, on
every SIMD path the CPU has: FullyConnected on 8-bit input runs as a rows GEMM with the output
channels in the vector lanes (32-bit accumulator, tflite_double, at least 16 outputs; u8 x s8
quads on AVX-512 VNNI, int16 pairs elsewhere), else as a packed 1x1 convolution (above 8 rows,
at least 4 outputs) or on the dot-product kernel, a binary layer of 8-bit operands and output
looks its result up in a table of all 65536 operand pairs unless it is an 8-bit Add or Mul
under tflite_double (computed in 16 SIMD lanes on AVX-512, 8 on AVX2), and an 8-bit Softmax
reads the exponential of each of the 256 differences to the row maximum from a table; a
Transpose copies whole rows when the last axis stays last, and an 8-bit Lut indexes its table
with the input byte (ops/program.c, ops/kernels_linear.c, ops/kernels_softmax.c,
ops/kernels_elementwise.c).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import (
    DOMAIN,
    Add,
    FullyConnected,
    Lut,
    Maximum,
    Minimum,
    Mul,
    Softmax,
    Sub,
    Transpose,
    kernels,
    make_node,
)

pytestmark = [pytest.mark.usefixtures("require_c"),
              pytest.mark.skipif(kernels.get_mode() == "numpy",
                                 reason="C kernels not in use (ORTNPU_KERNELS=numpy)")]

_ONNX = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
         np.dtype(np.int16): TensorProto.INT16}


def _model(nodes: list, inputs: dict[str, tuple[np.dtype, list]], out: str, out_dtype: type,
           inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, _ONNX[np.dtype(d)], s)
                     for k, (d, s) in inputs.items()],
        [helper.make_tensor_value_info(out, _ONNX[np.dtype(out_dtype)], None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(DOMAIN, 1)])


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    before = kernels.get_mode()
    kernels.set_mode("numpy")
    try:
        return ortnpu.InferenceSession(model, fuse=False, native=False).run(None, feeds)[0]
    finally:
        kernels.set_mode(before)


def _full_range(rng: np.random.Generator, dtype: type, shape: tuple) -> np.ndarray:
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    ends = [info.min, info.max][:x.size]
    x.reshape(-1)[:len(ends)] = ends   # both ends present
    return x


@pytest.mark.parametrize(("rows", "k", "n", "xdtype", "ydtype", "x_zp", "per_channel", "acc"), [
    (1, 1, 1, np.int8, np.int8, -128, False, 32),
    (17, 192, 77, np.int8, np.int8, 127, True, 32),
    (3, 7, 5, np.uint8, np.int8, 255, True, 64),
    (33, 67, 130, np.uint8, np.uint8, 0, True, 32),
    (5, 600, 9, np.int8, np.int16, -3, True, 64),
    (2, 16, 48, np.int8, np.int8, 0, False, 32),
    (20, 40, 12, np.int8, np.int8, 5, True, 32),       # under 16 outputs: the packed conv
    (12, 50, 20, np.uint8, np.int8, 7, True, 64),      # 64-bit accumulator: the packed conv
    (17, 192, 1, np.int8, np.int8, -4, False, 32),     # a LayerNorm's mean: the dot kernel
    (40, 33, 3, np.uint8, np.uint8, 200, True, 64),    # under 4 outputs, many rows: the dot kernel
])
def test_fully_connected_as_packed_conv_is_exact(rows: int, k: int, n: int, xdtype: type,
                                                 ydtype: type, x_zp: int, per_channel: bool,
                                                 acc: int, simd: str) -> None:
    rng = np.random.default_rng(rows * 1000 + k + n)
    np_ = n if per_channel else 1
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    w[0, :] = -127 if n > 1 else w[0, :]
    inits = {"w": w, "b": rng.integers(-(1 << 20), 1 << 20, n).astype(np.int64),
             "m": rng.integers(1 << 29, (1 << 31) - 1, np_).astype(np.int32),
             "s": rng.integers(-14, 2, np_).astype(np.int32)}
    info = np.iinfo(ydtype)
    y_zp = int(info.min) if ydtype is np.uint8 else 3
    fc = make_node(FullyConnected, ["x", "w", "b", "m", "s"], "y", ydtype, "fc", x_zp=x_zp,
                   y_zp=y_zp, act_min=int(info.min), act_max=int(info.max), acc_bits=acc)
    model = _model([fc], {"x": (xdtype, ["N", rows, k])}, "y", ydtype, inits)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    for batch in (1, 3):
        x = _full_range(rng, xdtype, (batch, rows, k))
        want = _reference(model, {"x": x})
        assert np.array_equal(sess.run(None, {"x": x})[0], want), batch
        assert (want == info.min).any() or (want == info.max).any() or k < 8


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(("rows", "k", "xdtype", "ydtype", "x_zp"), [
    (17, 192, np.int8, np.int8, -128),     # a ViT block's rows, K in place (a multiple of 4)
    (1, 7, np.int8, np.int16, 127),        # one row, K padded to quads
    (6, 130, np.uint8, np.uint8, 255),     # uint8 input (flipped to signed bytes)
    (9, 64, np.uint8, np.int8, 0),
    (41, 7, np.int8, np.int16, -128),      # row blocks of 32 and a tail, K odd (int16 pairs)
    (13, 130, np.uint8, np.uint8, 255),
])
def test_fully_connected_rows_gemm_is_exact(rows: int, k: int, xdtype: type, ydtype: type,
                                            x_zp: int, threads: int, simd: str) -> None:
    """The rows GEMM's per-channel epilogue against the reference: every shift of
    tflite_double (-31..31) on some channel, multipliers 0, 1, 2^30 and 2^31-1 among them,
    outputs saturating at both ends, biases that make the int32 accumulator wrap, 95 outputs
    (a block of 64 and a masked tail; 16-channel tiles and an 8-lane tail without VNNI), rows
    not a multiple of four."""
    rng = np.random.default_rng(rows * 7 + k)
    n = 95
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[1] = -128
    w[2] = 127
    shift = np.resize(np.arange(-31, 32), n).astype(np.int32)
    mult = rng.integers(1, (1 << 31) - 1, n).astype(np.int32)
    mult[:8] = [0, 1, 1 << 30, (1 << 31) - 1, 0, 1, 1 << 30, (1 << 31) - 1]
    mult[60:68] = (1 << 31) - 1
    bias = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int64)
    bias[3:6] = [(1 << 31) - 5, -(1 << 31) + 3, (1 << 40) + 17]   # the int32 accumulator wraps
    info = np.iinfo(ydtype)
    y_zp = int(info.min) if ydtype is np.uint8 else -3
    fc = make_node(FullyConnected, ["x", "w", "b", "m", "s"], "y", ydtype, "fc", x_zp=x_zp,
                   y_zp=y_zp, act_min=int(info.min), act_max=int(info.max), acc_bits=32)
    model = _model([fc], {"x": (xdtype, ["N", rows, k])}, "y", ydtype,
                   {"w": w, "b": bias, "m": mult, "s": shift})
    sess = ortnpu.InferenceSession(model, intra_op_num_threads=threads)
    assert [r.native for r in sess.compile_reports] == [True]
    seen_min = seen_max = False
    for batch in (1, 2):
        x = _full_range(rng, xdtype, (batch, rows, k))
        want = _reference(model, {"x": x})
        assert np.array_equal(sess.run(None, {"x": x})[0], want), batch
        seen_min |= bool((want == info.min).any())
        seen_max |= bool((want == info.max).any())
    assert seen_min and seen_max   # saturation at both ends was exercised


def test_fully_connected_rows_gemm_rounding_ties(simd: str) -> None:
    """Accumulators on the rounding ties of every right shift: x - x_zp is a ramp and one
    weight is 1, so the accumulator runs over consecutive integers through each tie."""
    k, n, rows = 4, 32, 64
    w = np.zeros((n, k), np.int8)
    w[:, 0] = 1
    shift = np.resize(np.arange(-31, 1), n).astype(np.int32)
    mult = np.full(n, 1 << 30, np.int32)            # x/2 before the shift: ties at both steps
    x_zp = -128
    fc = make_node(FullyConnected, ["x", "w", "b", "m", "s"], "y", np.int16, "fc", x_zp=x_zp,
                   y_zp=0, act_min=-32768, act_max=32767, acc_bits=32)
    bias = np.arange(n, dtype=np.int64) * -37
    model = _model([fc], {"x": (np.int8, ["N", rows, k])}, "y", np.int16,
                   {"w": w, "b": bias, "m": mult, "s": shift})
    x = np.zeros((2, rows, k), np.int8)
    x[0, :, 0] = np.arange(-128, -128 + rows)
    x[1, :, 0] = np.arange(127 - rows + 1, 128)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    assert np.array_equal(sess.run(None, {"x": x})[0], _reference(model, {"x": x}))


def _binary(op: type, ydtype: type, zps: tuple[int, int, int]) -> onnx.NodeProto:
    info = np.iinfo(ydtype)
    clamp = {"act_min": int(info.min) + 1, "act_max": int(info.max) - 2}
    if op in (Add, Sub):
        return make_node(op, ["a", "b"], "y", ydtype, "op", a_zp=zps[0], b_zp=zps[1],
                         y_zp=zps[2], a_multiplier=1 << 30, a_shift=-1,
                         b_multiplier=(1 << 31) - 1, b_shift=-2, y_multiplier=1 << 30,
                         y_shift=-17, **clamp)
    if op is Mul:
        return make_node(op, ["a", "b"], "y", ydtype, "op", a_zp=zps[0], b_zp=zps[1],
                         y_zp=zps[2], multiplier=(1 << 31) - 1, shift=-7, **clamp)
    return make_node(op, ["a", "b"], "y", ydtype, "op")


@pytest.mark.parametrize("op", [Add, Sub, Mul, Maximum, Minimum])
@pytest.mark.parametrize(("adtype", "bshape", "zps"), [
    (np.int8, [1, 5, 7], (-128, 127, -128)),        # two activations of one shape
    (np.uint8, [1, 1, 7], (255, 0, 128)),           # a row broadcast
    (np.int8, [1, 1, 1], (0, -5, 127)),             # a scalar operand
])
def test_binary_pair_table_is_exact(op: type, adtype: type, bshape: list,
                                    zps: tuple[int, int, int], simd: str) -> None:
    same = op in (Maximum, Minimum)
    bdtype = adtype   # (a program's node takes inputs of one type)
    ydtype = adtype if same else np.int8
    if same:
        zps = (0, 0, 0)
    elif adtype is np.uint8:
        zps = (zps[0], zps[1], -128)
    node = _binary(op, ydtype, zps)
    rng = np.random.default_rng(5)
    model = _model([node], {"a": (adtype, ["N", 5, 7]), "b": (bdtype, ["N", *bshape[1:]])},
                   "y", ydtype, {})
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    for batch in (1, 4):
        feeds = {"a": _full_range(rng, adtype, (batch, 5, 7)),
                 "b": _full_range(rng, bdtype, (batch, *bshape[1:]))}
        assert np.array_equal(sess.run(None, feeds)[0], _reference(model, feeds)), batch


def test_every_operand_pair_of_a_mul_is_exact(simd: str) -> None:
    """All 65536 (a, b) pairs in one run: the table is the kernel's own output."""
    node = _binary(Mul, np.int8, (-7, 100, 5))
    model = _model([node], {"a": (np.int8, ["N", 65536]), "b": (np.int8, ["N", 65536])},
                   "y", np.int8, {})
    v = np.arange(65536)
    feeds = {"a": (v & 255).astype(np.uint8).view(np.int8)[None],
             "b": (v >> 8).astype(np.uint8).view(np.int8)[None]}
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    assert np.array_equal(sess.run(None, feeds)[0], _reference(model, feeds))


@pytest.mark.parametrize(("dtype", "depth", "multiplier", "shift", "diff_min"), [
    (np.int8, 17, 1628508416, 20, -1984),          # the zoo ViT's attention softmax
    (np.uint8, 255, (1 << 31) - 1, 31, 0),          # every difference but 0 left out
    (np.int8, 511, 1 << 30, 0, -255),               # the widest rows, every difference counted
    (np.uint8, 64, 1, 23, -100),                    # differences below diff_min
    (np.int8, 33, 0, 5, -(1 << 26) + 1),            # multiplier 0: every exponential is 1
    (np.int8, 9, 1 << 30, 24, -127),
    (np.int8, 197, 1518500250, 19, -3968),          # a ViT-S head's rows of 197 tokens
    (np.uint8, 197, 1 << 30, 23, -255),
])
def test_softmax_exp_table_is_exact(dtype: type, depth: int, multiplier: int, shift: int,
                                    diff_min: int) -> None:
    """The table of exponentials in a compiled program and in a per-op call of at least 1024
    values (which makes its own table), against the reference, with rows spanning the whole
    input range, constant rows and rows of one maximum."""
    node = make_node(Softmax, ["x"], "y", dtype, "sm", multiplier=multiplier, shift=shift,
                     diff_min=diff_min)
    rows = max(8, -(-1024 // depth))
    model = _model([node], {"x": (dtype, ["N", rows, depth])}, "y", dtype, {})
    rng = np.random.default_rng(depth + shift)
    compiled = ortnpu.InferenceSession(model)
    assert [r.native for r in compiled.compile_reports] == [True]
    per_op = ortnpu.InferenceSession(model, fuse=False)
    for batch in (1, 2):
        x = _full_range(rng, dtype, (batch, rows, depth))
        info = np.iinfo(dtype)
        x[0, 1] = info.min                       # a constant row
        x[0, 2] = info.min
        x[0, 2, depth // 2] = info.max            # one maximum, every other difference -255
        x[0, 3] = rng.integers(info.max - 3, info.max, depth, endpoint=True)
        want = _reference(model, {"x": x})
        assert np.array_equal(compiled.run(None, {"x": x})[0], want), batch
        assert np.array_equal(per_op.run(None, {"x": x})[0], want), batch


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize(("dims", "perm"), [
    *[((3, 5, 7), p) for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1),
                               (2, 1, 0))],
    ((17, 3, 64), (1, 0, 2)),        # attention's head split (rows of 64 copied whole)
    ((3, 17, 64), (0, 2, 1)),        # K transposed for Q·Kᵀ (a strided gather)
    ((2, 3, 4, 5), (3, 1, 0, 2)),
    ((2, 1, 4, 5), (2, 0, 1, 3)),
    ((6,), (0,)),
    ((12, 16, 4, 16), (0, 1, 3, 2)),    # a patch embedding's space-to-depth: rows of 4
    ((3, 4, 16, 4), (0, 2, 1, 3)),
    ((5, 3), (1, 0)),
])
def test_transpose_rows_are_exact(dims: tuple, perm: tuple, dtype: type) -> None:
    node = make_node(Transpose, ["x", "perm"], "y", dtype, "t")
    # a leading batch axis stays first: the program transposes one sample
    full = (0, *(p + 1 for p in perm))
    model = _model([node], {"x": (dtype, ["N", *dims])}, "y", dtype,
                   {"perm": np.array(full, np.int64)})
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = _full_range(np.random.default_rng(len(dims)), dtype, (2, *dims))
    assert np.array_equal(sess.run(None, {"x": x})[0], _reference(model, {"x": x}))


@pytest.mark.parametrize(("xdtype", "ydtype"), [(np.int8, np.int8), (np.int8, np.uint8),
                                                (np.uint8, np.int8), (np.uint8, np.uint8),
                                                (np.int8, np.int16)])
@pytest.mark.parametrize("count", [5, 70000])   # a short run; several threads' chunks
def test_lut_8bit_is_exact(xdtype: type, ydtype: type, count: int) -> None:
    rng = np.random.default_rng(count)
    table = _full_range(rng, ydtype, (256,))
    node = make_node(Lut, ["x", "table"], "y", ydtype, "lut")
    model = _model([node], {"x": (xdtype, ["N", count])}, "y", ydtype, {"table": table})
    x = _full_range(rng, xdtype, (2, count))
    want = _reference(model, {"x": x})
    for sess in (ortnpu.InferenceSession(model, intra_op_num_threads=2),
                 ortnpu.InferenceSession(model, fuse=False)):
        assert np.array_equal(sess.run(None, {"x": x})[0], want)


def _all_pairs(dtype: type) -> dict[str, np.ndarray]:
    v = np.arange(65536)
    return {"a": (v & 255).astype(np.uint8).view(dtype)[None],
            "b": (v >> 8).astype(np.uint8).view(dtype)[None]}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("op", [Add, Mul])
def test_binary_simd_every_pair_is_exact(op: type, seed: int, simd: str) -> None:
    """The SIMD Add and Mul (tflite_double: 16 lanes on AVX-512, 8 on AVX2; the pair tables in
    portable C) on all 65536 operand pairs, with parameters
    drawn from the edges: left shifts 0, 1, 20, 30, 31 (the shifted offset wraps int32),
    every rescale shift -31..31, multipliers 0, 1, 2^30, 2^31-1 or random, zero points at the
    type's ends, int8/uint8 inputs, int8/uint8/int16 outputs with a narrowed clamp."""
    rng = np.random.default_rng(seed + (100 if op is Mul else 0))
    dtype = (np.int8, np.uint8)[seed % 2]
    ydtype = (np.int8, np.uint8, np.int16)[seed % 3]
    info, yinfo = np.iinfo(dtype), np.iinfo(ydtype)

    def mult() -> int:
        return int(rng.choice([0, 1, 1 << 30, (1 << 31) - 1, int(rng.integers(1, 1 << 31))]))

    zps = [int(rng.choice([info.min, info.max, 0 if dtype is np.int8 else 128]))
           for _ in range(2)]
    common = {"a_zp": zps[0], "b_zp": zps[1],
              "y_zp": int(rng.integers(yinfo.min, yinfo.max)) if ydtype is not np.int16 else 7,
              "act_min": int(yinfo.min) + seed, "act_max": int(yinfo.max) - seed}
    realistic = seed < 4   # TFLite's own parameter ranges: outputs spread over the type
    if op is Add and realistic:
        attrs = {"left_shift": 20,
                 **{f"{k}_multiplier": int(rng.integers(1 << 30, 1 << 31)) for k in "aby"},
                 "a_shift": int(rng.integers(-6, 1)), "b_shift": int(rng.integers(-6, 1)),
                 "y_shift": int(rng.integers(-16, -12))}
    elif op is Add:
        attrs = {"left_shift": int(rng.choice([0, 1, 20, 30, 31])),
                 **{f"{k}_multiplier": mult() for k in "aby"},
                 **{f"{k}_shift": int(rng.integers(-31, 32)) for k in "aby"}}
    elif realistic:
        attrs = {"multiplier": int(rng.integers(1 << 30, 1 << 31)),
                 "shift": int(rng.integers(-9, -5))}
    else:
        attrs = {"multiplier": mult(), "shift": int(rng.integers(-31, 32))}
    node = make_node(op, ["a", "b"], "y", ydtype, "op", **common, **attrs)
    model = _model([node], {"a": (dtype, ["N", 65536]), "b": (dtype, ["N", 65536])}, "y",
                   ydtype, {})
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    feeds = _all_pairs(dtype)
    want = _reference(model, feeds)
    assert np.array_equal(sess.run(None, feeds)[0], want), attrs
    assert not realistic or len(np.unique(want)) > 8, attrs   # not all clamped


@pytest.mark.parametrize("op", [Add, Mul])
def test_binary_simd_rounding_ties_and_broadcasts(op: type, simd: str) -> None:
    """Shifts where halves occur (multiplier 2^30 halves, right shifts 1..8), a scalar operand
    on either side (step 0), a row broadcast, rows of odd length (masked or padded tails)."""
    for shift in range(-8, 1):
        for bshape in ([1, 1, 1], [1, 1, 37], [1, 9, 37]):
            if op is Add:
                node = make_node(Add, ["a", "b"], "y", np.int8, "op", a_zp=-128, b_zp=127,
                                 y_zp=-3, left_shift=0, a_multiplier=1 << 30, a_shift=shift,
                                 b_multiplier=1 << 30, b_shift=shift, y_multiplier=1 << 30,
                                 y_shift=shift)
            else:
                node = make_node(Mul, ["a", "b"], "y", np.int8, "op", a_zp=-128, b_zp=127,
                                 y_zp=-3, multiplier=1 << 30, shift=shift)
            for a_first in (True, False):
                ins = {"a": (np.int8, ["N", 9, 37]), "b": (np.int8, ["N", *bshape[1:]])}
                if not a_first:
                    node.input[:] = ["b", "a"]
                model = _model([node], ins, "y", np.int8, {})
                sess = ortnpu.InferenceSession(model)
                assert [r.native for r in sess.compile_reports] == [True]
                rng = np.random.default_rng(shift + 50)
                feeds = {"a": _full_range(rng, np.int8, (2, 9, 37)),
                         "b": _full_range(rng, np.int8, (2, *bshape[1:]))}
                assert np.array_equal(sess.run(None, feeds)[0], _reference(model, feeds)), \
                    (shift, bshape, a_first)
