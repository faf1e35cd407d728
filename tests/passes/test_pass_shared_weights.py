from onnx import helper
from passes_helpers import assert_same, init, model, rand

from ortnpu.passes import DuplicateSharedWeights


def test_shared_weight_copied() -> None:
    m = model([helper.make_node("Conv", ["x", "w"], ["a"], name="c1"),
               helper.make_node("Conv", ["a", "w"], ["y"], name="c2")],
              {"x": [1, 2, 3, 3]}, {"y": [1, 2, 3, 3]}, [init("w", rand(2, 2, 1, 1))])
    result = DuplicateSharedWeights()(m)
    c1, c2 = result.model.graph.node
    assert c1.input[1] == "w" and c2.input[1] == "w_c2"
    assert_same(m, result.model)
    assert not DuplicateSharedWeights()(result.model).modified
