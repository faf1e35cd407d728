from onnx import helper
from passes_helpers import model, ops

from ortnpu.passes import NameNodes


def test_unnamed_and_repeated_names() -> None:
    m = model([helper.make_node("Relu", ["x"], ["a"]),
               helper.make_node("Relu", ["a"], ["b"], name="r"),
               helper.make_node("Relu", ["b"], ["y"], name="r")],
              {"x": [2]}, {"y": [2]})
    result = NameNodes()(m)
    assert result.modified
    assert [n.name for n in result.model.graph.node] == ["Relu_0", "r", "r_1"]
    assert m.graph.node[0].name == ""  # input untouched
    assert ops(result.model) == ["Relu"] * 3
    assert not NameNodes()(result.model).modified
