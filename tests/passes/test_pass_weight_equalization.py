import numpy as np
import pytest
from onnx import helper, numpy_helper
from passes_helpers import assert_same, init, model, rand

from ortnpu.passes import EqualizeWeights


@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_relu_conv_equalized(depthwise: bool) -> None:
    w1 = rand(4, 3, 3, 3) * np.array([100.0, 1.0, 0.01, 5.0], np.float32)[:, None, None, None]
    w2 = rand(4, 1, 3, 3) if depthwise else rand(5, 4, 1, 1)
    out_c = 4 if depthwise else 5
    m = model([helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1] * 4),
               helper.make_node("Relu", ["a"], ["r"], name="relu"),
               helper.make_node("Conv", ["r", "w2"], ["y"], name="c2",
                                group=4 if depthwise else 1)],
              {"x": [1, 3, 6, 6]}, {"y": [1, out_c, 6 if not depthwise else 4,
                                          6 if not depthwise else 4]},
              [init("w1", w1), init("b1", rand(4)), init("w2", w2)])
    result = EqualizeWeights()(m)
    assert result.modified and "equalized Conv 'c1' -> Conv 'c2'" in result.changes[0]
    new_w1 = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}["w1"]
    ranges = np.abs(new_w1).reshape(4, -1).max(axis=1)
    assert ranges.max() / ranges.min() < 0.05 * 1e4
    assert_same(m, result.model, tol=1e-3)


def test_no_pairs() -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": [2]}, {"y": [2]})
    assert not EqualizeWeights()(m).modified
