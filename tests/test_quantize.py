"""The first quantizer: small graphs on every preset, placements, metadata, exactness."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import DOMAIN
from ortnpu.quant import QuantizationResult
from ortnpu.runtime.reference import run_reference


def float_run(model, x):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(("target", "tolerance"), [
    ("tflite-int8", 0.02), ("tflite-a16w8", 0.005), ("n2d2-int8", 0.05), ("tosa-int8", 0.02),
    ("tosa-int16", 0.005)])
def test_small_cnn_on_every_preset(target: str, tolerance: float) -> None:
    model = small_cnn()
    calib, test = images(64, seed=1), images(32, seed=2)
    res = QuantizationResult()
    npu = ortnpu.quantize(model, target, calib, result=res, optimize=False)
    out = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    ref = float_run(model, test)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < tolerance
    placement = {p.node: p for p in res.placements}
    # TFLite's integer softmax on the tflite targets; n2d2's arithmetic has none
    on_cpu = {name for name, p in placement.items() if p.device == "CPU"}
    assert on_cpu == (set() if target.startswith("tflite") else {"softmax"})
    if on_cpu:
        assert "integer softmax is TFLite's" in placement["softmax"].reason
    assert placement["relu1"].fused_into == "conv1"
    assert placement["relu6"].fused_into == "dwconv"
    meta = {p.key: p.value for p in npu.metadata_props}
    assert meta["ortnpu.target"] == target
    assert ortnpu.target.parse_target(meta["ortnpu.target_toml"]).name == target
    tensors = json.loads(meta["ortnpu.tensors"])
    assert tensors["x"]["dtype"] in ("int8", "int16")
    # inputs and outputs keep the float model's names and types
    assert [i.name for i in npu.graph.input] == ["x"]
    assert [o.name for o in npu.graph.output] == ["probs"]


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8", "tosa-int8",
                                    "tosa-int16"])
def test_onnxruntime_equals_reference_evaluator_graph_wide(target: str) -> None:
    """Every integer tensor of the NPU graph, onnxruntime vs onnx's reference evaluator."""
    model = small_cnn()
    npu = ortnpu.quantize(model, target, images(16, seed=1), optimize=False)
    x = images(3, seed=7)
    int_tensors = [n.output[0] for n in npu.graph.node if n.domain == DOMAIN]
    probe = type(npu)()
    probe.CopyFrom(npu)
    from onnx import helper

    for t in int_tensors:
        probe.graph.output.append(helper.make_value_info(t, helper.make_empty_tensor_value_info(
            t).type))
    ours = ortnpu.InferenceSession(probe).run(int_tensors, {"x": x})
    ref = run_reference(npu, {"x": x}, int_tensors)
    for name, a, b in zip(int_tensors, ours, ref, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_n2d2_uses_unsigned_outputs_after_relu_and_shift_only_rescale() -> None:
    npu = ortnpu.quantize(small_cnn(), "n2d2-int8", images(16), optimize=False)
    convs = {n.name: n for n in npu.graph.node if n.domain == DOMAIN}
    assert convs["conv1"].op_type == "Conv_u8"          # ReLU output: unsigned
    inits = {i.name: i for i in npu.graph.initializer}
    from onnx import numpy_helper

    assert set(numpy_helper.to_array(inits["conv1_multiplier"]).tolist()) == {1}


def test_force_cpu_and_errors() -> None:
    res = QuantizationResult()
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(8),
                          force_cpu=["add1", "Sigmoid", "softmax"], optimize=False, result=res)
    placement = {p.node: p for p in res.placements}
    assert placement["add1"].device == "CPU" and "force_cpu" in placement["add1"].reason
    assert placement["sigmoid1"].device == "CPU"
    cpu_docs = [n.doc_string for n in npu.graph.node if n.name == "add1"]
    assert cpu_docs and cpu_docs[0].startswith("CPU: ")
    out = ortnpu.InferenceSession(npu).run(None, {"x": images(4)})[0]
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ortnpu.UnsupportedError, match=r"calibration data"):
        ortnpu.quantize(small_cnn(), "tflite-int8", None)
    with pytest.raises(ortnpu.CalibrationError, match="empty"):
        ortnpu.quantize(small_cnn(), "tflite-int8", np.zeros((0, 3, 12, 12), np.float32))
    with pytest.raises(ortnpu.CalibrationError, match="NaN"):
        ortnpu.quantize(small_cnn(), "tflite-int8", np.full((2, 3, 12, 12), np.nan, np.float32))
    with pytest.raises(ortnpu.ModelError, match="onnx.ModelProto"):
        ortnpu.quantize("model.onnx", "tflite-int8", images(2))


def test_bias_correction_removes_the_mean_error_of_per_tensor_weights() -> None:
    from ortnpu.quant import QuantConfig

    model = small_cnn()
    test = images(256, seed=4)
    ref = float_run(model, test)
    errors = {}
    for corrected in (False, True):
        npu = ortnpu.quantize(model, "tflite-int8", images(128), optimize=False,
                              config=QuantConfig(per_channel=False, bias_correction=corrected))
        out = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
        errors[corrected] = float(np.abs((out - ref).mean(axis=0)).mean())
    assert errors[True] < errors[False] / 4


def test_equalization_option_keeps_accuracy() -> None:
    from ortnpu.quant import QuantConfig

    model = small_cnn()
    test = images(64, seed=6)
    npu = ortnpu.quantize(model, "tflite-int8", images(64),
                          config=QuantConfig(per_channel=False, equalize=True))
    out = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    assert np.abs(out - float_run(model, test)).max() < 0.02


def test_config_collector_is_shared_by_quantize_and_autofix() -> None:
    """Bias correction needs channel means: the one collector factory adds them (autofix too)."""
    from ortnpu.quant import MinMaxCalibrator, QuantConfig
    from ortnpu.quant.calibrate import HistogramCalibrator, WithChannelMeans
    from ortnpu.target import load_target

    assert isinstance(QuantConfig(method="minmax").collector(), MinMaxCalibrator)
    assert isinstance(QuantConfig(method="mse").collector(), HistogramCalibrator)
    default = QuantConfig().collector(arith=load_target("tflite-a16w8").arithmetic)
    assert isinstance(default, HistogramCalibrator) and default.method == "auto"
    assert (default.levels, default.symmetric) == (65536, True)   # the target's grid
    corrected = QuantConfig(bias_correction=True).collector()
    assert isinstance(corrected, WithChannelMeans)
    model = small_cnn()
    test = images(64, seed=4)
    ref = float_run(model, test)
    config = QuantConfig(per_channel=False, bias_correction=True)
    _, report = ortnpu.autofix(model, "tflite-int8", images(128), test,
                               lambda out: -float(np.abs(out - ref).mean()), budget=1.0,
                               config=config)
    direct = ortnpu.quantize(model, "tflite-int8", images(128), config=config)
    out = ortnpu.InferenceSession(direct).run(None, {"x": test})[0]
    assert report.initial_score == pytest.approx(-float(np.abs(out - ref).mean()))


def test_old_opset_model_is_converted_so_its_cpu_nodes_stay_valid() -> None:
    """An opset-12 model's Squeeze/Unsqueeze take `axes` as an attribute; the NPU graph needs
    opset 13 (per-channel QuantizeLinear), where it is an input. Found on PP-OCRv4 rec."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
                                "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Unsqueeze", ["c"], ["u"], name="unsq", axes=[0]),
             helper.make_node("Squeeze", ["u"], ["y"], name="sq", axes=[0])]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    x = rng.random((8, 1, 3, 8, 8)).astype(np.float32)
    npu = ortnpu.quantize(model, "tflite-int8", [{"x": v} for v in x], optimize=False)
    assert max(o.version for o in npu.opset_import if o.domain == "") >= 13
    sq = next(n for n in npu.graph.node if n.op_type == "Squeeze")
    assert len(sq.input) == 2 and not sq.attribute       # axes became an input
    y = ortnpu.InferenceSession(npu).run(None, {"x": x[0]})[0]
    assert y.shape == (1, 4, 8, 8)


def _token_mlp() -> onnx.ModelProto:
    """[N, 5, 12] tokens: MatMul + Add(bias [20]) + Relu, MatMul + Add(bias [1, 1, 7]), and a
    MatMul + Add of a [5, 1] constant (one value per token: not a bias along the features)."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
             for n, s in (("w1", (12, 20)), ("b1", (20,)), ("w2", (20, 7)), ("b2", (1, 1, 7)),
                          ("w3", (7, 6)), ("t3", (5, 1)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
             helper.make_node("Add", ["h1", "b1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="mm2"),
             helper.make_node("Add", ["b2", "h2"], ["a2"], name="add2"),
             helper.make_node("MatMul", ["a2", "w3"], ["h3"], name="mm3"),
             helper.make_node("Add", ["h3", "t3"], ["y"], name="add3")]
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 6])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_matmul_bias_add_becomes_the_fully_connected_bias() -> None:
    """A MatMul over [batch, tokens, features] cannot become a Gemm: its bias Add (and the Relu
    after it) fuse into the FullyConnected, so the sum is rounded once (a separate Add_i8
    rounded twice and cost a layer); an Add that is not a per-feature bias stays an Add.
    evaluate and quantize say the same."""
    model = _token_mlp()
    rng = np.random.default_rng(5)
    calib = [{"x": rng.standard_normal((1, 5, 12)).astype(np.float32)} for _ in range(16)]
    res = QuantizationResult()
    npu = ortnpu.quantize(model, "tflite-int8", calib, result=res)
    placement = {p.node: p for p in res.placements}
    assert placement["add1"].fused_into == "mm1" and placement["relu1"].fused_into == "mm1"
    assert placement["add2"].fused_into == "mm2"
    assert not placement["add3"].fused_into and placement["add3"].device == "NPU"
    ops = [n.op_type for n in npu.graph.node if n.domain == DOMAIN]
    assert ops.count("FullyConnected_i8") == 3 and ops.count("Add_i8") == 1
    plan = ortnpu.evaluate(model, "tflite-int8").plan
    assert plan.fused_into == {"add1": "mm1", "relu1": "mm1", "add2": "mm2"}
    assert "fused into MatMul 'mm1' as its bias" in plan.reasons["add1"]
    assert "as its output clamp" in plan.reasons["relu1"]
    x = rng.standard_normal((3, 5, 12)).astype(np.float32)
    got = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    ref = np.concatenate([run_reference(npu, {"x": x[i:i + 1]})[0] for i in range(3)])
    assert np.array_equal(got, ref)
    want = np.concatenate([float_run(model, x[i:i + 1]) for i in range(3)])
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_a_bias_that_raises_the_rank_is_not_fused() -> None:
    """An Add of a [1, 1, 1, n] constant after a rank-3 MatMul broadcasts the product to rank
    4: it is not the layer's bias (fused, the output would lose an axis)."""
    from types import SimpleNamespace

    from ortnpu.quant.context import GraphView
    from ortnpu.quant.lowering import fusable_bias

    def view(bias_shape: tuple[int, ...]) -> GraphView:
        g = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["y"], name="add")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 12])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.ones((12, 20), np.float32), "w"),
             numpy_helper.from_array(np.ones(bias_shape, np.float32), "b")])
        return GraphView.build(helper.make_model(g))

    for shape, fused in (((20,), True), ((1, 1, 20), True), ((1, 1, 1, 20), False),
                         ((5, 1), False), ((5, 20), False)):
        v = view(shape)
        ctx = SimpleNamespace(view=v)   # fusable_bias reads only the graph view
        assert (fusable_bias(v.producer["h"], ctx) is not None) == fused, shape


def test_concat_of_many_inputs_is_joined_in_stages() -> None:
    """An unrolled BiLSTM joins its 32 time steps in one Concat; the NPU op takes up to 8
    inputs, so the quantizer joins 20 inputs in stages (8 + 8 + 4, then 3): the same integers
    as one Concat, all of it on the NPU."""
    nodes, names = [], []
    inits = []
    for k in range(20):
        inits.append(numpy_helper.from_array(np.array(0.5 + 0.1 * k, np.float32), f"s{k}"))
        nodes.append(helper.make_node("Mul", ["x", f"s{k}"], [f"m{k}"], name=f"scale{k}"))
        names.append(f"m{k}")
    nodes.append(helper.make_node("Concat", names, ["y"], name="join", axis=1))
    g = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40, 3, 3])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(3)
    calib = rng.standard_normal((8, 1, 2, 3, 3)).astype(np.float32)
    res = QuantizationResult()
    npu = ortnpu.quantize(m, "tflite-int8", [{"x": c} for c in calib], result=res)
    assert all(p.device == "NPU" for p in res.placements)
    concats = [n for n in npu.graph.node if n.op_type.startswith("Concat")]
    assert sorted(len(n.input) for n in concats) == [3, 4, 8, 8]
    x = calib[0]
    got = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    ref = np.tile(x, (1, 20, 1, 1)) * \
        (0.5 + 0.1 * np.arange(20, dtype=np.float32)).repeat(2)[None, :, None, None]
    scale = float(np.abs(ref).max()) / 127
    assert np.abs(got - ref).max() <= 2 * scale


def test_reduce_mean_without_keepdims_runs_on_the_npu() -> None:
    """Silero VAD ends in a ReduceMean with keepdims=0: TFLite's MEAN without keep_dims, the
    channel mean then a Reshape dropping the axis; any batch."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["y"], name="mean", axes=[-1], keepdims=0)]
    g = helper.make_graph(nodes, "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", 3, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(4)
    calib = rng.standard_normal((16, 3, 7)).astype(np.float32)
    res = QuantizationResult()
    npu = ortnpu.quantize(m, "tflite-int8", calib, result=res)
    assert all(p.device == "NPU" for p in res.placements), res.placements
    x = calib[:4]
    got = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert got.shape == (4, 3) and np.array_equal(got, want)
    ref = np.maximum(x, 0).mean(axis=-1)
    assert np.abs(got - ref).max() <= 2 * float(ref.max()) / 255
