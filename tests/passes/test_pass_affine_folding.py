import numpy as np
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand

from ortnpu.passes import FoldConvAffine


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [[1], [], [1, 4, 1, 1], [4, 1, 1]])
def test_conv_mul_add_fold_into_the_conv(bias: bool, shape: list[int]) -> None:
    """PP-LCNetV3's learnable affine pair (a scalar or per-channel Mul then Add, either operand
    order) after a Conv: one Conv with the same outputs."""
    inits = [init("w", rand(4, 1, 3, 3)), init("a", rand(*shape) if shape else np.float32(1.7)),
             init("c", rand(*shape) if shape else np.float32(-0.3))]
    conv_in = ["x", "w"]
    if bias:
        inits.append(init("b", rand(4)))
        conv_in.append("b")
    m = model([helper.make_node("Conv", conv_in, ["c0"], name="dw", group=4, pads=[1] * 4),
               helper.make_node("Mul", ["a", "c0"], ["m"], name="scale"),
               helper.make_node("Add", ["m", "c"], ["y"], name="shift")],
              {"x": [1, 4, 5, 5]}, {"y": [1, 4, 5, 5]}, inits)
    result = FoldConvAffine()(m)
    assert ops(result.model) == ["Conv"]
    assert result.changes == ["folded constant Mul 'scale' into Conv 'dw'",
                              "folded constant Add 'shift' into Conv 'dw'"]
    assert_same(m, result.model)


def test_shared_weights_and_non_channel_constants_are_left_alone() -> None:
    inits = [init("w", rand(4, 4, 1, 1)), init("a", rand(1, 1, 5, 1)), init("c", rand(4))]
    m = model([helper.make_node("Conv", ["x", "w"], ["c0"], name="conv"),
               helper.make_node("Mul", ["c0", "a"], ["m"], name="rows"),      # varies on H
               helper.make_node("Conv", ["m", "w"], ["c1"], name="conv2"),
               helper.make_node("Mul", ["c1", "c1"], ["y"], name="square")],   # not constant
              {"x": [1, 4, 5, 5]}, {"y": [1, 4, 5, 5]}, inits)
    assert FoldConvAffine()(m).changes == []
    # a weight another Conv reads is copied, not changed under it; a chain folds step by step
    m2 = model([helper.make_node("Conv", ["x", "w"], ["c0"], name="conv"),
                helper.make_node("Add", ["c0", "k"], ["a0"], name="shift"),
                helper.make_node("Mul", ["a0", "k"], ["m"], name="scale"),
                helper.make_node("Conv", ["m", "w"], ["c1"], name="conv2"),
                helper.make_node("Mul", ["c1", "k"], ["y"], name="scale2")],
               {"x": [1, 4, 5, 5]}, {"y": [1, 4, 5, 5]},
               [init("w", rand(4, 4, 1, 1)), init("k", np.float32(2.5))])
    result = FoldConvAffine()(m2)
    assert ops(result.model) == ["Conv", "Conv"]
    assert_same(m2, result.model)
    kept = {t.name: t for t in result.model.graph.initializer}
    assert "w" in kept and result.model.graph.node[0].input[1] != "w"


@pytest.mark.parametrize("group", [1, 2, 6])
def test_conv_transpose_mul_add_fold_along_its_output_channels(group: int) -> None:
    """Paddle exports a ConvTranspose's bias as an Add (PP-OCRv4 det's upsampling): folded,
    with a per-channel Mul, into the ConvTranspose (weights [C, O / group, k, k])."""
    inits = [init("w", rand(6, 6 // group, 2, 2)), init("a", rand(1, 6, 1, 1)),
             init("c", rand(1, 6, 1, 1))]
    m = model([helper.make_node("ConvTranspose", ["x", "w"], ["c0"], name="up", group=group,
                                strides=[2, 2]),
               helper.make_node("Mul", ["c0", "a"], ["m"], name="scale"),
               helper.make_node("Add", ["m", "c"], ["y"], name="bias")],
              {"x": [1, 6, 3, 4]}, {"y": [1, 6, 6, 8]}, inits)
    result = FoldConvAffine()(m)
    assert ops(result.model) == ["ConvTranspose"]
    assert result.changes == ["folded constant Mul 'scale' into ConvTranspose 'up'",
                              "folded constant Add 'bias' into ConvTranspose 'up'"]
    assert_same(m, result.model)
