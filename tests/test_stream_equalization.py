"""Residual streams scaled per channel: same float outputs, narrower channel spread."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import checked_model, images
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.passes import EqualizeStreams
from ortnpu.passes.stream_equalization import find_streams
from ortnpu.passes.weight_equalization import equalized_channels
from ortnpu.quant.per_tensor import channel_maxima, channel_rms, equalize
from ortnpu.quant.quantizer import QuantConfig


def two_streams(seed: int = 0, spread: float = 30.0, tail: str = "Conv") -> onnx.ModelProto:
    """Stem conv writes stream 1 (channels 1..spread times apart), one inverted-residual block
    adds to it; a conv reads stream 1 and writes stream 2 (another block adds to it); ``tail``
    (a Conv, or a Relu that a stream must not feed) reads stream 2."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                       name)

    stem = rng.standard_normal((8, 3, 3, 3)) * 0.3
    stem *= np.geomspace(1.0, spread, 8)[:, None, None, None]
    inits = [numpy_helper.from_array(stem.astype(np.float32), "w_stem"), w("b_stem", 8),
             w("w_e1", 16, 8, 1, 1), w("w_d1", 16, 1, 3, 3), w("w_p1", 8, 16, 1, 1),
             w("b_p1", 8), w("w_mid", 6, 8, 1, 1), w("b_mid", 6), w("w_e2", 12, 6, 1, 1),
             w("w_p2", 6, 12, 1, 1), w("w_out", 4, 6, 1, 1)]
    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["s0"], name="stem",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s0", "w_e1"], ["e1"], name="expand1"),
        helper.make_node("Relu", ["e1"], ["e1r"], name="relu_e1"),
        helper.make_node("Conv", ["e1r", "w_d1"], ["d1"], name="dw1", pads=[1, 1, 1, 1],
                         group=16),
        helper.make_node("Relu", ["d1"], ["d1r"], name="relu_d1"),
        helper.make_node("Conv", ["d1r", "w_p1", "b_p1"], ["p1"], name="project1"),
        helper.make_node("Add", ["s0", "p1"], ["s1"], name="add1"),
        helper.make_node("Conv", ["s1", "w_mid", "b_mid"], ["t0"], name="mid"),
        helper.make_node("Conv", ["t0", "w_e2"], ["e2"], name="expand2"),
        helper.make_node("Relu", ["e2"], ["e2r"], name="relu_e2"),
        helper.make_node("Conv", ["e2r", "w_p2"], ["p2"], name="project2"),
        helper.make_node("Add", ["p2", "t0"], ["t1"], name="add2"),
    ]
    nodes.append(helper.make_node("Conv", ["t1", "w_out"], ["y"], name="out") if tail == "Conv"
                 else helper.make_node("Relu", ["t1"], ["y"], name="out"))
    graph = helper.make_graph(
        nodes, "two_streams", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, 12, 12])], inits)
    return checked_model(graph)


def _run(model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in names or []:
        probe.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _spread(v: np.ndarray) -> float:
    r = np.abs(v).max(axis=(0, 2, 3))
    return float(r.max() / r.min())


def test_streams_are_the_tensors_sums_tie_with_their_writers_and_readers() -> None:
    streams = {s.tensors: s for s in find_streams(two_streams().graph)}
    assert set(streams) == {("p1", "s0", "s1"), ("p2", "t0", "t1")}
    first, second = streams[("p1", "s0", "s1")], streams[("p2", "t0", "t1")]
    assert set(first.writers) == {"stem", "project1"}
    assert set(first.readers) == {"expand1", "mid"}
    assert set(second.writers) == {"mid", "project2"}     # mid reads one stream, writes the other
    assert set(second.readers) == {"expand2", "out"}


def test_a_stream_that_a_non_conv_reads_is_left_alone() -> None:
    streams = find_streams(two_streams(tail="Relu").graph)
    assert [s.tensors for s in streams] == [("p1", "s0", "s1")]


def test_same_outputs_narrower_channels_and_the_factors_recorded() -> None:
    model, x = two_streams(), images(16)
    tensors = ["s0", "s1", "p1", "t0", "t1", "p2"]
    result = EqualizeStreams(channel_rms(model, x, tensors))(model)
    assert result.modified and len(result.changes) == 2
    before, after = _run(model, x, tensors), _run(result.model, x, tensors)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-4, atol=1e-4)   # float outputs
    factors = equalized_channels(result.model)
    assert set(factors) == set(tensors)
    for k, name in enumerate(tensors, start=1):
        np.testing.assert_allclose(after[k] * factors[name][None, :, None, None], before[k],
                                   rtol=1e-4, atol=1e-4)
    # alpha 0.5 halves the spread in dB (of the RMS, the largest over the stream's tensors)
    assert _spread(before[1]) > 30 and _spread(after[1]) < _spread(before[1]) / 3


def test_alpha_zero_changes_nothing_and_the_input_model_is_untouched() -> None:
    model, x = two_streams(), images(8)
    original = model.SerializeToString()
    rms = channel_rms(model, x, ["s0", "s1", "p1", "t0", "t1", "p2"])
    out = EqualizeStreams(rms, alpha=0.0)(model).model
    assert model.SerializeToString() == original
    np.testing.assert_array_equal(_run(out, x)[0], _run(model, x)[0])


STREAMS = QuantConfig(equalize=True)


def test_equalization_scales_streams_on_per_channel_weights_unless_told_not_to() -> None:
    model, x = two_streams(), images(32)
    per_channel = ortnpu.quantize(model, "tflite-int8", x, config=STREAMS)
    assert {"s0", "s1", "t1"} <= set(equalized_channels(per_channel))
    for target, config in [("tflite-int8", QuantConfig(equalize=True, equalize_streams=False)),
                           ("tflite-int8", QuantConfig(equalize=False)),
                           ("n2d2-int8", STREAMS)]:                        # per-tensor weights
        npu = ortnpu.quantize(model, target, x, config=config)
        assert not {"s0", "s1", "t1"} & set(equalized_channels(npu)), target


def test_the_output_chooses_streams_like_pairs() -> None:
    """A model with streams and no equalizable pair still gets the choice (both graphs are
    quantized and scored); its result says which was kept."""
    from ortnpu.quant.quantizer import QuantizationResult

    res = QuantizationResult()
    npu = ortnpu.quantize(two_streams(), "tflite-int8", images(32), result=res)
    assert res.equalization is not None and not res.equalization.error
    assert bool(set(equalized_channels(npu))) == res.equalization.equalized


def test_channel_rms_and_maxima() -> None:
    model, x = two_streams(), images(4)
    (s0,) = _run(model, x, ["s0"])[1:]
    np.testing.assert_allclose(channel_rms(model, x, ["s0"])["s0"],
                               np.sqrt((s0.astype(np.float64) ** 2).mean(axis=(0, 2, 3))),
                               rtol=1e-6)
    np.testing.assert_allclose(channel_maxima(model, x, ["s0"])["s0"], s0.max(axis=(0, 2, 3)),
                               rtol=1e-6)


def test_compare_sees_the_scaled_streams_like_the_float_model() -> None:
    """compare divides the float reference by the recorded factors: the stream tensors of the
    equalized graph score as well as those of the plain one (they would be 10+ dB off)."""
    model, x = two_streams(), images(32)
    npu = ortnpu.quantize(model, "tflite-int8", x, config=STREAMS)
    report = ortnpu.compare(model, npu, x).to_dict()
    sqnr = {layer["output"]: layer["in_graph"]["sqnr_db"] for layer in report["layers"]}
    assert sqnr["s1"] > 20, sqnr


@pytest.mark.parametrize("streams", [False, True])
def test_equalize_keeps_the_float_outputs(streams: bool) -> None:
    model, x = two_streams(), images(16)
    out = equalize(model, x, streams=streams)
    np.testing.assert_allclose(_run(out, x)[0], _run(model, x)[0], rtol=1e-4, atol=1e-4)
    assert bool({"s0", "s1"} & set(equalized_channels(out))) == streams
