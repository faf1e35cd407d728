"""Builders of small graphs and an output comparison shared by the pass tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(1234)


def init(name: str, value: np.ndarray | Sequence) -> onnx.TensorProto:
    """An initializer (float arrays are stored as float32)."""
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return numpy_helper.from_array(arr, name)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(nodes: list[onnx.NodeProto], inputs: dict[str, list], outputs: dict[str, list | None],
          inits: Sequence[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    """A model with float inputs/outputs of the given shapes (None = unknown shape)."""
    g = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def random_feeds(m: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in m.graph.initializer}
    feeds = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def assert_same(a: onnx.ModelProto, b: onnx.ModelProto, tol: float = 1e-5) -> None:
    """``a`` and ``b`` give the same outputs (names and values) on random inputs."""
    onnx.checker.check_model(b)
    feeds = random_feeds(a)
    assert [o.name for o in a.graph.output] == [o.name for o in b.graph.output]
    for x, y in zip(run(a, feeds), run(b, feeds), strict=True):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=tol, rtol=tol)


def ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


def assert_one_exact_program(float_model: onnx.ModelProto, npu: onnx.ModelProto,
                             x: np.ndarray, closeness: float = 0.05) -> None:
    """``npu`` runs as one compiled program whose output on ``x`` equals the numpy
    reference's bit for bit and lies within ``closeness`` of the float model's range."""
    import ortnpu

    sess = ortnpu.InferenceSession(npu)
    assert [r.native for r in sess.compile_reports] == [True]
    got = sess.run(None, {"x": x})[0]
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    ref = run(float_model, {"x": x})[0]
    assert np.abs(got - ref).max() <= closeness * np.abs(ref).max()
