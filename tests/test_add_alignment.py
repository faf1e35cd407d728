"""Add/Sub on a shift-only target: the operands are aligned, not rounded, before the sum."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

import ortnpu
from ortnpu.quant.lowering import add_left_shift
from ortnpu.target import load_target


def _residual(op: str) -> onnx.ModelProto:
    """y = op(a, b * 4): two operands whose power-of-two scales differ by 4."""
    four = helper.make_tensor("four", TensorProto.FLOAT, [], [4.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["b", "four"], ["b4"]), helper.make_node(op, ["a", "b4"], ["y"])],
        "residual", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 256])
                     for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])], [four])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_n2d2_add_rounds_once(op: str) -> None:
    """On n2d2-int8 (add_left_shift 0) each operand used to be halved with rounding half up
    before the sum: a biased error of up to one output step. Aligned, the NPU sum of the
    quantized operands is within half an output step of the exact sum."""
    rng = np.random.default_rng(0)
    model = _residual(op)
    calib = {k: rng.uniform(-1, 1, (32, 256)).astype(np.float32) for k in ("a", "b")}
    npu = ortnpu.quantize(model, "n2d2-int8", calib, optimize=False)
    add = next(n for n in npu.graph.node if n.op_type.startswith(op + "_"))
    # operands exactly on their input grids, so the only error left is the output's rounding
    scales = {i.name: float(onnx.numpy_helper.to_array(i).item()) for i in npu.graph.initializer
              if i.name.endswith("_scale")}
    xa = rng.integers(-127, 128, (1, 256)) * scales["a_scale"]
    xb = rng.integers(-127, 128, (1, 256)) * scales["b_scale"]
    step = scales["y_scale"]
    y = ortnpu.InferenceSession(npu).run(None, {"a": xa.astype(np.float32),
                                                "b": xb.astype(np.float32)})[0]
    exact = xa + 4 * xb if op == "Add" else xa - 4 * xb
    inside = np.abs(exact) < 127 * step
    err = (y - exact)[inside] / step
    assert np.max(np.abs(err)) <= 0.5 + 1e-6
    assert abs(float(np.mean(err))) <= 0.15  # the output's own half-up ties: 1/8 step here
    assert {x.name: helper.get_attribute_value(x) for x in add.attribute}["left_shift"] == 3


def test_left_shift_rule() -> None:
    """Fixed on TFLite presets; on power-of-two targets just enough to align the operands."""
    tfl, n2d2 = load_target("tflite-int8").arithmetic, load_target("n2d2-int8").arithmetic
    assert add_left_shift(tfl, False, 0.1, 0.3) == 20
    assert add_left_shift(tfl, True, 0.1, 0.3) == 15
    assert add_left_shift(n2d2, False, 0.25, 0.25) == 1
    assert add_left_shift(n2d2, False, 2.0 ** -7, 2.0 ** -5) == 3
    assert add_left_shift(n2d2, False, 2.0 ** -40, 1.0) == 21
