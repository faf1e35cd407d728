"""onnxruntime's own log stays off the console unless verbose; progress bars only on terminals."""

from __future__ import annotations

import io
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu import console
from ortnpu.errors import ModelError


def _bad_reshape() -> onnx.ModelProto:
    """A model that loads and fails at run time (onnxruntime logs an error line, then raises)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([3, 3], np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("verbose", [False, True])
def test_onnxruntime_log_only_when_verbose(verbose: bool, capfd: pytest.CaptureFixture) -> None:
    console.set_verbose(verbose)
    try:
        sess = ortnpu.InferenceSession(_bad_reshape())
        with pytest.raises(ModelError, match="Reshape"):
            sess.run(None, {"x": np.zeros((2, 4), np.float32)})
    finally:
        console.set_verbose(False)
    err = capfd.readouterr().err
    assert ("onnxruntime" in err) is verbose, err


def test_quiet_options_follow_the_verbosity() -> None:
    assert console.quiet_session_options().log_severity_level == 4
    console.set_verbose(True)
    try:
        assert console.quiet_session_options().log_severity_level == 2
    finally:
        console.set_verbose(False)


def test_progress_is_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(console.progress(range(3), desc="x")) == [0, 1, 2]
    assert list(console.progress(iter(range(2)), desc="x", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_steps_draw_bars_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare, autofix (calibration, float run, trials) and run show a bar on a terminal."""
    from graphs import InflatedRange, images, small_cnn

    from ortnpu.feeds import run_samples

    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    model = small_cnn(batch=1)
    npu = ortnpu.quantize(model, "tflite-int8", images(8))
    ortnpu.compare(model, npu, images(3))
    run_samples(ortnpu.InferenceSession(npu), {"x": images(3)})
    ortnpu.autofix(model, "tflite-int8", images(8), images(4, seed=5), "sqnr", goal=1e9,
                   max_steps=1, max_candidates=2, calibrator=InflatedRange("c3", 300.0))
    text = tty.getvalue()
    for bar in ("calibrating", "compare", "run", "float model",
                "autofix int16 group (bisection)"):
        assert f"{bar}:" in text, (bar, text)
    assert "trial" in text and "batch" in text
