"""Per-tensor weight targets (n2d2-int8): equalization through ReLU6 and bias correction by
default, the remedy for depthwise layers whose channels differ in range (MobileNetV2)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.passes import EqualizeWeights
from ortnpu.quant import QuantConfig
from ortnpu.quant.per_tensor import channel_maxima, equalize


def _mobile_block(seed: int = 0) -> onnx.ModelProto:
    """Expand 1x1 -> ReLU6 -> depthwise 3x3 (channel ranges 1e-3..1) -> ReLU6 -> project 1x1."""
    rng = np.random.default_rng(seed)
    c = 16
    w1 = rng.normal(0, 0.5, (c, 3, 1, 1)).astype(np.float32)
    w1[:2] *= 8.0   # two channels the ReLU6 clips on the data
    b1 = rng.normal(0, 0.1, c).astype(np.float32)
    spread = np.logspace(-3, 0, c).astype(np.float32)
    w2 = (rng.normal(0, 1, (c, 1, 3, 3)) * spread[:, None, None, None]).astype(np.float32)
    b2 = rng.normal(0, 0.05, c).astype(np.float32)
    # the projection reads the small channels with large weights: they matter downstream
    w3 = (rng.normal(0, 0.3, (4, c, 1, 1)) / spread[None, :, None, None]).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"),
              (np.float32(0), "lo"), (np.float32(6), "hi")]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="expand"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6_1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", group=c,
                              pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6_2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="project")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_relu6_pairs_are_equalized_only_with_data_and_keep_the_outputs() -> None:
    model, calib = _mobile_block(), _samples(16, 1)
    assert EqualizeWeights()(model).changes == []   # Clip pairs need the data's maxima
    maxima = channel_maxima(model, calib, ["c1", "c2"])
    assert maxima["c1"].shape == (16,) and (maxima["c1"][:2] > 6).all()
    eq = equalize(model, calib)
    w = {t.name: numpy_helper.to_array(t) for t in eq.graph.initializer}
    w1 = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["w1"]
    # the channels the ReLU6 clips keep their scale: the bound stays where the data put it
    np.testing.assert_array_equal(w["w1"][:2], w1[:2])
    assert not np.allclose(w["w1"][2:], w1[2:])
    r2 = np.abs(w["w2"]).reshape(16, -1).max(axis=1)
    before = np.abs({t.name: numpy_helper.to_array(t)
                     for t in model.graph.initializer}["w2"]).reshape(16, -1).max(axis=1)
    assert r2.max() / r2.min() < before.max() / before.min() / 4
    for feeds in (calib, _samples(8, 2)):
        ref, got = _run(model, feeds), _run(eq, feeds)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_per_tensor_target_equalizes_and_corrects_biases_by_default() -> None:
    model, calib, test = _mobile_block(), _samples(32, 1), _samples(8, 3)
    ref = _run(model, test)
    cos = {}
    for label, config in (("default", QuantConfig()),
                          ("off", QuantConfig(equalize=False, bias_correction=False))):
        npu = ortnpu.quantize(model, "n2d2-int8", calib, config=config)
        sess = ortnpu.InferenceSession(npu)
        cos[label] = _cosine(np.concatenate([sess.run(None, f)[0] for f in test]), ref)
    assert cos["default"] > 0.99 > cos["off"], cos


def test_auto_settings_follow_the_weight_granularity() -> None:
    from ortnpu.target import load_target

    per_tensor, per_channel = (load_target(t).arithmetic for t in ("n2d2-int8", "tflite-int8"))
    on = QuantConfig().resolved(per_tensor)
    assert (on.per_channel, on.equalize, on.bias_correction) == (False, True, True)
    off = QuantConfig().resolved(per_channel)
    assert (off.per_channel, off.equalize, off.bias_correction) == (True, False, False)
    assert QuantConfig(per_channel=False).resolved(per_channel).equalize is True
    assert QuantConfig(bias_correction=False).resolved(per_tensor).bias_correction is False
    fixed = QuantConfig().resolved(per_tensor, fixed_weights=True)   # QDQ import: weights given
    assert (fixed.equalize, fixed.bias_correction) == (False, False)
