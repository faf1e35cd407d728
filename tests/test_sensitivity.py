"""Output sensitivity: the NPU graph's 8-bit grids simulated in the float model, one activation
left exact at a time (what autofix ranks its first candidates by)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from graphs import InflatedRange, images, small_cnn

import ortnpu
import ortnpu.quant.autofix as autofix_module
from ortnpu.quant import QuantConfig
from ortnpu.quant.sensitivity import _simulated, output_gains, rank_by_output

#: pwconv writes c3; its range inflated 300-fold leaves c3 a few levels of its 8-bit grid
LAYERS = {"conv1": "r1", "dwconv": "r2", "pwconv": "c3", "add1": "a1", "swish": "m1",
          "fc": "logits", "softmax": "probs"}


@pytest.fixture(scope="module")
def broken() -> dict:
    model = ortnpu.optimize(small_cnn())
    npu = ortnpu.quantize(model, "tflite-int8", images(64), optimize=False,
                          calibrator=InflatedRange("c3", 300.0),
                          config=QuantConfig(rounding="nearest"))
    return {"model": model, "npu": npu, "feed": {"x": images(16, seed=3)}}


def test_the_badly_gridded_activation_gains_most(broken: dict) -> None:
    gains = output_gains(broken["model"], broken["npu"], broken["feed"], LAYERS)
    assert set(gains) == set(LAYERS)
    assert max(gains, key=gains.get) == "pwconv"
    assert gains["pwconv"] > 10 and gains["pwconv"] > 5 * max(
        g for n, g in gains.items() if n != "pwconv")
    # the model's output has no simulated grid (it is what the SQNR is measured on)
    assert gains["softmax"] == 0.0


def test_every_activation_exact_is_the_float_model(broken: dict) -> None:
    """The flags select the float value bit for bit, and each flag only its own activation."""
    from ortnpu.comparison import _npu_tensors

    model, feed = broken["model"], broken["feed"]
    grids = {t: p for t, p in _npu_tensors(broken["npu"], "npu").items()
             if t in {"r1", "r2", "c3"}}
    sim, flags = _simulated(model, grids)
    sess = ort.InferenceSession(sim.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feed)
    exact = sess.run(None, {**feed, **{f: np.array(True) for f in flags.values()}})
    for a, b in zip(ref, exact, strict=True):
        np.testing.assert_array_equal(a, b)
    simulated = sess.run(None, {**feed, **{f: np.array(False) for f in flags.values()}})
    assert not np.array_equal(ref[0], simulated[0])


def test_rank_by_output_moves_only_the_costly_layers() -> None:
    order = ["a", "b", "c", "d"]
    gains = {"a": 0.0, "b": 0.1, "c": 2.0, "d": 0.5}
    assert rank_by_output(gains, order, 0.3) == ["c", "d", "a", "b"]
    assert rank_by_output({}, order, 0.3) == order


def test_autofix_puts_the_costly_layer_first_and_says_so() -> None:
    model = small_cnn()
    _, report = ortnpu.autofix(model, "tflite-int8", images(64), images(48, seed=5), "sqnr",
                               goal=40.0, max_candidates=2, search="greedy", progress=False,
                               calibrator=InflatedRange("c3", 300.0),
                               config=QuantConfig(rounding="nearest"))
    assert report.candidates[0] == "pwconv"
    assert report.ranked_by.startswith("first the 1 layer(s) whose activation alone costs")
    assert "compare" in report.ranked_by


def test_autofix_keeps_compares_order_when_the_output_check_fails(monkeypatch) -> None:
    def broken_check(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("simulated model rejected")

    monkeypatch.setattr("ortnpu.quant.sensitivity.output_gains", broken_check)
    assert autofix_module.OUTPUT_FIRST_DB > 0
    _, report = ortnpu.autofix(small_cnn(), "tflite-int8", images(64), images(48, seed=5),
                               "sqnr", goal=40.0, max_candidates=2, search="greedy",
                               progress=False, calibrator=InflatedRange("c3", 300.0),
                               config=QuantConfig(rounding="nearest"))
    assert report.ranked_by.startswith("worst first by the error each adds alone (compare)")
    assert "the output check could not run: simulated model rejected" in report.ranked_by
    assert report.steps and report.steps[0].layer == "pwconv"


def test_many_activations_get_fewer_samples(broken: dict, monkeypatch) -> None:
    """The sample runs are capped: each activation costs one run over the samples."""
    import ortnpu.quant.sensitivity as sensitivity

    seen: list[int] = []
    real = sensitivity.run_samples

    def counting(sess, feed, *args, **kwargs):
        seen.append(len(feed["x"]))
        return real(sess, feed, *args, **kwargs)

    monkeypatch.setattr(sensitivity, "run_samples", counting)
    monkeypatch.setattr(sensitivity, "SAMPLE_RUNS", 45)
    output_gains(broken["model"], broken["npu"], broken["feed"], LAYERS)
    assert set(seen) == {5}                 # 45 // (7 activations + 2 reference runs)
    seen.clear()
    monkeypatch.setattr(sensitivity, "SAMPLE_RUNS", 9)
    output_gains(broken["model"], broken["npu"], broken["feed"], LAYERS)
    assert set(seen) == {4}                 # never fewer than 4
