"""A Softmax over long rows stays on the CPU on int16 targets: the exp table's floor.

TFLite's int16 SOFTMAX reads every value 10 or more below the row maximum as 2/32767. Over the
6625 classes of PP-OCRv4's recognizer those floors took 29 % of a confident row, the largest
single loss of the model on tflite-a16w8. Placement (``ortnpu.placement.wide_softmax_problem``)
keeps such a Softmax in float, evaluate and quantize alike; ``force_npu`` lowers it anyway.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import checked_model
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain.ops_softmax import int16_floor_share, softmax_int16, softmax_params
from ortnpu.placement import SOFTMAX_FLOOR_SHARE, place
from ortnpu.quant.quantizer import QuantConfig, QuantizationResult


def classifier(classes: int) -> onnx.ModelProto:
    """MatMul logits over ``classes`` → Softmax: a recognizer's output head in small."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((16, classes)) * 2.0).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["p"], name="probs", axis=-1)]
    g = helper.make_graph(
        nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4, classes])],
        [numpy_helper.from_array(w, "w")])
    return checked_model(g)


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((1, 4, 16)) * 2).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("depth", [2, 100, 1000, 6625])
def test_floor_share_is_what_the_kernel_loses(depth: int) -> None:
    """The share the rule computes is the top probability the reference kernel gives up on a
    one-hot row (within the output's rounding)."""
    scale = 0.002
    q = np.zeros((1, depth), np.int64)
    q[0, 0] = round(30.0 / scale)
    p = softmax_params(scale, np.dtype(np.int16))
    assert isinstance(p, dict)
    y = softmax_int16(q - q.max(-1, keepdims=True), p["multiplier"], p["shift"])
    assert abs(y[0, 0] / 32768 - (1 - int16_floor_share(depth))) <= 2 / 32768


def test_wide_softmax_stays_in_float_on_int16_targets() -> None:
    model = classifier(6625)
    plan = place(model, "tflite-a16w8")
    assert plan.placement["probs"] == "CPU"
    reason = plan.reasons["probs"]
    assert reason.startswith("Softmax 'probs': a Softmax over rows of 6625 values kept in "
                             "float: the int16 SOFTMAX reads"), reason
    assert "29% of the sum and the top probability reads 0.71" in reason
    report = ortnpu.evaluate(model, "tflite-a16w8")
    res = QuantizationResult()
    npu = ortnpu.quantize(model, "tflite-a16w8", _samples(4, 1), optimize=False, result=res)
    quantized = {p.node: p.reason for p in res.placements if p.device == "CPU"}
    assert {n: report.plan.reasons[n] for n in report.plan.cpu_nodes} == quantized
    assert quantized["probs"] == reason
    # why: lowered, the confident rows lose their top probability; in float they keep it
    forced = ortnpu.quantize(model, "tflite-a16w8", _samples(4, 1), optimize=False,
                             config=QuantConfig(force_npu=frozenset({"probs"})))
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = _samples(1, 9)[0]
    want = ref.run(["p"], feed)[0]
    kept = ortnpu.InferenceSession(npu).run(["p"], feed)[0]
    lowered = ortnpu.InferenceSession(forced).run(["p"], feed)[0]
    assert np.abs(kept - want).max() < 0.05 < np.abs(lowered - want).max()


def test_short_rows_and_8_bit_targets_are_not_touched() -> None:
    depth = 165
    assert int16_floor_share(depth) <= SOFTMAX_FLOOR_SHARE < int16_floor_share(depth + 2)
    assert place(classifier(100), "tflite-a16w8").placement["probs"] == "NPU"
    # 8-bit SOFTMAX counts far values as 0; its own 511-value limit decides there
    assert place(classifier(300), "tflite-int8").placement["probs"] == "NPU"
    assert "SOFTMAX is defined for at most 511" in place(classifier(6625),
                                                         "tflite-int8").reasons["probs"]
    assert place(classifier(6625), "tflite-a16w8",
                 force_npu=["probs"]).placement["probs"] == "NPU"


def test_an_imported_qdq_model_runs_its_own_wide_softmax_on_the_npu() -> None:
    """A QDQ model that quantized its Softmax runs it as it says (the NPU's floor included):
    the rule is a choice ``quantize`` makes for float models, not for imported ones."""
    from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime

    qdq = quantize_with_onnxruntime(classifier(6625), _samples(4, 1), activation_type="QInt16")
    res = QuantizationResult()
    ortnpu.import_qdq(qdq, "tflite-a16w8", result=res)
    assert {p.node: p.device for p in res.placements}["probs"] == "NPU"
