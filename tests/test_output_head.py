"""A model-output Concat that joins bounded scores with boxes stays on the CPU in float.

The zoo's YOLO-style head writes boxes (pixels) and Sigmoid class scores into one output Concat:
lowered with one 8-bit scale, the scores were crushed to zero (class-score cosine 0.00 on
tflite-int8 and n2d2-int8). Placement (``ortnpu.placement.output_head_problem``) keeps such a
Concat on the CPU on 8-bit targets, evaluate and quantize alike, with its reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import checked_model
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.placement import place
from ortnpu.quant.quantizer import QuantConfig, QuantizationResult

RNG = np.random.default_rng(11)


def head(score_op: str = "Sigmoid", box_scale: float = 640.0) -> onnx.ModelProto:
    """Conv features → boxes (scaled to pixels) and scores (``score_op``) → one output Concat."""
    w = (RNG.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32)
    wc = (RNG.standard_normal((3, 3, 3, 3)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wb"], ["box_raw"], name="box_conv", pads=[1] * 4),
        helper.make_node("Sigmoid", ["box_raw"], ["box_unit"], name="box_sigmoid"),
        helper.make_node("Mul", ["box_unit", "scale"], ["boxes"], name="to_pixels"),
        helper.make_node("Conv", ["x", "wc"], ["cls_raw"], name="cls_conv", pads=[1] * 4),
        helper.make_node(score_op, ["cls_raw"], ["scores"], name="scores_op",
                         **({"axis": 1} if score_op == "Softmax" else {})),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], name="head_concat", axis=1),
    ]
    g = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 8, 8])],
        [numpy_helper.from_array(w, "wb"), numpy_helper.from_array(wc, "wc"),
         numpy_helper.from_array(np.array(box_scale, np.float32), "scale")])
    return checked_model(g)


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _score_cosine(model: onnx.ModelProto, npu: onnx.ModelProto) -> float:
    """Minimum cosine, over samples, of the score channels of the output, float vs NPU."""
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = ortnpu.InferenceSession(npu)
    worst = 1.0
    for feed in _samples(4, 99):
        a = ref.run(["y"], feed)[0][:, 4:].ravel().astype(np.float64)
        b = sess.run(["y"], feed)[0][:, 4:].ravel().astype(np.float64)
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
    return worst


@pytest.mark.parametrize("target", ["tflite-int8", "n2d2-int8"])
@pytest.mark.parametrize("score_op", ["Sigmoid", "Softmax"])
def test_output_head_stays_in_float_on_8_bit_targets(target: str, score_op: str) -> None:
    model = head(score_op)
    plan = place(model, target)
    assert plan.placement["head_concat"] == "CPU"
    reason = plan.reasons["head_concat"]
    assert reason.startswith("Concat 'head_concat': output head kept in float: it joins "
                             f"'scores' ({score_op}, in [0, 1]) with 'boxes'"), reason
    assert "model output 'y'" in reason
    report = ortnpu.evaluate(model, target)
    res = QuantizationResult()
    npu = ortnpu.quantize(model, target, _samples(8, 1), optimize=False, result=res)
    quantized = {p.node: p.reason for p in res.placements if p.device == "CPU"}
    assert {n: report.plan.reasons[n] for n in report.plan.cpu_nodes} == quantized
    assert quantized["head_concat"] == reason
    assert _score_cosine(model, npu) >= 0.99


def test_lowered_head_crushes_the_scores() -> None:
    """Why the rule exists: force_npu lowers the Concat, and one 8-bit scale ruins the scores."""
    model = head()
    assert place(model, "tflite-int8", force_npu=["head_concat"]).placement["head_concat"] \
        == "NPU"
    res = QuantizationResult()
    forced = ortnpu.quantize(model, "tflite-int8", _samples(8, 1), optimize=False, result=res,
                             config=QuantConfig(force_npu=frozenset({"head_concat"})))
    assert {p.node: p.device for p in res.placements}["head_concat"] == "NPU"
    npu = ortnpu.quantize(model, "tflite-int8", _samples(8, 1), optimize=False)
    assert _score_cosine(model, forced) < 0.9 < 0.99 <= _score_cosine(model, npu)


def test_16_bit_targets_and_plain_concats_keep_it_on_the_npu() -> None:
    assert place(head(), "tflite-a16w8").placement["head_concat"] == "NPU"
    # scores of the same kind on both inputs: nothing to protect
    model = head()
    for node in model.graph.node:
        if node.name == "to_pixels":
            node.op_type, node.input[:] = "Sigmoid", ["box_unit"]
            del node.input[1:]
    model.graph.ClearField("initializer")
    model.graph.initializer.extend([i for i in head().graph.initializer if i.name != "scale"])
    assert place(model, "tflite-int8").placement["head_concat"] == "NPU"


def test_cli_reports_the_head_and_force_npu_lowers_it(tmp_path, capsys) -> None:
    """`ortnpu quantize` lists the head with its reason; `--force-npu` lowers it; a name that
    is no node is refused (exit 2)."""
    import json

    from ortnpu.cli import main
    from ortnpu.quant.quantizer import META_PLACEMENT

    src, calib = tmp_path / "head.onnx", tmp_path / "calib.npz"
    onnx.save(head(), str(src))
    np.savez(calib, x=np.concatenate([s["x"] for s in _samples(8, 1)]))

    def device(path) -> str:
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return {p["node"]: p["device"] for p in json.loads(meta[META_PLACEMENT])}["head_concat"]

    out = tmp_path / "npu.onnx"
    assert main(["quantize", str(src), "--calib", str(calib), "-o", str(out)]) == 0
    assert "output head kept in float" in capsys.readouterr().out
    assert device(out) == "CPU"
    forced = tmp_path / "forced.onnx"
    assert main(["quantize", str(src), "--calib", str(calib), "-o", str(forced),
                 "--force-npu", "head_concat"]) == 0
    assert device(forced) == "NPU"
    assert main(["quantize", str(src), "--calib", str(calib), "-o", str(forced),
                 "--force-npu", "head_concatt"]) == 2
    assert "--force-npu 'head_concatt' is not a node name" in capsys.readouterr().err
