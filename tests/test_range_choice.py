"""``auto`` keeps its clipped per-tensor ranges or every tensor's extremes, by the output error.

PP-OCRv4's detector lost 0.07 of map cosine to ``auto``'s clipped ranges (the rare large
activations are the text); ``ortnpu.quant.range_choice`` quantizes both ways and keeps the one
whose outputs are closer to the float model's on the calibration data.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.quant.calibrate import HistogramCalibrator
from ortnpu.quant.quantizer import META_TENSORS, QuantConfig, QuantizationResult
from ortnpu.target import load_target


def _tensors(npu: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in npu.metadata_props}[META_TENSORS])


def test_extremes_win_when_the_clipped_ranges_hurt_the_output(monkeypatch) -> None:
    """Ranges clipped to 30 % of the extremes ruin the output: the extremes are kept, and the
    NPU graph is the one ``minmax`` gives."""
    monkeypatch.setattr(HistogramCalibrator, "_auto",
                        lambda self, h: (0.3 * h.lo, 0.3 * h.hi))
    res = QuantizationResult()
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(32), result=res)
    choice = res.range_choice
    assert choice is not None and choice.kept == "extremes"
    assert choice.extremes_db > choice.clipped_db + 3 and choice.batches == 4
    assert choice.note().startswith("calibration auto: every tensor's observed extremes "
                                    f"(output SQNR {choice.extremes_db:.1f} dB")
    minmax = ortnpu.quantize(small_cnn(), "tflite-int8", images(32), method="minmax")
    assert _tensors(npu) == _tensors(minmax)


def test_the_clipped_ranges_stay_when_they_are_no_worse(monkeypatch) -> None:
    """A tie keeps ``auto``'s own ranges (here they are the extremes, so both score alike)."""
    monkeypatch.setattr(HistogramCalibrator, "_auto", lambda self, h: (h.lo, h.hi))
    res = QuantizationResult()
    ortnpu.quantize(small_cnn(), "tflite-int8", images(32), result=res)
    assert res.range_choice is not None and res.range_choice.kept == "clipped"
    assert res.range_choice.clipped_db == res.range_choice.extremes_db


def test_the_kept_ranges_score_at_least_the_other_ones_on_real_ranges() -> None:
    res = QuantizationResult()
    data = (images(16)[:, None] for _ in range(1))   # a one-pass generator of batches
    data = ({"x": x} for x in next(data))
    ortnpu.quantize(small_cnn(batch=1), "tflite-int8", data, result=res)
    c = res.range_choice
    assert c is not None and c.batches == 8
    kept, other = (c.clipped_db, c.extremes_db) if c.kept == "clipped" else \
        (c.extremes_db, c.clipped_db)
    assert kept >= other


@pytest.mark.parametrize("rounding", ["gptq", "adaround"])
def test_learned_rounding_rounds_the_kept_ranges(rounding: str) -> None:
    """The range choice is made with nearest rounding; the learned rounding then reads the
    kept graph's inputs and rounds the weights for those ranges (not the kept nearest
    graph returned as it is)."""
    res = QuantizationResult()
    config = QuantConfig(rounding=rounding, adaround_iterations=5)
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16), config=config, result=res)
    assert res.range_choice is not None and not res.range_choice.error
    near = ortnpu.quantize(small_cnn(), "tflite-int8", images(16),
                           config=QuantConfig(rounding="nearest"))

    def weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
                if i.name.endswith("_w")}

    got, base = weights(npu), weights(near)
    assert got.keys() == base.keys()
    assert any(not np.array_equal(got[k], base[k]) for k in got)


@pytest.mark.parametrize("how", ["minmax", "calibrator", "a16w8"])
def test_nothing_to_choose(how: str) -> None:
    res = QuantizationResult()
    kwargs: dict = {"result": res}
    target = "tflite-a16w8" if how == "a16w8" else "tflite-int8"
    if how == "minmax":
        kwargs["method"] = "minmax"
    elif how == "calibrator":
        kwargs["calibrator"] = HistogramCalibrator()
    ortnpu.quantize(small_cnn(), target, images(16), **kwargs)
    assert res.range_choice is None


def test_cli_and_autofix_say_what_they_kept(tmp_path, capsys) -> None:
    from ortnpu.cli import main

    onnx.save(small_cnn(), tmp_path / "f.onnx")
    np.savez(tmp_path / "calib.npz", x=images(16))
    assert main(["quantize", str(tmp_path / "f.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "npu.onnx")]) == 0
    assert "calibration auto: " in capsys.readouterr().out
    _, report = ortnpu.autofix(small_cnn(), "tflite-int8", images(16), images(8, seed=3),
                               progress=False)
    assert report.range_choice is not None
    assert report.range_choice.note() in str(report)
    assert report.to_dict()["range_choice"]["kept"] == report.range_choice.kept


def test_a_graph_that_cannot_be_scored_keeps_the_clipped_ranges(monkeypatch) -> None:
    """The check is optional: when the NPU graph cannot run here, quantize goes on as before
    and says why nothing was compared."""
    import ortnpu.runtime

    def broken(*args, **kwargs):
        raise RuntimeError("no session today")

    monkeypatch.setattr(ortnpu.runtime, "InferenceSession", broken)
    res = QuantizationResult()
    ortnpu.quantize(small_cnn(), "tflite-int8", images(16), result=res)
    assert res.range_choice is not None and res.range_choice.kept == "clipped"
    assert "not compared with the extremes: no session today" in res.range_choice.note()


def _heavy_tailed_linear() -> tuple[onnx.ModelProto, np.ndarray, float]:
    """y = x·W + b on heavy-tailed x (Student's t, 3 degrees of freedom, 50 000 rows: enough
    tail for ``auto`` to clip); returns the model, x and the largest value."""
    from graphs import checked_model

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(np.eye(6, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.zeros(6, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1"),
         helper.make_node("Gemm", ["h", "w", "b"], ["y"], name="fc2")], "tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], [w, b])
    x = rng.standard_t(3, (50000, 6)).astype(np.float32)
    return checked_model(graph), x, float(x.max())


def test_auto_keeps_the_model_outputs_extremes() -> None:
    """The model's answer is in its largest outputs: ``auto`` clips a heavy-tailed inner
    tensor but keeps the outputs' observed extremes (unless told otherwise)."""
    from ortnpu.quant.calibrate import calibrate

    model, x, top = _heavy_tailed_linear()
    collector = QuantConfig().collector(None, load_target("tflite-int8").arithmetic, ["y"])
    calibrate(model, x, collector)
    assert collector.range_of("h")[1] < top * 0.8            # the inner tensor is clipped
    assert collector.range_of("y")[1] >= top * (1 - 1e-3)  # the output is not
    told = QuantConfig(method_overrides=(("y", "auto"),)).collector(
        None, load_target("tflite-int8").arithmetic, ["y"])
    calibrate(model, x, told)
    assert told.range_of("y")[1] < top * 0.8
    explicit = QuantConfig(method="mse").collector(None, None, ["y"])
    calibrate(model, x, explicit)
    assert explicit.range_of("y")[1] < top * 0.8


def test_quantize_keeps_the_outputs_extremes(monkeypatch) -> None:
    """The NPU graph's output grid reaches the output's largest value on the calibration data
    while the inner tensor's is clipped (the clipped-or-extremes choice left out)."""
    import ortnpu.quant.quantizer as quantizer

    monkeypatch.setattr(quantizer, "histogram_of", lambda calibrator: None)
    model, x, top = _heavy_tailed_linear()
    npu = ortnpu.quantize(model, "tflite-int8", x)
    grids = {t: p["scale"] * (127 - p["zero_point"]) for t, p in _tensors(npu).items()
             if t in ("h", "y")}
    assert grids["h"] < top * 0.8 and grids["y"] >= top - 1e-3 * top, grids


def test_output_headroom_keeps_unseen_top_outputs_apart() -> None:
    """Two outputs above the calibration data's largest value both saturate on the observed
    extremes, tie, and the argmax takes the wrong one (EfficientNet-Lite0's cup and coffee
    mug); the default's headroom keeps them apart. ``y_i = x_i + x_(i+1)``: each calibration
    sample has one large input, the unseen one two neighbours whose sum passes every
    calibration output (its inputs stay inside their own calibrated ranges)."""
    from graphs import checked_model

    rng = np.random.default_rng(8)
    mix = np.eye(8, dtype=np.float32) + np.eye(8, k=-1, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "scores",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(mix, "w")])
    model = checked_model(graph)
    calib = []
    for _ in range(64):
        x = rng.uniform(-1.0, 1.0, (1, 8)).astype(np.float32)
        x[0, rng.integers(8)] = rng.uniform(5.0, 9.0)
        calib.append({"x": x})
    top = max(float((s["x"] @ mix).max()) for s in calib)
    unseen = np.zeros((1, 8), np.float32)
    unseen[0, 2:4] = 5.0, top + 0.3 - 5.0
    unseen[0, 5:7] = 5.0, top + 0.5 - 5.0                    # the answer is output 5
    got = {}
    for label, overrides in (("extremes", (("y", "minmax"),)), ("default", ())):
        npu = ortnpu.quantize(model, "tflite-int8", calib, optimize=False,
                              config=QuantConfig(method_overrides=overrides))
        got[label] = ortnpu.InferenceSession(npu).run(None, {"x": unseen})[0][0]
        grid = _tensors(npu)["y"]
        got[label + " top"] = grid["scale"] * (127 - grid["zero_point"])
    assert got["extremes"][2] == got["extremes"][5] and got["extremes"].argmax() == 2
    assert got["default"][5] > got["default"][2] and got["default"].argmax() == 5
    assert got["default top"] > top + 0.5 > got["extremes top"]
