"""Tied weights (an unrolled RNN reads one matrix at every time step) stay one tensor."""

from __future__ import annotations

import numpy as np
from graphs import tied_rnn
from onnx import numpy_helper

import ortnpu


def _big_initializers(model) -> list:
    return [t for t in model.graph.initializer if numpy_helper.to_array(t).size >= 16]


def test_optimize_keeps_tied_weights_shared() -> None:
    model = tied_rnn(steps=5)
    optimized = ortnpu.optimize(model)
    weights = [t.name for t in _big_initializers(optimized)]
    assert sorted(weights) == ["w_hh", "w_ih"], weights
    gemms = [n for n in optimized.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 9 and {n.input[1] for n in gemms} == {"w_ih", "w_hh"}
    assert optimized.ByteSize() < 2 * model.ByteSize()


def test_quantize_stores_identical_integer_weights_once() -> None:
    model = tied_rnn(steps=5)
    rng = np.random.default_rng(3)
    calib = [{"x": rng.standard_normal((1, 5, 8)).astype(np.float32)} for _ in range(8)]
    npu = ortnpu.quantize(model, "tflite-int8", calib, per_channel=False)
    int8_weights = [t for t in _big_initializers(npu) if t.data_type == 3 and
                    list(t.dims) == [8, 8]]
    assert len(int8_weights) == 2, [t.name for t in int8_weights]
    x = calib[0]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, x)[0]
    assert np.array_equal(ortnpu.InferenceSession(npu).run(None, x)[0], ref)
