import numpy as np
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand

from ortnpu.passes import FoldBatchNorm


def _bn_inits(c: int, prefix: str = "bn") -> list:
    return [init(f"{prefix}_s", rand(c) + 2), init(f"{prefix}_b", rand(c)),
            init(f"{prefix}_m", rand(c)), init(f"{prefix}_v", np.abs(rand(c)) + 0.5)]


def _bn(x: str, y: str, prefix: str = "bn") -> object:
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b",
                                                   f"{prefix}_m", f"{prefix}_v"], [y],
                            name=prefix, epsilon=1e-3)


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn(group: int, bias: bool) -> None:
    inits = [init("w", rand(4, 4 // group, 3, 3)), *_bn_inits(4)]
    conv_in = ["x", "w"]
    if bias:
        inits.append(init("b", rand(4)))
        conv_in.append("b")
    m = model([helper.make_node("Conv", conv_in, ["c"], name="conv", group=group, pads=[1] * 4),
               _bn("c", "y")], {"x": [1, 4, 5, 5]}, {"y": [1, 4, 5, 5]}, inits)
    result = FoldBatchNorm()(m)
    assert ops(result.model) == ["Conv"]
    assert result.model.graph.node[0].name == "conv"
    assert result.changes == ["folded BatchNormalization 'bn' into Conv 'conv'"]
    assert_same(m, result.model)


def test_conv_transpose_bn_grouped() -> None:
    inits = [init("w", rand(4, 3, 2, 2)), *_bn_inits(6)]
    m = model([helper.make_node("ConvTranspose", ["x", "w"], ["c"], name="ct", group=2,
                                strides=[2, 2]),
               _bn("c", "y")], {"x": [1, 4, 3, 3]}, {"y": [1, 6, 6, 6]}, inits)
    result = FoldBatchNorm()(m)
    assert ops(result.model) == ["ConvTranspose"]
    assert_same(m, result.model)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn(trans_b: int) -> None:
    w = rand(5, 3) if trans_b else rand(3, 5)
    m = model([helper.make_node("Gemm", ["x", "w", "c"], ["g"], name="fc", transB=trans_b,
                                alpha=0.5, beta=2.0), _bn("g", "y")],
              {"x": [2, 3]}, {"y": [2, 5]}, [init("w", w), init("c", rand(5)), *_bn_inits(5)])
    result = FoldBatchNorm()(m)
    assert ops(result.model) == ["Gemm"]
    assert_same(m, result.model)


def test_matmul_bn_becomes_add() -> None:
    m = model([helper.make_node("MatMul", ["x", "w"], ["g"], name="mm"), _bn("g", "y")],
              {"x": [2, 3]}, {"y": [2, 5]}, [init("w", rand(3, 5)), *_bn_inits(5)])
    from ortnpu.passes import InferShapes
    result = FoldBatchNorm()(InferShapes()(m).model)
    assert ops(result.model) == ["MatMul", "Add"]
    assert_same(m, result.model)


def test_shared_conv_output_not_folded() -> None:
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y")],
              {"x": [1, 4, 3, 3]}, {"y": [1, 4, 3, 3], "c": [1, 4, 3, 3]},
              [init("w", rand(4, 4, 1, 1)), *_bn_inits(4)])
    assert not FoldBatchNorm()(m).modified


def test_shared_weight_is_copied() -> None:
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y"),
               helper.make_node("Conv", ["x", "w"], ["z"], name="conv2")],
              {"x": [1, 4, 3, 3]}, {"y": [1, 4, 3, 3], "z": [1, 4, 3, 3]},
              [init("w", rand(4, 4, 1, 1)), *_bn_inits(4)])
    result = FoldBatchNorm()(m)
    assert ops(result.model) == ["Conv", "Conv"]
    assert result.model.graph.node[1].input[1] == "w"
    assert result.model.graph.node[0].input[1] != "w"
    assert_same(m, result.model)
