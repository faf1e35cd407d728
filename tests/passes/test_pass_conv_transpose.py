import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand, run

import ortnpu
from ortnpu.passes.conv_transpose import ConvTransposeAsConv


def _deconv(cin: int, cout: int, k: tuple[int, int], hw: tuple[int, int], opset: int = 17,
            bias: bool = True, **attrs: object) -> onnx.ModelProto:
    g = int(attrs.get("group", 1))
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    node = helper.make_node("ConvTranspose", inputs, ["y"], name="up", **attrs)
    inits = [init("w", rand(cin, cout // g, *k))] + ([init("b", rand(cout))] if bias else [])
    return model([node], {"x": ["N", cin, *hw]}, {"y": ["N", cout, "h", "w"]}, inits,
                 opset=opset)


@pytest.mark.parametrize(("cin", "cout", "k", "hw", "attrs"), [
    (4, 6, (2, 2), (3, 5), {"strides": [2, 2]}),                      # PP-OCR det's upsampling
    (4, 6, (4, 4), (3, 5), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    (4, 6, (3, 3), (4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                            "output_padding": [1, 1]}),
    (4, 4, (3, 2), (4, 5), {"strides": [3, 2], "pads": [0, 1, 0, 0]}),
    (4, 6, (3, 3), (4, 4), {"strides": [2, 2], "dilations": [2, 2]}),
    (4, 6, (3, 3), (4, 4), {"strides": [2, 2], "group": 2}),
    (6, 6, (3, 3), (4, 4), {"strides": [2, 2], "group": 6}),          # depthwise
    (4, 6, (3, 3), (4, 4), {}),                                       # stride 1: a plain Conv
    (4, 6, (2, 2), (3, 5), {"strides": [2, 2], "auto_pad": "VALID"}),
    (4, 6, (2, 2), (3, 5), {"strides": [2, 2], "pads": [2, 1, 2, 2]}),   # crops the input
    (4, 6, (2, 2), (3, 5), {"strides": [3, 3]}),                         # kernel < stride
    (4, 6, (3, 3), (4, 4), {"pads": [3, 2, 2, 3]}),                      # stride 1, cropped
])
def test_conv_transpose_becomes_zero_insertion_and_conv(cin: int, cout: int, k: tuple, hw: tuple,
                                                        attrs: dict) -> None:
    m = _deconv(cin, cout, k, hw, **attrs)
    result = ConvTransposeAsConv()(m)
    assert result.modified, result.changes
    strided = attrs.get("strides", [1, 1]) != [1, 1]
    cropped = attrs.get("strides") == [3, 3] or max(attrs.get("pads", [0])) > 1
    assert ops(result.model) == (["Reshape", "Pad", "Reshape"] if strided else []) + \
        (["Slice"] if cropped else []) + ["Conv"]
    assert result.model.graph.node[-1].name == "up"
    assert "w" not in [t.name for t in result.model.graph.initializer]
    assert_same(m, result.model, tol=1e-5)
    x = rand(2, cin, *hw)     # any batch
    np.testing.assert_allclose(run(m, {"x": x})[0], run(result.model, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_opset_10_pads_as_an_attribute() -> None:
    m = _deconv(4, 6, (2, 2), (3, 5), opset=10, strides=[2, 2])
    result = ConvTransposeAsConv()(m)
    assert result.modified
    assert_same(m, result.model, tol=1e-5)


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2], "output_shape": [7, 11]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [2, 2], "pads": [3, 3, 3, 3]},       # crops everything: no output left
])
def test_other_conv_transposes_are_kept(attrs: dict) -> None:
    assert not ConvTransposeAsConv()(_deconv(4, 6, (2, 2), (3, 5), **attrs)).modified


@pytest.mark.parametrize("attrs", [{"strides": [2, 2], "pads": [2, 2, 2, 2]},
                                   {"strides": [3, 3]}])
def test_a_crop_needs_a_target_with_slice(attrs: dict) -> None:
    m = _deconv(4, 6, (2, 2), (3, 5), **attrs)
    assert not ConvTransposeAsConv(crop=False)(m).modified
    assert ConvTransposeAsConv(crop=True)(m).modified


def _decoder() -> onnx.ModelProto:
    """A segmentation decoder's step: 3x3 conv, ReLU, a 2x2 stride-2 ConvTranspose, ReLU."""
    conv = helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="enc", pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["c"], ["r"], name="relu")
    up = helper.make_node("ConvTranspose", ["r", "w2", "b2"], ["u"], name="up", strides=[2, 2])
    out = helper.make_node("Relu", ["u"], ["y"], name="relu2")
    rng = np.random.default_rng(5)   # its own weights: the shared RNG depends on test order
    return model([conv, relu, up, out], {"x": [1, 4, 8, 8]}, {"y": [1, 6, 16, 16]},
                 [init("w1", rng.normal(0, 0.3, (8, 4, 3, 3))), init("b1", rng.normal(0, 1, 8)),
                  init("w2", rng.normal(0, 0.3, (8, 6, 2, 2))), init("b2", rng.normal(0, 1, 6))])


def test_conv_transpose_runs_on_the_npu_exactly() -> None:
    m = _decoder()
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 4, 8, 8)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    assert not [n for n in npu.graph.node if n.domain == "" and n.op_type == "ConvTranspose"]
    sess = ortnpu.InferenceSession(npu)
    assert [r.native for r in sess.compile_reports] == [True]
    x = calib[:1]   # within the calibrated ranges: no clipping in the comparison with float
    got = sess.run(None, {"x": x})[0]
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    ref = run(m, {"x": x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
