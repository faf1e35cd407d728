import numpy as np
import onnx
from onnx import TensorProto, helper
from passes_helpers import assert_same, init, model, ops

from ortnpu.passes import RemoveIdentity


def test_identity_and_dropout_removed() -> None:
    m = model([helper.make_node("Relu", ["x"], ["a"], name="r"),
               helper.make_node("Identity", ["a"], ["b"], name="id"),
               helper.make_node("Dropout", ["b"], ["c"], name="drop"),
               helper.make_node("Relu", ["c"], ["y"], name="r2")],
              {"x": [3]}, {"y": [3]})
    result = RemoveIdentity()(m)
    assert ops(result.model) == ["Relu", "Relu"]
    assert result.changes == ["removed Identity 'id'", "removed Dropout 'drop'"]
    assert_same(m, result.model)


def test_identity_before_graph_output_renames_producer() -> None:
    m = model([helper.make_node("Relu", ["x"], ["a"], name="r"),
               helper.make_node("Identity", ["a"], ["y"], name="id")], {"x": [3]}, {"y": [3]})
    result = RemoveIdentity()(m)
    assert ops(result.model) == ["Relu"]
    assert result.model.graph.node[0].output[0] == "y"
    assert_same(m, result.model)


def test_identity_of_graph_input_to_output_is_kept() -> None:
    m = model([helper.make_node("Identity", ["x"], ["y"], name="id")], {"x": [3]}, {"y": [3]})
    assert not RemoveIdentity()(m).modified


def test_dropout_with_used_mask_or_training_is_kept() -> None:
    m = model([helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="d")],
              {"x": [3]}, {"y": [3]},
              [init("r", np.array(0.5, np.float32)), init("t", np.array(True))])
    assert not RemoveIdentity()(m).modified


def test_cast_to_its_own_type_is_removed_and_a_real_cast_kept() -> None:
    """Silero VAD casts float32 to float32 three times: each was a CPU node between NPU layers."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Cast", ["r"], ["c"], name="same", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["c"], ["h"], name="half", to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], name="back", to=TensorProto.FLOAT)]
    m = model(nodes, {"x": [2, 3]}, {"y": [2, 3]})
    typed = onnx.shape_inference.infer_shapes(m)
    result = RemoveIdentity()(typed)
    assert result.changes == ["removed Cast 'same'"]
    assert ops(result.model) == ["Relu", "Cast", "Cast"]
    assert_same(m, result.model)
