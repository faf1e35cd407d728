"""TFLite details the lowering reproduces, checked without LiteRT (tests/oracle checks them
against LiteRT's reference kernels when the ``oracle`` extra is installed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain.arith import mean_multiplier, quantize_multiplier, rescale
from ortnpu.quant.lowering import clamp_attrs
from ortnpu.quant.params import QuantParams


def test_mean_multiplier_is_renormalized_not_requantized() -> None:
    """reference_ops::QuantizedMeanOrSum: QM(real) shifted left by floor(log2 n), divided by n."""
    assert mean_multiplier(1.0, 1) == quantize_multiplier(1.0) == (1 << 30, 1)
    assert mean_multiplier(1.0, 3) == ((1 << 31) // 3, 0)
    assert quantize_multiplier(1.0 / 3) == (1431655765, -1)       # not what TFLite uses
    # k is capped at 31 + shift so that the shift stays >= -31
    m, s = mean_multiplier(2.0 ** -20, 1 << 20)
    assert s == -31 and m == (quantize_multiplier(2.0 ** -20)[0] << 12) >> 20


def test_relu6_bound_divides_in_float32() -> None:
    """6 / s_out = 24.4999998 in double but exactly 24.5 in float32: TFLite's roundf gives 25."""
    p = QuantParams(float(np.float32(6.0 / 24.5)), -128, "int8")
    assert np.float64(6.0) / p.scale < 24.5
    assert clamp_attrs(p, (0.0, 6.0)) == {"act_min": -128, "act_max": -128 + 25}


def _gap_model(zp: int, scale: float, shape: tuple[int, int, int, int]) -> onnx.ModelProto:
    def qdq(x: str, out: str) -> list[onnx.NodeProto]:
        return [helper.make_node("QuantizeLinear", [x, "s", "z"], [f"{x}_q"]),
                helper.make_node("DequantizeLinear", [f"{x}_q", "s", "z"], [out])]

    nodes = [*qdq("x", "xd"), helper.make_node("GlobalAveragePool", ["xd"], ["g"], name="gap"),
             *qdq("g", "y")]
    graph = helper.make_graph(
        nodes, "gap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(zp, np.int8), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_global_average_pool_is_tflite_mean_on_tflite_targets() -> None:
    """MEAN rescales Σ(x - zp) by the renormalized multiplier (a depthwise all-ones Conv on the
    NPU); on a 3x5 window with zero point -36 this differs from the rounded raw average."""
    rng = np.random.default_rng(0)
    zp, scale, shape = -36, 0.05, (1, 4, 3, 5)
    q = rng.integers(-128, 128, size=shape)
    npu = ortnpu.import_qdq(_gap_model(zp, scale, shape), "tflite-int8")
    assert [n.op_type for n in npu.graph.node if n.domain == "com.ortnpu"] == ["Conv_i8"]
    (y,) = ortnpu.InferenceSession(npu).run(None, {"x": ((q - zp) * np.float32(scale))
                                                  .astype(np.float32)})
    got = np.rint(y.reshape(-1) / np.float32(scale)).astype(np.int64) + zp
    m, s = mean_multiplier(1.0, 15)
    total = q.reshape(4, 15).sum(axis=1)
    want = np.clip(rescale(total - zp * 15, m, s, "tflite_double") + zp, -128, 127)
    assert np.array_equal(got, want)
    half = np.where(total > 0, total + 7, total - 7)
    raw = np.sign(half) * (np.abs(half) // 15)            # the AVERAGE_POOL_2D rule
    assert not np.array_equal(raw, want)


def test_hard_swish_table_is_tflite_fixed_point() -> None:
    """LiteRT 2.3's reference HARD_SWISH (16-bit fixed point) on x 0.0123697/45 → y
    0.00694902/68 gives these three outputs, each one below the float32 function's
    (``ortnpu.quant.tables.float_table``); the other 253 entries agree."""
    from ortnpu.quant.tables import float_table, hard_swish_int8_table

    xp = QuantParams(0.01236970815807581, 45, "int8")
    yp = QuantParams(0.0069490158930420876, 68, "int8")
    table = hard_swish_int8_table(xp, yp).astype(np.int64)
    litert = {-107: 17, -65: 14, 79: 102}
    assert {q: int(table[q + 128]) for q in litert} == litert
    rounded = float_table(lambda v: v * np.clip(v / 6 + 0.5, 0, 1), xp, yp).astype(np.int64)
    assert np.flatnonzero(table != rounded).tolist() == sorted(q + 128 for q in litert)


def test_int16_logistic_tanh_is_tflite_interpolation() -> None:
    """LiteRT 2.3's reference int16 LOGISTIC and TANH on x 0.00123/0 → y 2^-15/0 give these
    outputs; the float function (``float_table``) is one above on the two at 555 and 100 (and
    differs from LiteRT on 26805 / 30639 of the 65536 inputs, the saturation included)."""
    from ortnpu.quant.tables import float_table, tflite_int16_sigmoid_tanh_table

    xp = QuantParams(float(np.float32(0.00123)), 0, "int16")
    yp = QuantParams(2.0 ** -15, 0, "int16")
    litert = {"Sigmoid": {-32768: 1, -1000: 7412, -1: 16374, 0: 16384, 555: 21768,
                          2000: 30189, 32767: 32767},
              "Tanh": {-32768: -32767, -1000: -27610, -1: -40, 1: 40, 100: 4009, 555: 19438,
                       32767: 32767}}
    fns = {"Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh}
    for op, want in litert.items():
        table = tflite_int16_sigmoid_tanh_table(op, xp, yp)
        assert table is not None
        assert {q: int(table[q + 32768]) for q in want} == want
        rounded = float_table(fns[op], xp, yp)
        assert int(rounded[555 + 32768]) == want[555] + 1
    # the parameters TFLite refuses: the caller falls back to the float function
    assert tflite_int16_sigmoid_tanh_table("Sigmoid", xp, QuantParams(2.0 ** -14, 0, "int16")) \
        is None
    assert tflite_int16_sigmoid_tanh_table("Tanh", QuantParams(0.001, 3, "int16"), yp) is None


def test_int16_sigmoid_output_is_tflite_fixed_on_a16w8() -> None:
    """Quantizing a float Sigmoid for tflite-a16w8 fixes its output at 2^-15 (as TFLite's
    converter) and lowers it to TFLite's interpolated table."""
    from ortnpu.quant.tables import tflite_int16_sigmoid_tanh_table

    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], "sig",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    rng = np.random.default_rng(0)
    samples = [{"x": rng.normal(0, 3, (1, 64)).astype(np.float32)} for _ in range(4)]
    npu = ortnpu.quantize(model, "tflite-a16w8", samples)
    (lut,) = [n for n in npu.graph.node if n.domain == "com.ortnpu"]
    inits = {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer}
    assert float(inits["y_scale"][0]) == 2.0 ** -15 and int(inits["y_zero_point"][0]) == 0
    want = tflite_int16_sigmoid_tanh_table("Sigmoid", QuantParams(float(inits["x_scale"][0]), 0,
                                                                  "int16"),
                                           QuantParams(2.0 ** -15, 0, "int16"))
    assert np.array_equal(inits[lut.input[1]], want)
