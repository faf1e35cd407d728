import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, run

import ortnpu
from ortnpu.passes.softmax_axis import SoftmaxToLastAxis


def _softmax(axis: int, shape: list, opset: int = 17) -> onnx.ModelProto:
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=axis)
    return model([node], {"x": shape}, {"y": shape}, opset=opset)


@pytest.mark.parametrize(("axis", "shape"), [(1, [1, 16, 4, 8]), (-3, [2, 16, 4, 8]),
                                             (0, [5, 7]), (2, [2, 3, 4, 5])])
def test_inner_axis_softmax_moves_to_the_last_axis(axis: int, shape: list) -> None:
    m = _softmax(axis, shape)
    result = SoftmaxToLastAxis(max_rank=4)(m)
    assert result.modified
    assert ops(result.model) == ["Transpose", "Softmax", "Transpose"]
    soft = result.model.graph.node[1]
    assert soft.name == "sm" and helper.get_attribute_value(soft.attribute[0]) == -1
    assert_same(m, result.model, tol=1e-6)


@pytest.mark.parametrize(("axis", "shape", "opset", "max_rank"), [
    (-1, [1, 16, 4, 8], 17, 4),     # already the last axis
    (3, [1, 16, 4, 8], 17, 4),
    (1, [1, 16, 4, 8], 11, 4),      # opset 11: a Softmax over every axis from 1 on
    (1, [1, 2, 16, 4, 8], 17, 4),   # a rank the target's transposes do not take
])
def test_other_softmax_is_kept(axis: int, shape: list, opset: int, max_rank: int) -> None:
    assert not SoftmaxToLastAxis(max_rank)(_softmax(axis, shape, opset)).modified


def _dfl_head() -> onnx.ModelProto:
    """YOLOv8's distribution focal loss: a 1x1 conv to 4 x 16 bins, Softmax over the bins
    (axis 1 of [1, 16, 4, anchors]), then the expected bin by a 1x1 conv of weights 0..15."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="box")
    shape = helper.make_node("Reshape", ["c", "shape"], ["r"], name="bins")
    soft = helper.make_node("Softmax", ["r"], ["p"], name="dfl", axis=1)
    proj = helper.make_node("Conv", ["p", "proj"], ["y"], name="expect")
    rng = np.random.default_rng(7)   # its own weights: the shared RNG depends on test order
    return model([conv, shape, soft, proj], {"x": [1, 8, 4, 6]}, {"y": [1, 1, 4, 24]},
                 [init("w", rng.normal(0, 0.5, (64, 8, 1, 1))),
                  init("shape", np.array([1, 16, 4, 24], np.int64)),
                  init("proj", np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1))])


def test_detector_head_softmax_runs_on_the_npu() -> None:
    m = _dfl_head()
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 8, 4, 6)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    assert not [n for n in npu.graph.node if n.domain == "" and n.op_type == "Softmax"]
    sess = ortnpu.InferenceSession(npu)
    x = calib[:1]   # within the calibrated ranges: no clipping in the comparison with float
    got = sess.run(None, {"x": x})[0]
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    # the expected bin (0..15) within a few of the output's 8-bit steps
    assert np.abs(got - run(m, {"x": x})[0]).max() < 0.5
