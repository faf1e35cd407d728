"""FreezeInputs and FoldConstantIf: a frozen input folds away the If that depends on it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import if_model, vad_with_if
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.passes import FoldConstantIf, FreezeInputs
from ortnpu.passes.freeze_inputs import parse_freeze


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize(("rate", "kept"), [(16000, "halve"), (8000, "triple")])
def test_frozen_sample_rate_keeps_only_the_branch_taken(rate: int, kept: str) -> None:
    model = vad_with_if()
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((3, 16)).astype(np.float32),
            "h": rng.standard_normal((2, 3, 4)).astype(np.float32)}
    optimized, result = ortnpu.optimize(model, freeze={"sr": rate}, return_results=True)
    assert [i.name for i in optimized.graph.input] == ["x", "h"]
    ops = [n.op_type for n in optimized.graph.node]
    assert "If" not in ops and "Equal" not in ops
    assert any(n.name == f"by_rate/{kept}" for n in optimized.graph.node)
    assert any("folded If 'by_rate' on constant condition" in c for c in result.changes)
    want = _run(model, {**feed, "sr": np.array(rate, np.int64)})
    assert np.array_equal(_run(optimized, feed), want)


def test_inlined_names_never_clash_with_outer_ones() -> None:
    """The then-branch defines ``t0`` and returns ``b``; the outer graph already uses both
    names (and a nested body reads the branch's ``t0``): the inlined copies get new names."""
    model = if_model()
    g = model.graph
    g.node.append(helper.make_node("Neg", ["y"], ["t0"], name="outer_t0"))
    g.output.append(helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4, 6, 6]))
    then_g = next(a.g for a in g.node[2].attribute if a.name == "then_branch")
    inner = helper.make_graph([helper.make_node("Abs", ["t0"], ["ab"])], "inner", [],
                              [helper.make_tensor_value_info("ab", TensorProto.FLOAT, None)])
    then_g.node.insert(1, helper.make_node("If", ["flag"], ["t1"], name="nested",
                                           then_branch=inner, else_branch=inner))
    then_g.node[2].input[0] = "t1"
    frozen = FreezeInputs({"flag": True})(model).model
    folded = FoldConstantIf()(frozen).model
    onnx.checker.check_model(folded, full_check=True)
    outputs = [o for n in folded.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    x = np.random.default_rng(1).random((1, 3, 6, 6)).astype(np.float32)
    want = _run(model, {"x": x, "flag": np.array(True)})
    assert np.array_equal(_run(folded, {"x": x}), want)


def test_freeze_errors_name_the_input() -> None:
    model = vad_with_if()
    with pytest.raises(ortnpu.ModelError, match="'rate', which is not a model input"):
        ortnpu.optimize(model, freeze={"rate": 16000})
    with pytest.raises(ortnpu.ModelError, match="'sr' is INT64; got non-integer"):
        ortnpu.optimize(model, freeze={"sr": 16000.5})
    with pytest.raises(ortnpu.ModelError, match=r"--freeze h: the input has shape"):
        ortnpu.optimize(model, freeze={"h": np.zeros(5, np.float32)})
    assert parse_freeze(["sr=16000"])["sr"].dtype == np.int64
    assert parse_freeze(["m=1,0.5"])["m"].tolist() == [1.0, 0.5]
    with pytest.raises(ortnpu.ModelError, match="expected NAME=VALUE"):
        parse_freeze(["sr"])


def test_if_on_a_non_constant_condition_stays() -> None:
    model = if_model()
    assert not FoldConstantIf()(model).modified
    cond = numpy_helper.from_array(np.array([True, False]), "two")
    model.graph.initializer.append(cond)
    model.graph.node[2].input[0] = "two"
    assert not FoldConstantIf()(model).modified   # not a single value: onnxruntime refuses it


def _nested_shape_ifs(depth: int) -> onnx.ModelProto:
    """``depth`` Ifs, each in the then-branch of the one before, each on ``shape(x)[0] == 1``
    (as Silero VAD picks a layout by batch size): every level needs shape inference and
    constant folding before its If can fold, one cleanup round per level."""

    def level(k: int) -> list[onnx.NodeProto]:
        p = f"l{k}_"
        if k == depth:
            return [helper.make_node("Relu", ["x"], [f"{p}y"], name=f"{p}relu")]
        then = helper.make_graph(level(k + 1), f"{p}then", [], [
            helper.make_tensor_value_info(f"l{k + 1}_y", TensorProto.FLOAT, None)])
        other = helper.make_graph(
            [helper.make_node("Neg", ["x"], [f"{p}neg"], name=f"{p}neg")], f"{p}else", [],
            [helper.make_tensor_value_info(f"{p}neg", TensorProto.FLOAT, None)])
        return [
            helper.make_node("Constant", [], [f"{p}zero"], name=f"{p}c0",
                             value=numpy_helper.from_array(np.array(0, np.int64))),
            helper.make_node("Constant", [], [f"{p}one"], name=f"{p}c1",
                             value=numpy_helper.from_array(np.array(1, np.int64))),
            helper.make_node("Shape", ["x"], [f"{p}shape"], name=f"{p}shape"),
            helper.make_node("Gather", [f"{p}shape", f"{p}zero"], [f"{p}batch"],
                             name=f"{p}gather"),
            helper.make_node("Equal", [f"{p}batch", f"{p}one"], [f"{p}cond"], name=f"{p}eq"),
            helper.make_node("If", [f"{p}cond"], [f"{p}y"], name=f"{p}if", then_branch=then,
                             else_branch=other)]

    graph = helper.make_graph(level(0), "nested", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("l0_y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_deeply_nested_constant_ifs_all_fold() -> None:
    """Silero VAD kept its last If after optimize: the cleanup rounds stopped at 4 while each
    nesting level needs one (finding silero-fixed-shapes); they now repeat until nothing
    changes."""
    model = _nested_shape_ifs(7)
    optimized = ortnpu.optimize(model, input_shapes={"x": [1, 4]})
    assert [n.op_type for n in optimized.graph.node] == ["Relu"]
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    assert np.array_equal(_run(optimized, {"x": x}), _run(model, {"x": x}))
