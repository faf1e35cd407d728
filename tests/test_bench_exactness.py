"""The onnxruntime exactness check (ortnpu.bench.exactness): its exact sum and its layer check.

Whether onnxruntime saturates depends on the CPU (u8 x s8 without VNNI), so these tests check
the measuring, not onnxruntime: the exact convolution against a plain loop, and a layer whose
pair sums cannot saturate (|w| <= 64) coming out exact on any CPU.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu.bench import exactness


def _loop_conv(x: np.ndarray, w: np.ndarray, pads: list[int], strides: list[int]) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    co, _, kh, kw = w.shape
    oh = (xp.shape[2] - kh) // strides[0] + 1
    ow = (xp.shape[3] - kw) // strides[1] + 1
    y = np.zeros((1, co, oh, ow), np.int64)
    for o in range(co):
        for i in range(oh):
            for j in range(ow):
                r, c = i * strides[0], j * strides[1]
                patch = xp[0, :, r:r + kh, c:c + kw]
                y[0, o, i, j] = int((patch.astype(np.int64) * w[o].astype(np.int64)).sum())
    return y


def test_exact_convolution_matches_a_plain_loop() -> None:
    """The exact sum with ONNX's pads order (top, left, bottom, right) and the zero point."""
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 3, 7, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 2)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 4).astype(np.int64)
    for pads, strides in (([0, 0, 0, 0], [1, 1]), ([1, 0, 2, 1], [2, 1]), ([1, 1, 1, 1], [2, 2])):
        x_zp = int(rng.integers(-128, 128))
        np.testing.assert_array_equal(
            exactness.exact_sum(x, x_zp, w, bias, pads, strides),
            _loop_conv(x.astype(np.int64) - x_zp, w, pads, strides)
            + bias[None, :, None, None])


def _qdq_layer(w: np.ndarray, y_scale: float = 0.2) -> onnx.ModelProto:
    """x (int8) -> DQ -> Conv (DQ weights, DQ bias) -> Q: one layer as quantize_static writes it."""
    co = w.shape[0]
    inits = {
        "x_s": np.array(0.05, np.float32), "x_z": np.array(-20, np.int8),
        "w_q": w, "w_s": np.full(co, 0.01, np.float32), "w_z": np.zeros(co, np.int8),
        "b_q": np.arange(co, dtype=np.int32) * 37 - 50,
        "b_s": np.full(co, 0.05 * 0.01, np.float32), "b_z": np.zeros(co, np.int32),
        "y_s": np.array(y_scale, np.float32), "y_z": np.array(3, np.int8)}
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_s", "x_z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8,
                                                                         [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_layer_that_cannot_saturate_is_exact_on_any_cpu() -> None:
    rng = np.random.default_rng(1)
    # |w| <= 64: 255 * 64 * 2 = 32640 fits int16, so onnxruntime's u8 x s8 pair sums never clip
    model = _qdq_layer(rng.integers(-64, 65, (5, 8, 3, 3)).astype(np.int8), y_scale=0.5)
    (dqx, dqw, dqb, conv, qy), = exactness._qdq_convs(model)
    assert conv.name == "conv" and dqb is not None
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    inputs = [rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8) for _ in range(2)]
    inputs.append(np.full((1, 8, 6, 6), 127, np.int8))  # the top of the range
    check = exactness._check_layer(conv, dqx, dqw, dqb, qy, inits, inputs)
    assert check.outputs == 3 * 5 * 36
    assert check.wrong == 0 and check.max_diff <= 1, check
    # and the outputs are not all clamped (a clamped output would hide a wrong sum)
    y = exactness.exact_sum(inputs[2], -20, inits["w_q"], np.zeros(5, np.int64), [1, 1, 1, 1],
                            [1, 1])
    assert np.abs(y * 0.05 * 0.01 / 0.5).max() < 120


def test_layer_inputs_by_name_with_several_outputs() -> None:
    """A model with two outputs (the zoo ViT has logits and a saliency map): each layer gets its
    own input tensor, not the model's second output (the speed bench's check crashed there)."""
    model = _qdq_layer(np.ones((5, 8, 3, 3), np.int8))
    extra = helper.make_node("DequantizeLinear", ["x", "x_s", "x_z"], ["side"])
    model.graph.node.append(extra)
    model.graph.output.insert(0, helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (3, 8, 6, 6)).astype(np.int8)
    got = exactness.layer_inputs(model, "x", ["x", "y", "x"], x)
    assert list(got) == ["x", "y"]
    for i in range(3):
        np.testing.assert_array_equal(got["x"][i], x[i:i + 1])
        assert got["y"][i].shape == (1, 5, 6, 6) and got["y"][i].dtype == np.int8
