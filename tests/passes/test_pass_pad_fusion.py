import math

import numpy as np
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand

from ortnpu.passes import FusePad, InferShapes


def _pad(value: float = 0.0, pads: list[int] | None = None) -> list:
    pads = pads or [0, 0, 1, 2, 0, 0, 2, 1]
    return [init("p", np.array(pads)), init("v", np.array(value, np.float32))]


def test_pad_into_conv() -> None:
    m = model([helper.make_node("Pad", ["x", "p", "v"], ["a"], name="pad"),
               helper.make_node("Conv", ["a", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
              {"x": [1, 2, 5, 5]}, {"y": [1, 3, 8, 8]}, [*_pad(), init("w", rand(3, 2, 3, 3))])
    result = FusePad()(InferShapes()(m).model)
    assert ops(result.model) == ["Conv"]
    conv = result.model.graph.node[0]
    assert list(conv.attribute[0].ints) == [2, 3, 3, 2] or any(
        list(a.ints) == [2, 3, 3, 2] for a in conv.attribute)
    assert_same(m, result.model)


def test_pad_into_average_pool_counts_padding() -> None:
    m = model([helper.make_node("Pad", ["x", "p", "v"], ["a"], name="pad"),
               helper.make_node("AveragePool", ["a"], ["y"], name="pool", kernel_shape=[3, 3])],
              {"x": [1, 2, 5, 5]}, {"y": [1, 2, 6, 6]}, _pad())
    result = FusePad()(InferShapes()(m).model)
    assert ops(result.model) == ["AveragePool"]
    assert_same(m, result.model)


def test_pad_into_max_pool_after_relu() -> None:
    m = model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
               helper.make_node("Pad", ["r", "p", "v"], ["a"], name="pad"),
               helper.make_node("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[3, 3])],
              {"x": [1, 2, 5, 5]}, {"y": [1, 2, 6, 6]}, _pad())
    result = FusePad()(InferShapes()(m).model)
    assert ops(result.model) == ["Relu", "MaxPool"]
    assert_same(m, result.model)


@pytest.mark.parametrize("case", ["nonzero", "channel", "maxpool_signed", "reflect"])
def test_not_fused(case: str) -> None:
    value = 1.0 if case == "nonzero" else 0.0
    pads = [0, 1, 0, 0, 0, 0, 0, 0] if case == "channel" else None
    pool = "MaxPool" if case == "maxpool_signed" else "AveragePool"
    attrs = {"mode": "reflect"} if case == "reflect" else {}
    out_c = 3 if case == "channel" else 2
    out_hw = 3 if case == "channel" else 4
    m = model([helper.make_node("Pad", ["x", "p", "v"], ["a"], name="pad", **attrs),
               helper.make_node(pool, ["a"], ["y"], name="pool", kernel_shape=[3, 3])],
              {"x": [1, 2, 5, 5]}, {"y": [1, out_c, out_hw, out_hw]}, _pad(value, pads))
    assert not FusePad()(InferShapes()(m).model).modified


def test_max_pool_with_neg_inf_pad() -> None:
    m = model([helper.make_node("Pad", ["x", "p", "v"], ["a"], name="pad"),
               helper.make_node("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[3, 3])],
              {"x": [1, 2, 5, 5]}, {"y": [1, 2, 6, 6]}, _pad(-math.inf))
    result = FusePad()(InferShapes()(m).model)
    assert ops(result.model) == ["MaxPool"]
    assert_same(m, result.model)
