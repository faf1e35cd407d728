from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand

from ortnpu.passes import FC_BIAS_KEY, FuseMatMulAdd, InferShapes
from ortnpu.passes.graph import get_meta


def test_rank2_becomes_gemm() -> None:
    m = model([helper.make_node("MatMul", ["x", "w"], ["a"], name="fc"),
               helper.make_node("Add", ["b", "a"], ["y"], name="bias")],
              {"x": [2, 3]}, {"y": [2, 4]}, [init("w", rand(3, 4)), init("b", rand(1, 4))])
    result = FuseMatMulAdd()(InferShapes()(m).model)
    assert ops(result.model) == ["Gemm"]
    assert result.model.graph.node[0].name == "fc"
    assert_same(m, result.model)


def test_rank3_is_marked_not_rewritten() -> None:
    m = model([helper.make_node("MatMul", ["x", "w"], ["a"], name="fc"),
               helper.make_node("Add", ["a", "b"], ["y"], name="bias")],
              {"x": [2, 5, 3]}, {"y": [2, 5, 4]}, [init("w", rand(3, 4)), init("b", rand(4))])
    result = FuseMatMulAdd()(InferShapes()(m).model)
    assert ops(result.model) == ["MatMul", "Add"]
    assert get_meta(result.model.graph.node[0], FC_BIAS_KEY) == "bias"
    assert not FuseMatMulAdd()(result.model).modified
    assert_same(m, result.model)


def test_activation_times_activation_not_fused() -> None:
    m = model([helper.make_node("MatMul", ["x", "z"], ["a"], name="mm"),
               helper.make_node("Add", ["a", "b"], ["y"], name="add")],
              {"x": [2, 3], "z": [3, 4]}, {"y": [2, 4]}, [init("b", rand(4))])
    assert not FuseMatMulAdd()(InferShapes()(m).model).modified
