"""Error-feedback rounding of weights (GPTQ): the solver, and the default that uses it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import numpy_helper

import ortnpu
import ortnpu.quant.gptq as gptq
from ortnpu.errors import UnsupportedError
from ortnpu.quant import QuantConfig
from ortnpu.quant.gptq import gptq_rounding, output_error
from ortnpu.target import load_target


def _nearest(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.abs(w / s) + 0.5) * np.sign(w), -127, 127)


def _problem(outputs: int, depth: int, groups: int = 1, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights [groups·outputs, depth], per-channel scales and correlated Gram matrices."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((groups, depth, depth))
    x = np.matmul(rng.standard_normal((groups, 4 * depth, depth)), mix)
    gram = np.matmul(x.transpose(0, 2, 1), x) / x.shape[1]
    w = rng.standard_normal((groups * outputs, depth)) * 0.2
    return w, np.abs(w).max(axis=1) / 127, gram


def test_uncorrelated_inputs_give_the_nearest_rounding() -> None:
    """With H diagonal no other weight meets the same input: nothing to offset, so the
    result is exactly the nearest rounding (round half away from zero, clipped)."""
    w, s, _ = _problem(8, 20)
    gram = np.diag(np.linspace(0.5, 3.0, 20))[None]
    q = gptq_rounding(w, s, 1, (-127, 127), gram)
    np.testing.assert_array_equal(q, _nearest(w, s[:, None]))


@pytest.mark.parametrize("groups", [1, 4])
def test_error_feedback_lowers_the_output_error(groups: int) -> None:
    """On correlated inputs the output error is well below the nearest rounding's, the
    weights stay integers on the grid, and each group is solved on its own Gram matrix."""
    w, s, gram = _problem(6, 30, groups)
    q = gptq_rounding(w, s, groups, (-127, 127), gram)
    assert q.dtype == np.int64 and q.min() >= -127 and q.max() <= 127
    near = _nearest(w, s[:, None])
    shape = (groups, 6, 30)
    sq = s.reshape(groups, 6, 1)
    got = output_error(q.reshape(shape) * sq, w.reshape(shape), gram)
    base = output_error(near.reshape(shape) * sq, w.reshape(shape), gram)
    assert got < 0.7 * base
    for g in range(groups):
        alone = gptq_rounding(w[g * 6:(g + 1) * 6], s[g * 6:(g + 1) * 6], 1, (-127, 127),
                              gram[g:g + 1])
        np.testing.assert_array_equal(q[g * 6:(g + 1) * 6], alone)


def test_lazy_blocks_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The block-wise update of the remaining columns is the column-by-column one."""
    w, s, gram = _problem(5, 70)
    monkeypatch.setattr(gptq, "BLOCK", 16)
    blocked = gptq_rounding(w, s, 1, (-127, 127), gram)
    monkeypatch.setattr(gptq, "BLOCK", 1000)
    np.testing.assert_array_equal(blocked, gptq_rounding(w, s, 1, (-127, 127), gram))


def test_dead_inputs_and_a_worse_result_fall_back() -> None:
    """An input that never varied (zero row and column of H) gets no error and sends none;
    when the result would be worse than nearest (a Gram matrix that says nothing), nearest
    is kept."""
    w, s, gram = _problem(4, 12)
    gram[:, 3, :] = 0.0
    gram[:, :, 3] = 0.0
    q = gptq_rounding(w, s, 1, (-127, 127), gram)
    assert np.isfinite(q).all()
    np.testing.assert_array_equal(q[:, 3], _nearest(w, s[:, None])[:, 3])
    zero = gptq_rounding(w, s, 1, (-127, 127), np.zeros((1, 12, 12)))
    np.testing.assert_array_equal(zero, _nearest(w, s[:, None]))


def test_default_quantize_rounds_with_error_feedback() -> None:
    """With no options an 8-bit per-channel target gets GPTQ weights: some differ from the
    nearest rounding, the output on data it was not calibrated on is closer to float, and
    the graph runs on the integer pipeline."""
    model = small_cnn()
    calib, test = images(96), images(128, seed=9)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    outs, weights = {}, {}
    for name, config in (("nearest", QuantConfig(rounding="nearest")), ("default", None)):
        npu = ortnpu.quantize(model, "tflite-int8", calib, config=config)
        weights[name] = {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer
                         if i.name.endswith("_w")}
        outs[name] = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    assert weights["nearest"].keys() == weights["default"].keys()
    changed = sum(int(np.count_nonzero(weights["default"][k] != weights["nearest"][k]))
                  for k in weights["nearest"])
    assert changed > 0
    err = {k: float(np.abs(v - ref).mean()) for k, v in outs.items()}
    assert err["default"] < err["nearest"]


def test_rounding_is_resolved_per_target() -> None:
    """``auto`` means GPTQ for per-channel weights the quantizer rounds, nearest for
    per-tensor weights (bias correction's case) and for imported weights; an unknown
    choice is refused with the choices named."""
    arith = load_target("tflite-int8").arithmetic
    assert QuantConfig().resolved(arith).rounding == "gptq"
    assert QuantConfig(per_channel=False).resolved(arith).rounding == "nearest"
    assert QuantConfig().resolved(arith, fixed_weights=True).rounding == "nearest"
    assert QuantConfig(adaround=True).resolved(arith).rounding == "adaround"
    n2d2 = load_target("n2d2-int8").arithmetic
    assert QuantConfig().resolved(n2d2).rounding == "nearest"
    with pytest.raises(UnsupportedError, match="nearest, gptq, adaround"):
        QuantConfig(rounding="up").resolved(arith)


def test_autofix_starts_from_the_default_quantization() -> None:
    """autofix reads the NPU inputs once and rounds every trial the same way, so its first
    score is the one of what ``quantize`` gives with the same options."""
    model = small_cnn()
    test = images(64, seed=4)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    _, report = ortnpu.autofix(model, "tflite-int8", images(128), test,
                               lambda out: -float(np.abs(out - ref).mean()), budget=1.0)
    direct = ortnpu.quantize(model, "tflite-int8", images(128))
    out = ortnpu.InferenceSession(direct).run(None, {"x": test})[0]
    assert report.initial_score == pytest.approx(-float(np.abs(out - ref).mean()))


def test_an_autofix_trial_keeps_gptq_integers_of_a_layer_whose_input_it_widens() -> None:
    """autofix reads the layers' int8 inputs once. A trial that moves a layer's input to
    int16 keeps that layer's GPTQ integers (the int8 inputs' Gram is the wider grid's, damped
    by the int8 noise): rounding it to nearest instead cost more than 16 bits gave back
    (MobileNetV2 with every layer in int16: 16.1 dB against quantize's own 28.1 dB)."""
    import dataclasses

    from ortnpu.quant.calibrate import calibrate
    from ortnpu.quant.quantizer import read_npu_inputs

    model, calib = ortnpu.optimize(small_cnn()), images(128)
    target = load_target("tflite-int8")
    config = QuantConfig().resolved(target.arithmetic)
    assert config.rounding == "gptq"
    ranges = read_npu_inputs(model, target, config, calibrate(
        model, calib, config.collector(None, target.arithmetic, ["probs"])), calib)

    def pwconv_weights(cfg: QuantConfig) -> np.ndarray:
        npu = ortnpu.quantize(model, target, config=cfg, calibrated=ranges, optimize=False)
        node = next(n for n in npu.graph.node if n.name == "pwconv")
        inits = {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer}
        return next(inits[i] for i in node.input if i in inits and inits[i].ndim == 4)

    base = pwconv_weights(config)
    nearest = pwconv_weights(dataclasses.replace(config, rounding="nearest"))
    assert np.count_nonzero(base != nearest)           # GPTQ moved some of pwconv's integers
    widened = pwconv_weights(dataclasses.replace(config, int16_tensors=frozenset({"r2"})))
    np.testing.assert_array_equal(widened, base)
