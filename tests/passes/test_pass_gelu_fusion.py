"""FuseErfGelu: the five-node erf GELU becomes one Gelu; anything else is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortnpu.passes.gelu_fusion import FuseErfGelu


def _gelu_model(form: str, root2: float = float(np.sqrt(2.0)), extra_reader: bool = False
                ) -> onnx.ModelProto:
    n = helper.make_node
    c = {"r2": root2, "ir2": 1 / root2, "one": 1.0, "half": 0.5}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in c.items()]
    nodes = [n("Relu", ["x"], ["r"], name="relu")]
    if form == "div":      # torch's export: Div(x, √2) → Erf → Add 1 → Mul x → Mul 0.5
        nodes += [n("Div", ["r", "r2"], ["h"], name="act/Div"),
                  n("Erf", ["h"], ["e"], name="act/Erf"),
                  n("Add", ["e", "one"], ["e1"], name="act/Add"),
                  n("Mul", ["r", "e1"], ["g"], name="act/Mul"),
                  n("Mul", ["g", "half"], ["y"], name="act/Mul_1")]
    else:                  # Mul(x, 1/√2), halve x first, operands swapped
        nodes += [n("Mul", ["ir2", "r"], ["h"], name="scale"),
                  n("Erf", ["h"], ["e"], name="erf"),
                  n("Add", ["one", "e"], ["e1"], name="add"),
                  n("Mul", ["half", "r"], ["hx"], name="halve"),
                  n("Mul", ["e1", "hx"], ["y"], name="mul")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 16]))
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 16])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("form", ["div", "mul"])
def test_both_forms_fuse_into_one_gelu(form: str) -> None:
    model = _gelu_model(form)
    result = FuseErfGelu()(model)
    assert result.modified
    ops = [(n.op_type, n.domain) for n in result.model.graph.node]
    assert ops == [("Relu", ""), ("Gelu", "com.microsoft")]
    assert result.model.graph.node[-1].output[0] == "y"
    x = np.linspace(-4, 4, 32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_allclose(_run(result.model, x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_not_a_gelu_is_left_alone() -> None:
    assert not FuseErfGelu()(_gelu_model("div", root2=1.5)).modified


def test_an_intermediate_read_elsewhere_is_left_alone() -> None:
    assert not FuseErfGelu()(_gelu_model("div", extra_reader=True)).modified
