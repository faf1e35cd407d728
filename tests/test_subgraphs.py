"""Models with If subgraphs: calibration, quantization and the passes keep every outer tensor a
body reads (issue 13: dangling tensors after quantization)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import if_model
from onnx import TensorProto, helper

import ortnpu
from ortnpu.passes.graph import implicit_inputs, rename_input
from ortnpu.quant import QuantizationResult
from ortnpu.validate import check_model


def _calib(n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.random((1, 3, 6, 6)).astype(np.float32), "flag": np.array(k % 2 == 0)}
            for k in range(n)]


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_if_bodies_reading_quantized_tensors_keep_them(target: str) -> None:
    model = if_model()
    res = QuantizationResult()
    npu = ortnpu.quantize(model, target, _calib(), result=res)
    check_model(npu, "npu")   # raised: subgraph 'else' reads 'r', which nothing provides
    onnx.checker.check_model(npu, full_check=True)
    branch = next(n for n in npu.graph.node if n.op_type == "If")
    produced = {o for n in npu.graph.node for o in n.output} | \
        {t.name for t in npu.graph.initializer}
    assert set(implicit_inputs(branch)) == {"c", "k", "r"} <= produced
    assert {p.node: p.device for p in res.placements}["conv"] == "NPU"
    for flag in (True, False):
        feed = {"x": _calib()[0]["x"], "flag": np.array(flag)}
        ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, feed)[0]
        assert np.array_equal(ortnpu.InferenceSession(npu).run(None, feed)[0], ref)
        plain = ort.InferenceSession(npu.SerializeToString(), ortnpu.session_options(),
                                     providers=["CPUExecutionProvider"])
        assert np.array_equal(plain.run(None, feed)[0], ref)
        fl = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, feed)[0]
        assert np.abs(ref - fl).max() < 0.05


def test_body_returning_an_outer_tensor_counts_as_a_read() -> None:
    body = helper.make_graph([], "pass_through", [],
                             [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["n"])], "neg", [],
                              [helper.make_tensor_value_info("n", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["flag"], ["b"], then_branch=body, else_branch=other)
    assert implicit_inputs(node) == ["r"]
    graph = helper.make_graph([node], "g", [], [])
    rename_input(graph, "r", "r2")
    assert implicit_inputs(graph.node[0]) == ["r2"]


def test_rename_leaves_a_body_that_shadows_the_name() -> None:
    shadow = helper.make_graph([helper.make_node("Neg", ["flag2"], ["r"]),
                                helper.make_node("Neg", ["r"], ["b"])], "shadow", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    reads = helper.make_graph([helper.make_node("Neg", ["r"], ["b"])], "reads", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    graph = helper.make_graph([helper.make_node("If", ["flag"], ["b"], then_branch=shadow,
                                                else_branch=reads)], "g", [], [])
    rename_input(graph, "r", "r2")
    bodies = {a.name: a.g for a in graph.node[0].attribute}
    then_g, else_g = bodies["then_branch"], bodies["else_branch"]
    assert list(then_g.node[1].input) == ["r"] and list(else_g.node[0].input) == ["r2"]


def test_integer_export_keeps_initializers_only_a_body_reads() -> None:
    """``k`` is read only inside the then-branch: the export dropped it (dangling tensor)."""
    npu = ortnpu.quantize(if_model(), "tflite-int8", _calib())
    exported = ortnpu.export(npu, "integer")
    assert "k" in {t.name for t in exported.graph.initializer}
    for flag in (True, False):
        feed = {"x": _calib()[0]["x"], "flag": np.array(flag)}
        ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, feed)[0]
        got = ort.InferenceSession(exported.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, feed)[0]
        assert np.array_equal(got, ref)


def test_fused_session_keeps_initializers_only_a_body_reads() -> None:
    """Bodies read ``s = sigmoid(relu(conv(x)))``, ``r`` and ``k``: conv and sigmoid fuse into
    one program, and the fused graph kept the initializers its nodes read explicitly, dropping
    ``k`` (the session failed to load)."""
    model = if_model()
    model.graph.node.insert(2, helper.make_node("Sigmoid", ["r"], ["s"], name="gate"))
    branch = next(n for n in model.graph.node if n.op_type == "If")
    for a in branch.attribute:
        for n in a.g.node:
            for i, x in enumerate(n.input):
                if x in ("c", "r"):
                    n.input[i] = "s"
    npu = ortnpu.quantize(model, "tflite-int8", _calib())
    sess = ortnpu.InferenceSession(npu)
    assert sess.compile_reports   # a fused program exists
    for flag in (True, False):
        feed = {"x": _calib()[0]["x"], "flag": np.array(flag)}
        ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, feed)[0]
        assert np.array_equal(sess.run(None, feed)[0], ref)
