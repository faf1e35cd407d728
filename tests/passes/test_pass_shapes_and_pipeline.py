import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand, run

import ortnpu
from ortnpu.errors import ModelError
from ortnpu.passes import FixInputShapes, InferShapes, PassManager, RemoveUnused


def test_fix_input_shapes_and_infer() -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": ["n", 3]},
              {"y": [None, None]})
    fixed = FixInputShapes({"x": [2, 3]})(m).model
    inferred = InferShapes()(fixed)
    assert inferred.modified
    dims = [d.dim_value for d in inferred.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 3]


@pytest.mark.parametrize(("shapes", "message"), [
    ({"nope": [1, 3]}, "not a model input"),
    ({"x": [1, 3, 3]}, "rank"),
    ({"x": [2, 4]}, "size 3 on axis 1"),
    ({"x": [0, 3]}, "positive"),
])
def test_fix_input_shapes_errors(shapes: dict, message: str) -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": ["n", 3]},
              {"y": [None, None]})
    with pytest.raises(ModelError, match=message):
        FixInputShapes(shapes)(m)


def test_remove_unused() -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r"),
               helper.make_node("Neg", ["x"], ["dead"], name="dead")],
              {"x": [2]}, {"y": [2]}, [init("unused", np.ones(2))])
    result = RemoveUnused()(m)
    assert ops(result.model) == ["Relu"] and not result.model.graph.initializer


def _bn_cnn() -> onnx.ModelProto:
    c = 4
    return model([
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Flatten", ["d"], ["f"]),
        helper.make_node("MatMul", ["f", "fw"], ["mm"]),
        helper.make_node("Add", ["mm", "fb"], ["y"]),
    ], {"x": ["n", 1, 4, 4]}, {"y": ["n", 3]},
        [init("w", rand(c, 1, 3, 3)), init("s", rand(c) + 2), init("b", rand(c)),
         init("m", rand(c)), init("v", np.abs(rand(c)) + 1), init("fw", rand(c * 16, 3)),
         init("fb", rand(3))])


def test_optimize_pipeline() -> None:
    m = _bn_cnn()
    before = m.SerializeToString()
    out, result = ortnpu.optimize(m, input_shapes={"x": [1, 1, 4, 4]}, return_results=True)
    assert m.SerializeToString() == before  # input not mutated
    assert ops(out) == ["Conv", "Relu", "Flatten", "Gemm"]
    assert [n.name for n in out.graph.node] == ["Conv_0", "Relu_2", "Flatten_4", "MatMul_5"]
    assert {d.name for d in result.details if d.modified} >= {
        "NameNodes", "FoldBatchNorm", "FuseMatMulAdd", "MarkFusedActivations"}
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype(np.float32)}
    np.testing.assert_allclose(run(m, feeds)[0], run(out, feeds)[0], atol=1e-5)
    again = ortnpu.optimize(out)
    assert ops(again) == ops(out)


def test_optimize_keeps_dynamic_batch_when_not_fixed() -> None:
    m = _bn_cnn()
    out = ortnpu.optimize(m)
    assert_same(m, out)
    assert "BatchNormalization" not in ops(out)


def test_optimize_bad_input() -> None:
    with pytest.raises(ModelError):
        ortnpu.optimize("model.onnx")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="unknown pass"):
        ortnpu.optimize(_bn_cnn(), skip=["Nope"])


def test_pass_manager_details() -> None:
    result = PassManager([InferShapes(), RemoveUnused()])(_bn_cnn())
    assert [d.name for d in result.details] == ["InferShapes", "RemoveUnused"]
    assert result.to_dict()["passes"][0]["pass"] == "InferShapes"
