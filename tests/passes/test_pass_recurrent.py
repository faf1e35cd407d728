import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from passes_helpers import assert_one_exact_program, init, ops, run

import ortnpu
from ortnpu.passes.recurrent import UnrollGRU, UnrollLSTM

#: per op: gate count, state inputs (after X, W, R, B, sequence_lens), outputs
OPS = {"LSTM": (4, ("h0", "c0"), ("Y", "Y_h", "Y_c")), "GRU": (3, ("h0",), ("Y", "Y_h"))}


def _recurrent_model(op: str = "LSTM", direction: str = "forward", steps: int | str = 5,
                     batch: int | str = 2, cin: int = 3, hidden: int = 4, layout: int = 0,
                     states: bool = True, bias: bool = True,
                     outputs: tuple[str, ...] = ("Y", "Y_h", "Y_c"), seed: int = 0,
                     **attrs: object) -> onnx.ModelProto:
    """One LSTM or GRU node named ``rnn`` over input ``x``, random weights."""
    gates, state_names, all_outputs = OPS[op]
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    inputs = {"x": [steps, batch, cin] if layout == 0 else [batch, steps, cin]}
    node_inputs = ["x", "W", "R", "B" if bias else ""]
    inits = [init("W", rng.normal(0, 0.5, (dirs, gates * hidden, cin))),
             init("R", rng.normal(0, 0.5, (dirs, gates * hidden, hidden)))]
    if bias:
        inits.append(init("B", rng.normal(0, 0.5, (dirs, 2 * gates * hidden))))
    if states:
        shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
        inputs.update({name: shape for name in state_names})
        node_inputs += ["", *state_names]
    outs = [o if o in outputs else "" for o in all_outputs]
    while outs and not outs[-1]:
        outs.pop()
    node = helper.make_node(op, node_inputs, outs, name="rnn", hidden_size=hidden,
                            direction=direction, **({"layout": layout} if layout else {}),
                            **attrs)
    g = helper.make_graph(
        [node], op.lower(),
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs if o], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _lstm_model(*args: object, **kwargs: object) -> onnx.ModelProto:
    return _recurrent_model("LSTM", *args, **kwargs)


def _assert_same_outputs(m: onnx.ModelProto, unrolled: onnx.ModelProto, layout: int = 0
                         ) -> None:
    """The unrolled model's outputs equal the layer's on batches of 1 and 3 (onnxruntime runs
    no batch-first layer: onnx's reference evaluator does)."""
    for batch in (1, 3):
        feeds = _feeds(m, batch)
        wants = run(m, feeds) if layout == 0 else ReferenceEvaluator(m).run(None, feeds)
        for want, got in zip(wants, run(unrolled, feeds), strict=True):
            assert want.shape == got.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _feeds(m: onnx.ModelProto, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in m.graph.input:
        dims = [batch if (d.dim_param or not d.dim_value) else d.dim_value
                for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.normal(0, 1, dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("layout", "states", "bias"), [(0, True, True), (0, False, False),
                                                        (1, True, True)])
def test_lstm_unrolls_to_the_same_outputs(direction: str, layout: int, states: bool,
                                          bias: bool) -> None:
    m = _lstm_model(direction, layout=layout, states=states, bias=bias, batch="N")
    result = UnrollLSTM()(m)
    assert result.modified, result.changes
    assert "LSTM" not in ops(result.model)
    assert not {"W", "R", "B"} & {t.name for t in result.model.graph.initializer}
    _assert_same_outputs(m, result.model, layout)


@pytest.mark.parametrize("outputs", [("Y",), ("Y_h",), ("Y", "Y_c"), ("Y_c",)])
def test_only_the_outputs_read_are_built(outputs: tuple[str, ...]) -> None:
    m = _lstm_model("bidirectional", steps=1, outputs=outputs)
    result = UnrollLSTM()(m)
    feeds = _feeds(m, 2)
    for want, got in zip(run(m, feeds), run(result.model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "limit"), [
    ({"clip": 3.0}, 64),
    ({"input_forget": 1}, 64),
    ({"activations": ["Sigmoid", "Tanh", "Relu"]}, 64),
    ({}, 4),                                          # more steps than unrolled
])
def test_other_lstms_are_kept(kwargs: dict, limit: int) -> None:
    m = _lstm_model(**kwargs)
    assert not UnrollLSTM(max_steps=limit)(m).modified


def test_lstm_with_sequence_lengths_or_free_steps_is_kept() -> None:
    m = _lstm_model()
    m.graph.node[0].input[4] = "lens"
    m.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [2]))
    assert not UnrollLSTM()(m).modified
    free = _lstm_model(steps="T")
    assert not UnrollLSTM()(free).modified


def _recurrent_classifier(op: str = "LSTM", direction: str = "bidirectional",
                          **attrs: object) -> onnx.ModelProto:
    """A sequence classifier as torch exports one with ``batch_first``: ``[batch, steps,
    features]`` transposed to time first, an LSTM or GRU over 6 steps, its last states to a
    Gemm. The recurrent layer was a float CPU node between two NPU parts."""
    m = _recurrent_model(op, direction, steps=6, batch=1, cin=8, hidden=8, states=False,
                         outputs=("Y_h",), seed=3, **attrs)
    width = 16 if direction == "bidirectional" else 8
    rng = np.random.default_rng(4)
    g = m.graph
    g.node[0].input[0] = "x_time_first"
    g.node.insert(0, helper.make_node("Transpose", ["x"], ["x_time_first"], name="time_first",
                                      perm=[1, 0, 2]))
    g.node.extend([
        helper.make_node("Transpose", ["Y_h"], ["h_batch_first"], name="batch_first",
                         perm=[1, 0, 2]),
        helper.make_node("Reshape", ["h_batch_first", "flat"], ["hf"], name="flatten"),
        helper.make_node("Gemm", ["hf", "Wc", "bc"], ["y"], name="head", transB=1)])
    g.initializer.extend([init("flat", np.array([-1, width], np.int64)),
                          init("Wc", rng.normal(0, 0.5, (5, width))),
                          init("bc", rng.normal(0, 0.5, 5))])
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]))
    return m


def _assert_one_npu_program(m: onnx.ModelProto, rewrite: str) -> None:
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    assert any(f"{rewrite} (1" in n for n in report.estimate.notes), report.estimate.notes
    calib = np.random.default_rng(0).normal(0, 1, (16, 6, 8)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    assert_one_exact_program(m, npu, calib[:1], closeness=0.1)


def test_lstm_runs_on_the_npu_exactly() -> None:
    _assert_one_npu_program(_recurrent_classifier(), "UnrollLSTM")


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_initial_states(value: float) -> None:
    """torch exports absent states as constant zeros (an Expand of 0, folded): those are
    unrolled as if absent (no Gather of constant data left for the CPU); any other constant
    state keeps the LSTM whole."""
    m = _lstm_model("bidirectional", batch=2, states=False)
    zeros = init("h0", np.full((2, 2, 4), value, np.float32))
    m.graph.initializer.extend([zeros, init("c0", np.full((2, 2, 4), value, np.float32))])
    m.graph.node[0].input.extend(["", "h0", "c0"])
    result = UnrollLSTM()(m)
    assert result.modified == (value == 0.0)
    if result.modified:
        assert "Gather" in ops(result.model)   # the steps' inputs only
        assert not [n for n in result.model.graph.node
                    if n.op_type == "Gather" and n.input[0] in ("h0", "c0")]
        feeds = _feeds(m, 2)
        for want, got in zip(run(m, feeds), run(result.model, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("selector", ["rnn", "LSTM"])
def test_force_cpu_keeps_the_lstm_whole(selector: str) -> None:
    """A user who keeps the LSTM in float (its int8 cell state costs accuracy) names the
    LSTM node or op type: evaluate and quantize leave it whole on the CPU, the rest on the
    NPU, and agree."""
    m = _recurrent_classifier()
    report = ortnpu.evaluate(m, "tflite-int8", force_cpu=[selector])
    assert report.plan.cpu_nodes == ["rnn"], report.plan.cpu_nodes
    assert "forced to the CPU by the user" in report.plan.reasons["rnn"]
    calib = np.random.default_rng(0).normal(0, 1, (16, 6, 8)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib, force_cpu=[selector])
    assert [n.name for n in npu.graph.node if n.op_type == "LSTM"] == ["rnn"]
    x = calib[:1]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(ortnpu.InferenceSession(npu).run(None, {"x": x})[0], ref)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize(("layout", "states", "bias"), [(0, True, True), (0, False, True),
                                                        (0, False, False), (1, True, True)])
def test_gru_unrolls_to_the_same_outputs(direction: str, linear_before_reset: int, layout: int,
                                         states: bool, bias: bool) -> None:
    m = _recurrent_model("GRU", direction, layout=layout, states=states, bias=bias, batch="N",
                         outputs=("Y", "Y_h"), linear_before_reset=linear_before_reset)
    result = UnrollGRU()(m)
    assert result.modified, result.changes
    assert "GRU" not in ops(result.model)
    _assert_same_outputs(m, result.model, layout)


def test_gru_runs_on_the_npu_exactly() -> None:
    _assert_one_npu_program(_recurrent_classifier("GRU", "forward", linear_before_reset=1),
                            "UnrollGRU")
