import numpy as np
from onnx import helper, numpy_helper
from passes_helpers import assert_same, init, model, ops

from ortnpu.passes import FoldConstants, InferShapes


def test_constant_subgraph_and_shape_fold() -> None:
    m = model([helper.make_node("Constant", [], ["k"], name="c",
                                value=numpy_helper.from_array(np.float32(2.0), "k")),
               helper.make_node("Mul", ["w", "k"], ["w2"], name="mul"),
               helper.make_node("Shape", ["x"], ["shp"], name="shape"),
               helper.make_node("Reshape", ["x", "shp"], ["xr"], name="rs"),
               helper.make_node("Add", ["xr", "w2"], ["y"], name="add")],
              {"x": [2, 3]}, {"y": [2, 3]}, [init("w", np.ones(3))])
    result = FoldConstants()(InferShapes()(m).model)
    assert ops(result.model) == ["Reshape", "Add"]
    folded = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    np.testing.assert_array_equal(folded["w2"], np.full(3, 2.0, np.float32))
    np.testing.assert_array_equal(folded["shp"], [2, 3])
    assert_same(m, result.model)


def test_nothing_to_fold() -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": [2]}, {"y": [2]})
    assert not FoldConstants()(m).modified


def test_dynamic_shape_not_folded() -> None:
    m = model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
               helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
              {"x": ["n", 3]}, {"y": ["n", 3]})
    assert not FoldConstants()(InferShapes()(m).model).modified


def test_large_results_fold_only_as_layer_weights() -> None:
    """The onnx package's alexnet/vgg19/zfnet512 fill their big Gemm weights by ConstantOfShape:
    above the size cap they stayed computed at run time, so the Gemm had no constant weights
    and went to the CPU (finding opset9-upgrade). A weight folds whatever its size; another
    large result still does not."""
    fill = numpy_helper.from_array(np.array([0.5], np.float32))
    m = model([helper.make_node("ConstantOfShape", ["wshape"], ["w"], name="wfill", value=fill),
               helper.make_node("Gemm", ["x", "w"], ["g"], name="fc"),
               helper.make_node("ConstantOfShape", ["ashape"], ["a"], name="afill", value=fill),
               helper.make_node("Add", ["g", "a"], ["y"], name="add")],
              {"x": [2, 8]}, {"y": [2, 8]},
              [init("wshape", np.array([8, 8], np.int64)),
               init("ashape", np.array([2, 8], np.int64))])
    result = FoldConstants(max_elements=10)(m)
    assert ops(result.model) == ["Gemm", "ConstantOfShape", "Add"]
    assert_same(m, result.model)
