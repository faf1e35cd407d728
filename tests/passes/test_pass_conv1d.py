import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_one_exact_program, assert_same, init, model, ops, rand, run

import ortnpu
from ortnpu.passes.conv1d import Conv1dAsConv2d


def _conv1d(cin: int, cout: int, k: int, length: int, bias: bool = True,
            **attrs: object) -> onnx.ModelProto:
    g = int(attrs.get("group", 1))
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    node = helper.make_node("Conv", inputs, ["y"], name="tconv", **attrs)
    inits = [init("w", rand(cout, cin // g, k))] + ([init("b", rand(cout))] if bias else [])
    return model([node], {"x": ["N", cin, length]}, {"y": ["N", cout, "l"]}, inits)


@pytest.mark.parametrize(("cin", "cout", "k", "length", "attrs"), [
    (4, 6, 3, 16, {}),
    (4, 6, 3, 16, {"pads": [1, 2], "strides": [2]}),
    (4, 6, 5, 17, {"dilations": [2], "pads": [4, 4]}),
    (4, 6, 3, 16, {"group": 2}),
    (6, 6, 3, 16, {"group": 6, "pads": [1, 1]}),          # depthwise
    (4, 6, 4, 15, {"auto_pad": "SAME_UPPER", "strides": [2]}),
    (4, 6, 4, 15, {"auto_pad": "VALID"}),
    (1, 8, 256, 512, {"strides": [128]}),                  # Silero VAD's STFT as a convolution
])
def test_1d_convolution_becomes_2d_of_height_one(cin: int, cout: int, k: int, length: int,
                                                  attrs: dict) -> None:
    m = _conv1d(cin, cout, k, length, **attrs)
    result = Conv1dAsConv2d()(m)
    assert result.modified, result.changes
    assert ops(result.model) == ["Reshape", "Conv", "Reshape"]
    assert result.model.graph.node[1].name == "tconv"
    assert "w" not in [t.name for t in result.model.graph.initializer]
    assert_same(m, result.model, tol=1e-4)
    x = rand(3, cin, length)     # any batch
    np.testing.assert_allclose(run(m, {"x": x})[0], run(result.model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


def test_2d_and_dynamic_length_convolutions_are_kept() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c2d")
    m2d = model([conv], {"x": [1, 3, 5, 5]}, {"y": [1, 4, 3, 3]}, [init("w", rand(4, 3, 3, 3))])
    assert not Conv1dAsConv2d()(m2d).modified
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")
    dyn = model([conv], {"x": [1, 3, "L"]}, {"y": [1, 4, "l"]}, [init("w", rand(4, 3, 3))])
    assert not Conv1dAsConv2d()(dyn).modified


def _tcn() -> onnx.ModelProto:
    """Two 1-D convolutions with a ReLU between: a temporal convolutional network's block."""
    rng = np.random.default_rng(8)   # its own weights: the shared RNG depends on test order
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="tconv1", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="tconv2", strides=[2])]
    return model(nodes, {"x": [1, 4, 32]}, {"y": [1, 6, 15]},
                 [init("w1", rng.normal(0, 0.3, (8, 4, 3))), init("b1", rng.normal(0, 1, 8)),
                  init("w2", rng.normal(0, 0.3, (6, 8, 3))), init("b2", rng.normal(0, 1, 6))])


def test_1d_convolutions_run_on_the_npu_exactly() -> None:
    m = _tcn()
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    assert any("Conv1dAsConv2d (2" in n for n in report.estimate.notes), report.estimate.notes
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 4, 32)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    assert_one_exact_program(m, npu, calib[:1])
