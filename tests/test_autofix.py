"""Autofix finds a deliberately broken layer and recovers the accuracy."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from graphs import InflatedRange, images, small_cnn

import ortnpu
from ortnpu.quant.autofix import top1


def test_autofix_moves_the_broken_layer_to_int16_and_recovers() -> None:
    model = small_cnn()
    test = images(200, seed=5)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]

    def metric(out: np.ndarray) -> float:
        return -float(np.abs(out - ref).mean())

    npu, report = ortnpu.autofix(model, "tflite-int8", images(64), test, metric, budget=0.001,
                                 calibrator=InflatedRange("c3", 300.0))
    assert report.float_score - report.initial_score > 0.002          # the bad scale hurts
    assert report.steps and report.steps[0].layer == "pwconv"
    assert report.steps[0].action == "int16"
    assert report.within_budget
    out = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    assert metric(out) == pytest.approx(report.final_score)
    assert "pwconv" in str(report)
    assert any(n.op_type == "Conv_i16" and n.name == "pwconv" for n in npu.graph.node)


def test_top1_metric() -> None:
    assert top1(np.array([1, 0]))(np.array([[0.1, 0.9], [0.2, 0.8]])) == 0.5
