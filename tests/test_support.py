"""Support checks: one verdict per node, with a reason naming node, op and limit."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from ortnpu.target import load_target, parse_target
from ortnpu.target.support import Verdict, check_node

T = load_target("tflite-int8")


def _target(**support: object) -> object:
    lines = ["name = 't'", "[support]"]
    for k, v in support.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = "[" + ", ".join(f'"{x}"' for x in v) + "]"
        lines.append(f"{k} = {v}")
    return parse_target("\n".join(lines))


def _conv(kernel: int = 3, stride: int = 1, dilation: int = 1, group: int = 1, cin: int = 8,
          cout: int = 8, name: str = "conv5") -> tuple:
    node = helper.make_node("Conv", ["x", "w"], ["y"], name=name, strides=[stride] * 2,
                            dilations=[dilation] * 2, group=group)
    w = np.zeros((cout, cin // group, kernel, kernel), np.float32)
    shapes = {"x": [1, cin, 32, 32], "y": [1, cout, 16, 16], "w": list(w.shape)}
    return node, shapes, {"w": w}


def test_supported_conv() -> None:
    node, shapes, consts = _conv()
    v = check_node(T, node, shapes, constants=consts)
    assert v == Verdict(True, "Conv 'conv5': runs on the NPU")
    assert T.check(node, shapes).supported


@pytest.mark.parametrize(("kwargs", "rules", "reason"), [
    ({"kernel": 9}, {"max_kernel": 7},
     "Conv 'conv5': kernel 9x9 exceeds the target's maximum 7x7 ([support] max_kernel)"),
    ({"stride": 4}, {"max_stride": 2},
     "Conv 'conv5': stride 4x4 exceeds the target's maximum 2x2 ([support] max_stride)"),
    ({"dilation": 3}, {"max_dilation": 2},
     "Conv 'conv5': dilation 3x3 exceeds the target's maximum 2x2 ([support] max_dilation)"),
    ({"cout": 64}, {"max_channels": 32},
     "Conv 'conv5': 64 output channels exceed the target's maximum of 32 "
     "([support] max_channels)"),
    ({"group": 8}, {"depthwise": False},
     "Conv 'conv5': depthwise convolution (group = channels = 8) is not supported by the "
     "target ([support] depthwise = false)"),
    ({"group": 2}, {"grouped": False},
     "Conv 'conv5': grouped convolution (group = 2) is not supported by the target "
     "([support] grouped = false)"),
])
def test_conv_limits(kwargs: dict, rules: dict, reason: str) -> None:
    node, shapes, consts = _conv(**kwargs)
    assert check_node(T, node, shapes, constants=consts).supported
    assert check_node(_target(**rules), node, shapes, constants=consts) == Verdict(False, reason)


def test_op_type_and_cpu_preferred() -> None:
    grid = helper.make_node("GridSample", ["x", "g"], ["y"], name="gs")
    v = check_node(T, grid, {})
    assert not v.supported and v.reason.startswith("GridSample 'gs': op type GridSample is not "
                                                   "among")
    assert "add it to op_types" in v.reason
    sm = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    v = check_node(_target(op_types=["Softmax"], cpu_preferred=["Softmax"]), sm, {})
    assert v.reason.startswith("Softmax 'sm': the target leaves Softmax to the CPU")
    assert check_node(_target(op_types=["Softmax"], cpu_preferred=[]), sm, {}).supported


def test_custom_domain() -> None:
    node = helper.make_node("Foo", ["x"], ["y"], name="f", domain="com.microsoft")
    assert "not a standard ONNX op" in check_node(T, node, {}).reason


def test_tensor_rules() -> None:
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    v = check_node(T, relu, {"x": [1, 2, 3, 4, 5], "y": [1, 2, 3, 4, 5]})
    assert v.reason == ("Relu 'r': input 'x' has rank 5 [1, 2, 3, 4, 5], above the target's "
                        "maximum rank 4 ([support] max_rank)")
    v = check_node(T, relu, {"x": ["N", 3, None, 4], "y": ["N", 3, None, 4]})
    assert "dynamic shape [N, 3, ?, 4]" in v.reason and "--input-shape" in v.reason
    assert check_node(_target(dynamic_shapes=True), relu, {"x": ["N", 3]}).supported
    v = check_node(T, relu, {}, require_shapes=True)
    assert "shape of input 'x' is unknown" in v.reason
    v = check_node(T, relu, {"x": [2], "y": [2]}, dtypes={"x": TensorProto.INT64})
    assert "input 'x' is int64" in v.reason and "[support] dtypes" in v.reason


def test_matmul_two_activations() -> None:
    mm = helper.make_node("MatMul", ["q", "k"], ["s"], name="qk")
    shapes = {"q": [1, 4, 8], "k": [1, 8, 4], "s": [1, 4, 4]}
    v = check_node(_target(), mm, shapes, constants={})   # the default: constant weights only
    assert v.reason.startswith("MatMul 'qk': both operands are computed at run time")
    assert check_node(_target(matmul_two_activations=True), mm, {}, constants={}).supported
    # TFLite's BATCH_MATMUL multiplies two int8 or int16 activations
    assert check_node(T, mm, shapes, constants={}).supported
    assert check_node(load_target("tflite-a16w8"), mm, shapes, constants={}).supported
    assert check_node(T, mm, {}, constants={"k": np.zeros((8, 4))}).supported


@pytest.mark.parametrize(("node", "consts", "needle"), [
    (helper.make_node("Reshape", ["x", "s"], ["y"], name="rs"), {}, "target shape input"),
    (helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="c"), {"lo": 0}, "bounds"),
    (helper.make_node("Pad", ["x", "p"], ["y"], name="p", mode="reflect"),
     {"p": np.zeros(8)}, "Pad mode 'reflect'"),
    (helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2]), {},
     "Indices"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[32, 32]), {},
     "kernel 32x32 exceeds the target's maximum 16x16"),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="c3"), {"w": np.zeros((2, 2, 3, 3, 3))},
     "3-D convolution (3 spatial axes) exceeds"),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="cw"), {}, "weights are computed"),
])
def test_family_checks(node: object, consts: dict, needle: str) -> None:
    rules = _target(op_types=["Reshape", "Clip", "Pad", "MaxPool", "AveragePool", "Conv"])
    v = check_node(rules, node, {}, constants=consts)
    assert not v.supported and needle in v.reason, v.reason
    assert v.reason.startswith(f"{node.op_type} '{node.name}': ")
