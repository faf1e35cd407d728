import numpy as np
from onnx import helper
from passes_helpers import assert_same, init, model, ops

from ortnpu.passes import InferShapes, RemoveNoOpReshapeTranspose


def test_noop_reshape_and_identity_transpose_removed() -> None:
    m = model([helper.make_node("Reshape", ["x", "s"], ["a"], name="rs"),
               helper.make_node("Transpose", ["a"], ["b"], name="tp", perm=[0, 1, 2]),
               helper.make_node("Relu", ["b"], ["y"], name="r")],
              {"x": [2, 3, 4]}, {"y": [2, 3, 4]}, [init("s", np.array([2, 3, 4]))])
    result = RemoveNoOpReshapeTranspose()(InferShapes()(m).model)
    assert ops(result.model) == ["Relu"]
    assert_same(m, result.model)


def test_reshape_chain_and_transpose_pair_merge() -> None:
    m = model([helper.make_node("Reshape", ["x", "s1"], ["a"], name="rs1"),
               helper.make_node("Reshape", ["a", "s2"], ["b"], name="rs2"),
               helper.make_node("Transpose", ["b"], ["c"], name="t1", perm=[1, 0, 2]),
               helper.make_node("Transpose", ["c"], ["y"], name="t2", perm=[0, 2, 1])],
              {"x": [2, 12]}, {"y": [4, 3, 2]},
              [init("s1", np.array([24])), init("s2", np.array([2, 4, 3]))])
    result = RemoveNoOpReshapeTranspose()(InferShapes()(m).model)
    assert ops(result.model) == ["Reshape", "Transpose"]
    assert_same(m, result.model)


def test_real_reshape_kept() -> None:
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
              {"x": [2, 3]}, {"y": [3, 2]}, [init("s", np.array([3, 2]))])
    assert not RemoveNoOpReshapeTranspose()(InferShapes()(m).model).modified
