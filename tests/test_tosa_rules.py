"""TOSA helpers of import_tosa against the specification's pseudocode (no tosa-tools needed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

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


def _sub_model() -> onnx.ModelProto:

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sub", ["x", "r"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "sub", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("target", "negate"), [("tosa-int8", b"result"),
                                                 ("tosa-int16", b"result"),
                                                 ("tflite-int8", b"multiplier")])
def test_quantized_sub_negates_where_the_target_says(target: str, negate: bytes) -> None:
    """The target's sub_negate reaches the Sub node a float model is quantized to."""
    import ortnpu

    rng = np.random.default_rng(0)
    calib = [{"x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(16)]
    npu = ortnpu.quantize(_sub_model(), target, calib)
    subs = [n for n in npu.graph.node if n.op_type.startswith("Sub")]
    assert len(subs) == 1
    assert {a.name: a.s for a in subs[0].attribute}["negate"] == negate


def test_sub_negate_orders_against_the_tosa_pseudocode() -> None:
    """negate = 'result' is TOSA's apply_sub_s of two RESCALEd operands; 'multiplier' rescales
    b with -m. They differ exactly where b·m lands on a tie."""
    from ortnpu.domain.ops_elementwise import Sub

    a, b = (v.reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    attrs = {"a_zp": 3, "b_zp": -2, "y_zp": 1, "left_shift": 0, "a_multiplier": 1 << 30,
             "a_shift": -30, "b_multiplier": 3 << 28, "b_shift": -31, "y_multiplier": 1 << 30,
             "y_shift": -30, "act_min": -128, "act_max": 127, "rounding": "tosa_double"}

    def half_up(v: np.ndarray, m: int, r: int) -> np.ndarray:   # apply_scale_32, r <= 31
        return (v * m + (1 << (r - 1))) >> r

    want = np.clip(half_up(half_up(a - 3, 1 << 30, 30) - half_up(b + 2, 3 << 28, 31),
                           1 << 30, 30) + 1, -128, 127)
    got = Sub.reference([a, b], {**attrs, "negate": "result"}, np.dtype(np.int8))
    np.testing.assert_array_equal(got, want)
    other = Sub.reference([a, b], {**attrs, "negate": "multiplier"}, np.dtype(np.int8))
    tie = (b + 2) * (3 << 28) % (1 << 31) == 1 << 30
    differ = other != want
    assert differ.any() and not (differ & ~tie).any()
