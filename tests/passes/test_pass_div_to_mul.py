import numpy as np
from onnx import helper
from passes_helpers import assert_same, init, model, ops

from ortnpu.passes import DivByConstantToMul


def test_div_by_constant() -> None:
    m = model([helper.make_node("Div", ["x", "six"], ["y"], name="d")], {"x": [4]}, {"y": [4]},
              [init("six", np.array(6.0, np.float32))])
    result = DivByConstantToMul()(m)
    assert ops(result.model) == ["Mul"]
    assert_same(m, result.model, tol=1e-6)


def test_div_by_zero_or_tensor_kept() -> None:
    m = model([helper.make_node("Div", ["x", "z"], ["a"], name="d0"),
               helper.make_node("Div", ["a", "x"], ["y"], name="d1")], {"x": [4]}, {"y": [4]},
              [init("z", np.zeros(4, np.float32))])
    assert not DivByConstantToMul()(m).modified
