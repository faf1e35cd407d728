"""On per-channel 8-bit targets, equalization is tried both ways and the closer graph kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
import ortnpu.quant.per_tensor as per_tensor
from ortnpu.quant.calibrate import HistogramCalibrator
from ortnpu.quant.quantizer import QuantConfig, QuantizationResult


def _initializers(npu: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer}


def _same(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    x, y = _initializers(a), _initializers(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_the_kept_graph_is_the_closer_one() -> None:
    res = QuantizationResult()
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(32), result=res)
    c = res.equalization
    assert c is not None and not c.error and c.batches == 4   # 64 samples in batches of 8
    kept, other = (c.equalized_db, c.plain_db) if c.equalized else (c.plain_db, c.equalized_db)
    assert kept >= other
    same = ortnpu.quantize(small_cnn(), "tflite-int8", images(32),
                           config=QuantConfig(equalize=c.equalized))
    assert _same(npu, same)
    assert res.placements and res.range_choice is not None   # the kept run's report
    assert c.note().startswith(f"equalization: {'on' if c.equalized else 'off'} "
                               f"(output SQNR {kept:.2f} dB")


def test_an_equalization_that_hurts_the_output_is_not_kept(monkeypatch) -> None:
    """An equalization that ruins the first layer (its weights divided by 50) loses to the
    plain graph, which is then the result."""
    real = per_tensor.equalize

    def spoiled(model: onnx.ModelProto, data: object, **kw: object) -> onnx.ModelProto:
        out = real(model, data, **kw)
        for init in out.graph.initializer:
            if init.name == "w1":
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) / 50, "w1"))
        return out

    monkeypatch.setattr(per_tensor, "equalize", spoiled)
    res = QuantizationResult()
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(32), result=res)
    c = res.equalization
    assert c is not None and not c.equalized and c.plain_db > c.equalized_db + 3
    plain = ortnpu.quantize(small_cnn(), "tflite-int8", images(32),
                            config=QuantConfig(equalize=False))
    assert _same(npu, plain)


def _single_conv() -> onnx.ModelProto:
    w = np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("how", ["per-tensor", "a16w8", "explicit-on", "explicit-off",
                                 "calibrator", "no-pairs"])
def test_nothing_to_choose(how: str) -> None:
    res = QuantizationResult()
    model = _single_conv() if how == "no-pairs" else small_cnn()
    data = images(16, shape=(3, 8, 8)) if how == "no-pairs" else images(16)
    target = {"per-tensor": "n2d2-int8", "a16w8": "tflite-a16w8"}.get(how, "tflite-int8")
    kwargs: dict = {"result": res}
    if how.startswith("explicit"):
        kwargs["config"] = QuantConfig(equalize=how == "explicit-on")
    if how == "calibrator":
        kwargs["calibrator"] = HistogramCalibrator()
    ortnpu.quantize(model, target, data, **kwargs)
    assert res.equalization is None
    assert per_tensor.equalizable(model) == (how != "no-pairs")


@pytest.mark.parametrize("target", ["tflite-int8", "n2d2-int8"])
def test_compare_measures_an_equalized_graph_against_its_float_model(target: str) -> None:
    """Equalization divides the channels of the tensors between a pair; the NPU graph records
    by how much, and compare scales its float reference alike (else the equalized layers
    looked 10 dB off)."""
    from ortnpu.comparison import compare
    from ortnpu.passes.weight_equalization import equalized_channels

    model = small_cnn()
    npu = ortnpu.quantize(model, target, images(64), config=QuantConfig(equalize=True))
    recorded = equalized_channels(npu)
    assert set(recorded) == {"c2", "r2"} and not np.allclose(recorded["c2"], 1.0)
    report = compare(model, npu, images(32, seed=5), progress=False)
    rows = {x.name: x for x in report.layers}
    assert rows["dwconv"].in_graph.sqnr_db > 25 and rows["dwconv"].isolated.sqnr_db > 25
    assert not report.suspects(), report.to_text()
