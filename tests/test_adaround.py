"""Learned rounding of weights (AdaRound): the layer statistics, the optimisation, the option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.quant import QuantConfig
from ortnpu.quant.adaround import (
    MAX_LEARNED_DEPTH,
    AdaRoundOptions,
    GramCollector,
    _column_sums,
    _patches,
    find_layers,
    learn_rounding,
)
from ortnpu.quant.calibrate import MinMaxCalibrator, calibrate
from ortnpu.quant.params import weight_params
from ortnpu.target import load_target


def _conv_model(group: int, strides: list[int], pads: list[int], dilations: list[int],
                kernel: tuple[int, int] = (3, 2)) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 6 // group, *kernel)) * 0.3).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group, pads=pads,
                            strides=strides, dilations=dilations)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 6, 9, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_patches_times_weights_is_the_convolution() -> None:
    """The input rows the Gram matrix is built from are exactly what each output reads
    (grouped, strided, dilated, asymmetric pads; weight order C_in/g, kh, kw)."""
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 8)).astype(np.float32)
    for group, strides, pads, dilations, kernel in (
            (1, [1, 1], [1, 0, 1, 1], [1, 1], (3, 2)),
            (2, [1, 1], [0, 0, 0, 0], [1, 1], (1, 1)),        # pointwise: the no-copy path
            (3, [2, 1], [0, 1, 2, 0], [1, 2], (3, 2)),
            (6, [2, 2], [1, 1, 0, 0], [2, 1], (3, 2))):
        model = _conv_model(group, strides, pads, dilations, kernel)
        (layer,) = find_layers(model)
        y = ort.InferenceSession(model.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        w = layer.w.reshape(group, 6 // group, -1)
        for n in range(2):
            p = _patches(layer, x[n])                       # [G, rows, D]
            out = np.matmul(p, w.transpose(0, 2, 1))          # [G, rows, C_out/g]
            got = out.transpose(0, 2, 1).reshape(6, *y.shape[2:])
            np.testing.assert_allclose(got, y[n], atol=1e-5)
            pick = np.array([0, 3, p.shape[1] - 1])        # sampled output positions
            np.testing.assert_array_equal(_patches(layer, x[n], pick), p[:, pick])
            sums, positions = _column_sums(layer, x[n])          # the means' sums, no im2col
            assert positions == p.shape[1]
            np.testing.assert_allclose(sums, p.sum(axis=1, dtype=np.float64), rtol=1e-5,
                                       atol=1e-4)


def _output_error(w: np.ndarray, q: np.ndarray, s: np.ndarray, x: np.ndarray) -> float:
    return float((((q * s[:, None] - w) @ x.T) ** 2).sum())


def test_learned_rounding_beats_nearest_on_the_layer_output() -> None:
    """Correlated inputs: nearest rounding ignores that errors of weights meeting the same
    inputs add up; the learned rounding lowers the output error, each weight stays the floor
    or the ceiling of w/s, and the integer range is kept."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 32)) * 0.2
    mix = rng.standard_normal((32, 32)) * 0.3 + np.eye(32)
    x = rng.standard_normal((4000, 32)) @ mix
    q0, scales = weight_params(w, load_target("tflite-int8").arithmetic, True)
    gram = (x.T @ x / len(x))[None]
    q = learn_rounding(w, scales, 1, (-127, 127), gram=gram,
                       options=AdaRoundOptions(iterations=400))
    near = _output_error(w, q0.astype(np.float64), scales, x)
    learned = _output_error(w, q.astype(np.float64), scales, x)
    assert learned < 0.7 * near
    ratio = w / scales[:, None]
    assert np.all((q == np.floor(ratio)) | (q == np.ceil(ratio)))
    assert q.min() >= -127 and q.max() <= 127
    # the same optimisation from the input rows themselves (few rows: the classifier case)
    rows = (x[:12] / np.sqrt(12))[None]
    q_rows = learn_rounding(w, scales, 1, (-127, 127), rows=rows,
                            options=AdaRoundOptions(iterations=400))
    assert _output_error(w, q_rows, scales, x[:12]) <= _output_error(w, q0, scales, x[:12])


def test_grouped_layer_learns_per_group() -> None:
    """A depthwise layer: each output channel's error depends only on its own input channel."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 1, 3, 3)) * 0.5
    x = rng.standard_normal((4, 2000, 9)) + rng.standard_normal((4, 2000, 1))  # shared offset
    gram = np.matmul(x.transpose(0, 2, 1), x) / 2000
    q0, scales = weight_params(w, load_target("tflite-int8").arithmetic, True)
    q = learn_rounding(w, scales, 4, (-127, 127), gram=gram,
                       options=AdaRoundOptions(iterations=300))
    for c in range(4):
        wc, xc = w[c].reshape(1, 9), x[c]
        assert (_output_error(wc, q[c].reshape(1, 9), scales[c:c + 1], xc)
                <= _output_error(wc, q0[c].reshape(1, 9).astype(np.float64), scales[c:c + 1],
                                 xc))


def test_collector_gathers_every_layer_and_keeps_the_ranges() -> None:
    model = ortnpu.optimize(small_cnn())
    layers = find_layers(model)
    assert {la.node for la in layers} >= {"conv1", "dwconv", "pwconv", "fc"}
    collector = GramCollector(MinMaxCalibrator(), layers)
    calibrate(model, images(20), collector, progress=False)
    plain = calibrate(model, images(20), MinMaxCalibrator(), progress=False)
    assert collector.range_of("c1") == plain.range_of("c1")
    st = collector.stats["conv1"]
    assert st.gram.shape == (1, 27, 27) and st.count % (20 * 12 * 12) == 0
    conv1 = next(la for la in layers if la.node == "conv1")
    p = np.concatenate([_patches(conv1, x)[0] for x in images(20)]).astype(np.float64)
    np.testing.assert_allclose(st.gram[0] / st.count, p.T @ p / len(p), rtol=1e-4)
    assert collector.stats["dwconv"].gram.shape == (8, 9, 9)


def test_adaround_option_quantizes_with_learned_integer_weights() -> None:
    """The option changes only the integer weights (by at most one step), the graph still
    runs exactly on the integer pipeline, and its output is at least as close to float on
    data it was not calibrated on."""
    model = small_cnn()
    calib, test = images(96), images(128, seed=9)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    outs, weights = {}, {}
    for learned in (False, True):
        config = QuantConfig(adaround=True, adaround_iterations=300) if learned else \
            QuantConfig(rounding="nearest")
        npu = ortnpu.quantize(model, "tflite-int8", calib, config=config)
        weights[learned] = {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer
                            if i.name.endswith("_w")}
        outs[learned] = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    assert weights[False].keys() == weights[True].keys()
    changed = 0
    for name, q in weights[True].items():
        diff = q.astype(int) - weights[False][name].astype(int)
        assert np.abs(diff).max() <= 1
        changed += int(np.count_nonzero(diff))
    assert changed > 0
    err = {k: float(np.abs(v - ref).mean()) for k, v in outs.items()}
    assert err[True] <= err[False] * 1.1


def test_cli_adaround(tmp_path: Path, capsys) -> None:
    from ortnpu.cli import main

    path, calib, out = tmp_path / "float.onnx", tmp_path / "calib.npz", tmp_path / "npu.onnx"
    onnx.save(small_cnn(), str(path))
    np.savez(calib, x=images(16))
    assert main(["quantize", str(path), "--calib", str(calib), "-o", str(out), "--adaround",
                 "--adaround-iterations", "50", "--adaround-inputs", "float"]) == 0
    assert "nodes on the NPU" in capsys.readouterr().out
    assert out.is_file()


def _asym_error(w: np.ndarray, q: np.ndarray, s: np.ndarray, x: np.ndarray,
                xq: np.ndarray) -> float:
    return float((((q * s[:, None]) @ xq.T - w @ x.T) ** 2).sum())


def test_learned_rounding_with_quantized_inputs_offsets_their_error() -> None:
    """When the layer reads a quantized input ``x_q``, the loss against the float output
    ``W·x`` (H_qq and H_fq) finds a rounding that also offsets the input's error: lower than
    nearest rounding and than the rounding learned for float inputs; the row form agrees."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 32)) * 0.2
    mix = rng.standard_normal((32, 32)) * 0.3 + np.eye(32)
    x = rng.standard_normal((4000, 32)) @ mix
    xq = np.round(x / 0.25) * 0.25 + 0.04 * x        # a coarse grid and a gain error upstream
    q0, scales = weight_params(w, load_target("tflite-int8").arithmetic, True)
    opts = AdaRoundOptions(iterations=400)
    q_float = learn_rounding(w, scales, 1, (-127, 127), gram=(x.T @ x / len(x))[None],
                             options=opts)
    q_quant = learn_rounding(w, scales, 1, (-127, 127), gram=(xq.T @ xq / len(x))[None],
                             cross=(x.T @ xq / len(x))[None], options=opts)
    near = _asym_error(w, q0.astype(np.float64), scales, x, xq)
    learned_float = _asym_error(w, q_float.astype(np.float64), scales, x, xq)
    learned_quant = _asym_error(w, q_quant.astype(np.float64), scales, x, xq)
    assert learned_quant < learned_float and learned_quant < 0.9 * near
    ratio = w / scales[:, None]
    assert np.all((q_quant == np.floor(ratio)) | (q_quant == np.ceil(ratio)))
    rows, qrows = (x[:12] / np.sqrt(12))[None], (xq[:12] / np.sqrt(12))[None]
    q_rows = learn_rounding(w, scales, 1, (-127, 127), rows=rows, qrows=qrows, options=opts)
    assert (_asym_error(w, q_rows, scales, x[:12], xq[:12])
            <= _asym_error(w, q0, scales, x[:12], xq[:12]))


def test_quantized_inputs_are_the_inputs_through_their_npu_quantization() -> None:
    """``read_quantized_inputs`` accumulates, per layer, H_qq and H_fq from the layer's float
    input and that input through its NPU tensor's scale and zero point (QuantizeLinear and
    back): the input grid's own error, not the upstream layers'."""
    from ortnpu.comparison import _npu_tensors, _with_outputs
    from ortnpu.quant.adaround import read_quantized_inputs

    model = ortnpu.optimize(small_cnn())
    collector = GramCollector(MinMaxCalibrator(), find_layers(model))
    calib = images(12)
    calibrate(model, calib, collector, progress=False)
    npu = ortnpu.quantize(model, "tflite-int8", calibrated=collector, optimize=False)
    feeds = [{"x": calib[:8]}, {"x": calib[8:]}]
    assert read_quantized_inputs(collector, model, npu, feeds) == len(collector.layers)
    conv = next(la for la in collector.layers if la.node == "pwconv")
    t = _npu_tensors(npu, "npu")[conv.x]
    f_out = np.concatenate([ort.InferenceSession(
        _with_outputs(model, [conv.x], {}).SerializeToString(),
        providers=["CPUExecutionProvider"]).run([conv.x], f)[0] for f in feeds])
    info = np.iinfo(t.dtype)
    q = np.clip(np.rint(f_out.astype(np.float64) / np.float32(t.scale)) + t.zero_point,
                info.min, info.max)
    xq = ((q - t.zero_point) * t.scale).astype(np.float32)
    pq = np.concatenate([_patches(conv, s)[0] for s in xq]).astype(np.float64)
    pf = np.concatenate([_patches(conv, s)[0] for s in f_out]).astype(np.float64)
    st = collector.stats[conv.node]
    assert st.qcount == len(pq)
    np.testing.assert_allclose(st.qgram[0], pq.T @ pq, rtol=1e-4)
    np.testing.assert_allclose(st.cross[0], pf.T @ pq, rtol=1e-4)
    assert not np.allclose(pq, pf)        # the inputs really are the quantized ones


def test_adaround_inputs_must_be_known() -> None:
    from ortnpu.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="adaround_inputs"):
        ortnpu.quantize(small_cnn(), "tflite-int8", images(8),
                        config=QuantConfig(adaround=True, adaround_inputs="both",
                                           adaround_iterations=5))


def test_measured_bias_removes_the_mean_output_error() -> None:
    """``bias_deltas`` is ``W·E[x] - A·E[x_q]`` per output channel, from the same rows as
    H_qq; with it in the bias the mean output error of every read layer on those rows is
    zero, and ``quantize`` puts it into the integer bias (off: the bias is the plain one)."""
    from ortnpu.quant.adaround import read_quantized_inputs

    model = ortnpu.optimize(small_cnn())
    collector = GramCollector(MinMaxCalibrator(), find_layers(model))
    calib = images(12)
    calibrate(model, calib, collector, progress=False)
    npu = ortnpu.quantize(model, "tflite-int8", calibrated=collector, optimize=False)
    read_quantized_inputs(collector, model, npu, [{"x": calib}])
    arith = load_target("tflite-int8").arithmetic
    opts = AdaRoundOptions(iterations=20)
    deltas = collector.bias_deltas(arith, True, opts)
    learned = collector.learned(arith, True, opts)
    conv = next(la for la in collector.layers if la.node == "pwconv")
    st = collector.stats[conv.node]
    q, scales = learned[conv.weight]
    a = q.reshape(q.shape[0], -1).astype(np.float64) * scales[:, None]
    w = conv.w.reshape(q.shape[0], -1)
    mean_error = w @ (st.fsum[0] / st.qcount) - a @ (st.qsum[0] / st.qcount)
    np.testing.assert_allclose(deltas[conv.weight], mean_error, rtol=1e-9)
    assert set(deltas) == {la.weight for la in collector.layers}
    biases = {}
    for on in (False, True):
        out = ortnpu.quantize(model, "tflite-int8", calib, optimize=False, config=QuantConfig(
            adaround=True, adaround_iterations=20, adaround_bias_correction=on))
        biases[on] = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer
                      if i.name.endswith("_bias")}
    assert biases[False].keys() == biases[True].keys()
    assert any(not np.array_equal(biases[False][k], biases[True][k]) for k in biases[False])


@pytest.mark.parametrize(("depth", "learned"), [(MAX_LEARNED_DEPTH, True),
                                                (MAX_LEARNED_DEPTH + 1, False)])
def test_layers_too_wide_to_learn_round_to_nearest(depth: int, learned: bool) -> None:
    """A layer's Gram matrix takes 8·D² bytes and GPTQ holds several: VGG-19's classifier
    (D = 25 088) drove the default quantization out of memory. Wider layers than
    MAX_LEARNED_DEPTH are not collected (nearest rounding); the others are."""
    w = np.zeros((2, depth), np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    graph = helper.make_graph([node], "fc", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, depth])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert [la.node for la in find_layers(model)] == (["fc"] if learned else [])
