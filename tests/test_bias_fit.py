"""A channel with all-but-zero weights keeps its bias (the weight scale leaves the bias room)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.quant.params import fit_bias
from ortnpu.target import load_target


def _conv_with_dead_channel() -> object:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    w[2] *= 1e-17            # a channel scaled by a learned factor near zero (PP-OCRv4 rec)
    b = np.array([0.1, -0.2, 4.5, 0.3], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1] * 4)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_dead_channel_keeps_its_bias(target: str) -> None:
    model = _conv_with_dead_channel()
    rng = np.random.default_rng(1)
    calib = [{"x": rng.normal(0, 1, (1, 3, 6, 6)).astype(np.float32)} for _ in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no overflowing cast of the bias
        npu = ortnpu.quantize(model, target, calib)
    y = ortnpu.InferenceSession(npu).run(None, calib[0])[0]
    scale = 6.0 / 127   # far coarser than any output step here
    assert np.abs(y[0, 2] - 4.5).max() < scale


def test_fit_bias_raises_only_the_scales_that_need_it() -> None:
    arith = load_target("tflite-int8").arithmetic
    w = np.array([[1.0, -0.5], [1e-17, 2e-17]])
    scales = np.array([1.0 / 127, 2e-17 / 127])
    q = np.round(w / scales[:, None]).astype(np.int8)
    q2, s2 = fit_bias(w, q, scales, np.array([0.5, 4.5]), 0.01, 32, arith)
    assert s2[0] == np.float32(scales[0]) and s2[1] >= 4.5 / (0.01 * (2 ** 30))
    np.testing.assert_array_equal(q2[0], q[0])
    np.testing.assert_array_equal(q2[1], [0, 0])
    same = fit_bias(w, q, scales, np.array([0.5, 0.0]), 0.01, 32, arith)
    assert same[0] is q and same[1] is scales


def test_fit_bias_keeps_the_integers_of_the_channels_it_does_not_raise() -> None:
    """A learned rounding's integers (not the nearest ones) survive a raise in another
    channel; only the raised channel is requantized."""
    arith = load_target("tflite-int8").arithmetic
    w = np.array([[1.0, -0.5, 0.25], [1e-17, 2e-17, 0.0]])
    scales = np.array([1.0 / 127, 2e-17 / 127])
    learned = np.array([[126, -64, 32], [64, 127, 0]], np.int8)   # row 0 off nearest [127, -64, 32]
    q2, s2 = fit_bias(w, learned, scales, np.array([0.5, 4.5]), 0.01, 32, arith)
    np.testing.assert_array_equal(q2[0], learned[0])
    np.testing.assert_array_equal(q2[1], [0, 0, 0])
    assert s2[1] > scales[1]
