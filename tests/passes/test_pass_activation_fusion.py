import numpy as np
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand

from ortnpu.passes import FUSED_ACTIVATION_KEY, FUSED_INTO_KEY, MarkFusedActivations
from ortnpu.passes.graph import get_meta
from ortnpu.target import load_target, parse_target


def _conv_act(act: str) -> object:
    inputs = ["c", "lo", "hi"] if act == "Clip" else ["c"]
    return model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                  helper.make_node(act, inputs, ["y"], name="act")],
                 {"x": [1, 2, 3, 3]}, {"y": [1, 2, 3, 3]},
                 [init("w", rand(2, 2, 1, 1)), init("lo", np.array(0.0, np.float32)),
                  init("hi", np.array(6.0, np.float32))])


def test_relu_marked_and_kept() -> None:
    m = _conv_act("Relu")
    result = MarkFusedActivations()(m)
    assert ops(result.model) == ["Conv", "Relu"]
    conv, relu = result.model.graph.node
    assert get_meta(conv, FUSED_ACTIVATION_KEY) == "Relu"
    assert get_meta(relu, FUSED_INTO_KEY) == "conv"
    assert_same(m, result.model)
    assert not MarkFusedActivations()(result.model).modified


def test_clip_bounds_recorded() -> None:
    result = MarkFusedActivations(load_target("tflite-int8"))(_conv_act("Clip"))
    assert get_meta(result.model.graph.node[0], FUSED_ACTIVATION_KEY) == "Clip(0,6)"


def test_target_without_fusion() -> None:
    target = parse_target('name = "t"\n[support]\nfused_activations = []\n')
    assert not MarkFusedActivations(target)(_conv_act("Relu")).modified
