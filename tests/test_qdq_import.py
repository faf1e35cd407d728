"""import_qdq: models quantized elsewhere run with their own scales, bit for bit.

The reference of exactness is ``ortnpu.quantize`` of the same float model with the same
parameters, written down here independently of the importer (from the initializers of the
quantized file). onnxruntime running the QDQ model is a closeness check only: its float QDQ
arithmetic is not TFLite's integer rescale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper, version_converter
from onnx.reference import ReferenceEvaluator

import ortnpu
from ortnpu.cli import main as cli_main
from ortnpu.domain import DOMAIN
from ortnpu.domain.arith import round_half_away
from ortnpu.quant import QuantizationResult, QuantParams, QuantPreset
from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds
from ortnpu.quant.qdq_convert import convert_activation, convert_weight
from ortnpu.quant.qdq_graph import QuantizedConst
from ortnpu.quant.qdq_import import import_qdq
from ortnpu.target import load_target

FIXTURES = Path(__file__).resolve().parent / "data" / "qdq"


# --- helpers ---------------------------------------------------------------------------------
def ort_quantize(model: onnx.ModelProto, act: str, fmt: str = "QDQ",
                 n: int = 8) -> onnx.ModelProto:
    """onnxruntime's own quantize_static output for ``model`` (activations ``act``)."""
    return quantize_with_onnxruntime(model, sample_feeds("x", images(n, seed=1)),
                                     activation_type=act, quant_format=fmt)


def run_each(model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list:
    """Run sample by sample (exported models have batch 1); stack each requested output."""
    if names is not None:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known = {o.name for o in probe.graph.output}
        for t in names:
            if t not in known:
                probe.graph.output.append(helper.make_empty_tensor_value_info(t))
        model = probe
    sess = ortnpu.InferenceSession(model)
    names = names or [o.name for o in model.graph.output]
    runs = [sess.run(names, {"x": x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(names))]


def ort_qdq_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The QDQ definition in float: onnxruntime with its int8 fusions disabled."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                disabled_optimizers=["QDQSelectorActionTransformer"])
    return np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])


def int_tensors(npu: onnx.ModelProto) -> set[str]:
    return {n.output[0] for n in npu.graph.node if n.domain == DOMAIN}


def assert_identical(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray,
                     min_common: int) -> None:
    """Same float outputs and every integer tensor both graphs name, bit for bit."""
    common = sorted(int_tensors(a) & int_tensors(b))
    assert len(common) >= min_common, common
    outs = [o.name for o in a.graph.output]
    ra, rb = run_each(a, x, outs + common), run_each(b, x, outs + common)
    for name, u, v in zip(outs + common, ra, rb, strict=True):
        assert u.dtype == v.dtype and np.array_equal(u, v), name


def direct_preset(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> QuantPreset:
    """onnxruntime's QDQ numbers, read by name, as a preset for the original float model.

    Written from the NPU rules, not from the importer: uint8 activations are the same real
    values on int8 with the zero point - 128; pools and layout ops keep their input's
    parameters; a bias whose input scale that changes is re-expressed in the new accumulator
    unit, rounding half away from zero.
    """
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    file_params = {}
    for n in qdq.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            zp = inits[n.input[2]]
            p = QuantParams(float(inits[n.input[1]]), int(zp), zp.dtype.name)
            if p.dtype == "uint8":
                p = QuantParams(p.scale, p.zero_point - 128, "int8")
            file_params[n.input[0].removesuffix("_QuantizeLinear_Input")] = p
    params = dict(file_params)
    for n in float_model.graph.node:
        if n.op_type in ("MaxPool", "GlobalAveragePool", "AveragePool", "Flatten", "Reshape") \
                and n.input[0] in params:
            params[n.output[0]] = params[n.input[0]]
    weights, biases = {}, {}
    for n in float_model.graph.node:
        if n.op_type not in ("Conv", "Gemm"):
            continue
        w = n.input[1]
        weights[w] = (inits[f"{w}_quantized"], inits[f"{w}_scale"].astype(np.float64))
        if len(n.input) > 2:
            b, x = n.input[2], n.input[0]
            q = inits[f"{b}_quantized"].astype(np.int64)
            if params[x] != file_params[x]:
                real = q * inits[f"{b}_quantized_scale"].astype(np.float64)
                q = round_half_away(real / (np.float64(params[x].scale) * weights[w][1]))
            biases[b] = q.astype(np.int64)
    return QuantPreset(params=params, weights=weights, biases=biases)


@pytest.fixture(scope="module")
def ort_models() -> dict[str, onnx.ModelProto]:
    model = small_cnn(batch=1)
    return {"float": model, "s8": ort_quantize(model, "QInt8"),
            "u8": ort_quantize(model, "QUInt8"),
            "qop": ort_quantize(model, "QInt8", fmt="QOperator")}


# --- onnxruntime's QDQ output: the Done-when ------------------------------------------------
@pytest.mark.parametrize("act", ["s8", "u8"])
def test_ort_qdq_import_equals_direct_quantization(ort_models: dict, act: str) -> None:
    qdq = ort_models[act]
    report: list = []
    imported = import_qdq(qdq, "tflite-int8", report=report)
    direct = ortnpu.quantize(ort_models["float"], "tflite-int8", None, optimize=False,
                             preset=direct_preset(qdq, ort_models["float"]))
    x = images(24, seed=5)
    assert_identical(imported, direct, x, min_common=8)
    # Closeness to onnxruntime's float QDQ definition (not bit-exact by nature).
    ours, ref = run_each(imported, x)[0], ort_qdq_reference(qdq, x)
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.abs(ours - ref).max() < 0.02
    changed = {c.tensor for c in report if not c.exact}
    assert {"s1", "g1", "f1", "bf_quantized", "probs"} <= changed
    exact = {c.tensor for c in report if c.exact}
    assert ("x" in exact) == (act == "u8")  # uint8 -> int8 is a zero-point shift, reported


def test_qoperator_import_equals_qdq_import(ort_models: dict) -> None:
    """QLinearConv/QLinearAdd/QLinearMul/QLinearSigmoid/QGemm... give the QDQ graph's result."""
    x = images(12, seed=6)
    a = run_each(import_qdq(ort_models["qop"], "tflite-int8"), x)[0]
    b = run_each(import_qdq(ort_models["s8"], "tflite-int8"), x)[0]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("target", ["n2d2-int8", "tflite-a16w8"])
def test_other_targets_convert_and_report(ort_models: dict, target: str) -> None:
    report: list = []
    res = QuantizationResult()
    npu = import_qdq(ort_models["s8"], target, report=report, result=res)
    text = "\n".join(map(str, report))
    if target == "n2d2-int8":
        assert "one weight scale per tensor" in text and "powers of two" in text
        meta = {p.key: p.value for p in npu.metadata_props}
        import json

        for p in json.loads(meta["ortnpu.tensors"]).values():
            assert np.log2(p["scale"]) == round(np.log2(p["scale"]))
    else:
        assert "16 bits" in text
    on_cpu = {p.node for p in res.placements if p.device == "CPU"}
    assert on_cpu == ({"softmax"} if target == "n2d2-int8" else set())   # TFLite's SOFTMAX
    x = images(8, seed=5)
    sess = ort.InferenceSession(ort_models["float"].SerializeToString())
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(run_each(npu, x)[0] - ref).max() < 0.06


# --- PyTorch QAT export (committed fixture, see tests/data/qdq/make_fixtures.py) ------------
def test_torch_qat_export() -> None:
    model = onnx.load(FIXTURES / "torch_qat_cnn.onnx")
    data = np.load(FIXTURES / "torch_qat_cnn_io.npz")
    report: list = []
    npu = import_qdq(model, "tflite-int8", report=report)
    x = data["x"]
    ours, ref = run_each(npu, x)[0], ort_qdq_reference(model, x)
    assert np.abs(ref - data["torch_out"]).max() < 1e-6  # the export is faithful to torch
    assert (ours.argmax(1) == ref.argmax(1)).all()
    scale = 0.0026  # about one output step
    assert np.abs(ours - ref).max() <= 2 * scale
    text = "\n".join(map(str, report))
    assert "narrow range [-127, 127]" in text  # torch weights use -128
    # the same preset on the float graph gives the same graph: the importer adds nothing
    from ortnpu.quant.qdq_graph import read_quantized

    assert read_quantized(model).params  # every activation's parameters were read


# --- Intel Neural Compressor recipes (built with onnx.helper, see docs/qdq-import.md) -------
RNG = np.random.default_rng(3)
W1 = RNG.standard_normal((16, 12)).astype(np.float32) * 0.3
W2 = RNG.standard_normal((12, 4)).astype(np.float32) * 0.3
B1 = RNG.standard_normal(12).astype(np.float32) * 0.1
B2 = RNG.standard_normal(4).astype(np.float32) * 0.1
X_S, X_ZP, H_S, H_ZP, Y_S, Y_ZP = 0.0041, 3, 0.0125, 0, 0.0093, 120


def _wq(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), s


def inc_model(recipe: str) -> onnx.ModelProto:
    """``x -> Linear -> ReLU -> Linear`` exported the way each INC recipe writes it."""
    (w1q, w1s), (w2q, w2s) = _wq(W1), _wq(W2)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "x_s": np.float32(X_S), "x_zp": np.uint8(X_ZP), "h_s": np.float32(H_S),
        "h_zp": np.uint8(H_ZP), "y_s": np.float32(Y_S), "y_zp": np.uint8(Y_ZP),
        "w1_q": w1q, "w2_q": w2q}.items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"], name="qx")]
    for k, (src, wq, ws, b, out) in enumerate([("x", w1q, w1s, B1, "h_pre"),
                                              ("h", w2q, w2s, B2, "y_pre")], 1):
        xs, xzp = ("x_s", "x_zp") if k == 1 else ("h_s", "h_zp")
        if recipe == "QDQ_OP_INT32_BIAS":
            unit = (np.float32(X_S if k == 1 else H_S) * ws).astype(np.float32)
            bq = np.rint(b / unit).astype(np.int32)
            inits += [numpy_helper.from_array(bq, f"b{k}_q"),
                      numpy_helper.from_array(unit, f"unit{k}"),
                      numpy_helper.from_array(np.zeros(wq.shape[1], np.int8), f"w{k}_zp")]
            nodes += [helper.make_node("MatMulInteger", [f"{src}_q", f"w{k}_q", xzp, f"w{k}_zp"],
                                       [f"acc{k}"], name=f"fc{k}"),
                      helper.make_node("Add", [f"acc{k}", f"b{k}_q"], [f"accb{k}"],
                                       name=f"bias{k}"),
                      helper.make_node("Cast", [f"accb{k}"], [f"accf{k}"], to=TensorProto.FLOAT,
                                       name=f"cast{k}"),
                      helper.make_node("Mul", [f"accf{k}", f"unit{k}"], [out], name=f"rescale{k}")]
        else:
            inits += [numpy_helper.from_array(ws, f"w{k}_s"),
                      numpy_helper.from_array(np.zeros(ws.shape, np.int8), f"w{k}_zp"),
                      numpy_helper.from_array(b, f"b{k}")]
            nodes += [helper.make_node("DequantizeLinear", [f"{src}_q", xs, xzp], [f"{src}_dq"],
                                       name=f"dq_{src}"),
                      helper.make_node("DequantizeLinear", [f"w{k}_q", f"w{k}_s", f"w{k}_zp"],
                                       [f"w{k}"], axis=1, name=f"dq_w{k}"),
                      helper.make_node("MatMul", [f"{src}_dq", f"w{k}"], [f"mm{k}"], name=f"fc{k}"),
                      helper.make_node("Add", [f"mm{k}", f"b{k}"], [out], name=f"bias{k}")]
        if k == 1:
            nodes += [helper.make_node("Relu", ["h_pre"], ["h"], name="relu"),
                      helper.make_node("QuantizeLinear", ["h", "h_s", "h_zp"], ["h_q"], name="qh")]
    if recipe == "QDQ_OP_FP32_BIAS_QDQ":
        nodes += [helper.make_node("QuantizeLinear", ["y_pre", "y_s", "y_zp"], ["y_q"], name="qy"),
                  helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_zp"], ["y"], name="dqy")]
    else:
        nodes.append(helper.make_node("Identity", ["y_pre"], ["y"], name="out"))
    graph = helper.make_graph(nodes, recipe, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def inc_direct(recipe: str) -> tuple[onnx.ModelProto, QuantPreset, set[str]]:
    """The float MLP and the recipe's numbers written as a preset (independent of the importer)."""
    (w1q, w1s), (w2q, w2s) = _wq(W1), _wq(W2)
    x_p = QuantParams(X_S, X_ZP - 128, "int8")
    h_p = QuantParams(H_S, H_ZP - 128, "int8")
    params = {"x": x_p, "h": h_p}
    weights, biases = {"W1": (w1q, w1s.astype(np.float64))}, {}
    b1, b2 = B1, B2
    force_cpu = {"fc2"}
    if recipe == "QDQ_OP_INT32_BIAS":
        # the recipe stores the rescale factor x_s * w_s; that is the weight scale it defines
        units = [(np.float32(s) * ws).astype(np.float32) for s, ws in ((X_S, w1s), (H_S, w2s))]
        wscales = [(u / np.float64(np.float32(s))).astype(np.float32).astype(np.float64)
                   for u, s in zip(units, (X_S, H_S), strict=True)]
        weights["W1"] = (w1q, wscales[0])
        bq = [np.rint(b / u).astype(np.int64) for b, u in zip((B1, B2), units, strict=True)]
        biases["B1"] = bq[0]
        b2 = (bq[1] * units[1].astype(np.float64)).astype(np.float32)
        w2 = (w2q * units[1].astype(np.float64) / np.float32(H_S)).astype(np.float32)
        w2 = (w2q * wscales[1]).astype(np.float32)
        b1 = (bq[0] * units[0].astype(np.float64)).astype(np.float32)
    else:
        w2 = (w2q * w2s.astype(np.float64)).astype(np.float32)
    if recipe == "QDQ_OP_FP32_BIAS_QDQ":
        params["y"] = QuantParams(Y_S, Y_ZP - 128, "int8")
        weights["W2"] = (w2q, w2s.astype(np.float64))
        force_cpu = set()
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "W1": (w1q * weights["W1"][1]).astype(np.float32), "W2": w2, "B1": b1,
        "B2": b2}.items()]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h_pre"], name="fc1"),
             helper.make_node("Relu", ["h_pre"], ["h"], name="relu"),
             helper.make_node("Gemm", ["h", "W2", "B2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, QuantPreset(params=params, weights=weights, biases=biases), force_cpu


@pytest.mark.parametrize("recipe", ["QDQ_OP_FP32_BIAS", "QDQ_OP_INT32_BIAS",
                                    "QDQ_OP_FP32_BIAS_QDQ"])
def test_inc_recipes_equal_direct_quantization(recipe: str) -> None:
    model = inc_model(recipe)
    report: list = []
    res = QuantizationResult()
    imported = import_qdq(model, "tflite-int8", report=report, result=res)
    float_model, preset, force_cpu = inc_direct(recipe)
    direct = ortnpu.quantize(float_model, "tflite-int8", None, optimize=False, preset=preset,
                             force_cpu=force_cpu)
    x = np.random.default_rng(9).standard_normal((16, 16)).astype(np.float32) * 0.3 + 0.4
    assert_identical(imported, direct, x, min_common=1)
    cpu = {p.node for p in res.placements if p.device == "CPU"}
    assert cpu - {"out"} == force_cpu  # "out" is the recipe's Identity
    if force_cpu:
        assert any(c.tensor == "fc2" and "no scale for 'y_pre'" in c.reason for c in report)
    # onnx's reference evaluator, not onnxruntime: onnxruntime's u8s8 integer kernels on AVX2
    # without VNNI saturate 16-bit pair sums (255 * 127 * 2 > 32767), so its MatMulInteger and
    # fused QDQ MatMul give CPU-dependent results (0.09 off on this model on an AVX2 EPYC)
    evaluator = ReferenceEvaluator(version_converter.convert_version(model, 21))
    ref = np.concatenate([evaluator.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(run_each(imported, x)[0] - ref).max() < 1e-5


# --- conversions, one rule each ----------------------------------------------------------------
def _qc(q: np.ndarray, scale: list[float], zp: list[int], axis: int | None) -> QuantizedConst:
    return QuantizedConst(q=q.astype(np.int64), scale=np.array(scale, np.float64),
                          zero_point=np.array(zp, np.int64), axis=axis,
                          dtype=q.dtype.name, source="w")


def test_weight_conversions() -> None:
    a = load_target("tflite-int8").arithmetic
    # uint8 weights with zero point 128: re-centred exactly, scales kept
    q = np.array([[1, 128, 255], [100, 130, 200]], np.uint8)
    wq, ws, conv = convert_weight("w", _qc(q, [0.5, 0.25], [128, 128], 0), a, 0)
    assert np.array_equal(wq, q.astype(np.int64) - 128) and list(ws) == [0.5, 0.25]
    assert len(conv) == 1 and conv[0].exact
    # zero point 10: values leave [-127, 127] -> requantized per channel, reported
    q = np.array([[0, 255]], np.uint8)
    wq, ws, conv = convert_weight("w", _qc(q, [0.1], [10], 0), a, 0)
    assert wq.tolist() == [[-5, 127]] and not conv[0].exact
    assert np.isclose(ws[0], np.float32(24.5 / 127))
    # int8 -128 on a narrow-range target: clamped by one step, scales kept
    q = np.array([[-128, 5], [3, 127]], np.int8)
    wq, ws, conv = convert_weight("w", _qc(q, [0.1, 0.2], [0, 0], 0), a, 0)
    assert wq.tolist() == [[-127, 5], [3, 127]] and "1 weight(s)" in conv[0].change
    # per-channel on a per-tensor, power-of-two target
    n2d2 = load_target("n2d2-int8").arithmetic
    q = np.array([[127, -64], [10, 20]], np.int8)
    wq, ws, conv = convert_weight("w", _qc(q, [0.01, 0.02], [0, 0], 0), n2d2, 0)
    assert ws.tolist() == [2.0 ** -6] and wq.tolist() == [[81, -41], [13, 26]]
    assert "one weight scale per tensor" in conv[0].reason
    # per-channel along the wrong axis (not the output channels) becomes per tensor
    _, ws, conv = convert_weight("w", _qc(np.ones((2, 3), np.int8), [0.1, 0.2], [0, 0], 0),
                                 a, 1)
    assert ws.size == 1 and "not the output-channel axis" in conv[0].reason


def test_activation_conversions() -> None:
    tfl, n2d2 = load_target("tflite-int8").arithmetic, load_target("n2d2-int8").arithmetic
    p, c = convert_activation("t", QuantParams(0.05, 3, "uint8"), tfl)
    assert p == QuantParams(0.05, -125, "int8") and c.exact
    p, c = convert_activation("t", QuantParams(0.05, -7, "int8"), tfl)
    assert p == QuantParams(0.05, -7, "int8") and c is None
    p, c = convert_activation("t", QuantParams(0.01, -128, "int8"), n2d2)  # ReLU output
    assert p == QuantParams(2.0 ** -6, 0, "uint8") and not c.exact
    p, c = convert_activation("t", QuantParams(0.01, 20, "int8"), n2d2)
    assert p.zero_point == 0 and p.dtype == "int8" and "symmetric" in c.reason


# --- errors name the node and what to do ----------------------------------------------------
def _qdq_relu(**change: object) -> onnx.ModelProto:
    scale = change.get("scale", np.float32(0.1))
    zp = change.get("zp", np.int8(0))
    inits = [numpy_helper.from_array(np.asarray(scale), "s"),
             numpy_helper.from_array(np.asarray(zp), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("Relu", ["xd"], ["r"], name="relu")]
    if change.get("output_qdq", True):
        nodes += [helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="qr"),
                  helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"], name="dqr")]
    else:
        nodes[-1].output[0] = "y"
    if change.get("int_output"):
        nodes = [*nodes[:1], helper.make_node("Identity", ["xq"], ["y"], name="id")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 2, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT if not change.get("int_output") else TensorProto.INT8, None)],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_errors_name_the_node() -> None:
    with pytest.raises(ortnpu.ModelError, match="float model"):
        import_qdq(small_cnn(), "tflite-int8")
    with pytest.raises(ortnpu.ModelError, match="onnx.ModelProto"):
        import_qdq("model.onnx", "tflite-int8")
    with pytest.raises(ortnpu.UnsupportedError, match="'q'.*per-channel"):
        import_qdq(_qdq_relu(scale=np.array([0.1, 0.2], np.float32),
                             zp=np.array([0, 0], np.int8)), "tflite-int8")
    with pytest.raises(ortnpu.UnsupportedError, match="graph output 'y' is an integer"):
        import_qdq(_qdq_relu(int_output=True), "tflite-int8")
    dyn = _qdq_relu()
    dyn.graph.node[0].CopyFrom(helper.make_node("DynamicQuantizeLinear", ["x"],
                                                ["xq", "s2", "z2"], name="dyn"))
    with pytest.raises(ortnpu.UnsupportedError, match="'dyn'.*dynamically quantized"):
        import_qdq(dyn, "tflite-int8")


@pytest.mark.parametrize("bad", [np.inf, np.nan, -0.5])
@pytest.mark.parametrize("target", ["tflite-int8", "n2d2-int8"])
def test_scales_that_are_no_numbers_are_model_errors(ort_models: dict, bad: float,
                                                     target: str) -> None:
    """A QDQ model whose activation or weight scale is inf, NaN or negative is a ModelError
    naming the node and the tensor. Found by the fuzzer (edges, seed 1216 case 8291): a
    weight's DequantizeLinear scale of inf reached n2d2's power-of-two rounding of the weight
    scale and raised OverflowError inside the execution provider's GetCapability."""
    with pytest.raises(ortnpu.ModelError, match="'q'.*scale of 'x'.*re-quantize"):
        import_qdq(_qdq_relu(scale=np.float32(bad)), target)
    qdq = onnx.ModelProto()
    qdq.CopyFrom(ort_models["s8"])
    weight_dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear"
                     and any(i.name == n.input[0] for i in qdq.graph.initializer))
    inits = {i.name: i for i in qdq.graph.initializer}
    scale = numpy_helper.to_array(inits[weight_dq.input[1]]).copy()
    scale.reshape(-1)[0] = bad
    inits[weight_dq.input[1]].CopyFrom(numpy_helper.from_array(scale, weight_dq.input[1]))
    with pytest.raises(ortnpu.ModelError, match=f"'{weight_dq.name}'.*a scale of"):
        import_qdq(qdq, target)


def test_plain_qdq_relu_runs_with_the_model_scale() -> None:
    res = QuantizationResult()
    npu = import_qdq(_qdq_relu(), "tflite-int8", result=res)
    assert [p.device for p in res.placements] == ["NPU"]
    x = np.linspace(-2, 2, 32, dtype=np.float32).reshape(1, 2, 4, 4)
    y = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    q = np.maximum(np.clip(np.rint(x / np.float32(0.1)), -128, 127), 0)
    assert np.array_equal(y, (q * np.float32(0.1)).astype(np.float32))
    # without parameters for its output the Relu stays float, and both facts are reported
    report: list = []
    res = QuantizationResult()
    npu = import_qdq(_qdq_relu(output_qdq=False), "tflite-int8", report=report, result=res)
    assert [p.device for p in res.placements] == ["CPU"]
    assert {c.tensor for c in report} == {"relu", "x"}
    assert "graph input" in next(c.reason for c in report if c.tensor == "x")


def test_cli_prints_each_conversion(ort_models: dict, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "q.onnx", tmp_path / "npu.onnx"
    onnx.save(ort_models["u8"], src)
    assert cli_main(["import-qdq", str(src), "--target", "tflite-int8", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "[exact] x: uint8" in text and "[changed] s1" in text
    assert cli_main(["import-qdq", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2


def _real_model(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    from ortnpu import models_cache

    if name == "digits_cnn":
        return models_cache.bundled_model_path(), models_cache.load_bundled_data()
    path = models_cache.cached_model(f"{name}.onnx")
    data_name = "imagenet_photos.npz" if name == "mobilenet_v2" else "fashion_mnist_data.npz"
    data_path = models_cache.cached_model(data_name)
    if path is None or data_path is None:
        pytest.skip(f"{name} is not built (python models/build_all.py)")
    with np.load(data_path) as f:
        data = {k: f[k] for k in f.files}
    if name == "mobilenet_v2":
        data = {"calib_x": data["x"][:16], "test_x": data["x"][70:]}
    return path, data


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits_cnn", "fashion_mnist_cnn", "fashion_resnet",
                                   "mobilenet_v2"])
def test_real_models_through_ort_qdq(model: str, tmp_path: Path) -> None:
    """Real models: onnxruntime's QDQ output imported = direct quantization, bit for bit."""
    path, data = _real_model(model)
    float_model = ortnpu.optimize(onnx.load(path))  # folds BatchNormalization
    name = float_model.graph.input[0].name
    calib = data["calib_x"][:64]
    qdq = quantize_with_onnxruntime(float_model, sample_feeds(name, calib))
    imported = import_qdq(qdq, "tflite-int8")
    direct = ortnpu.quantize(float_model, "tflite-int8", None, optimize=False,
                             preset=direct_preset(qdq, float_model))
    fixed = float_model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    step = fixed or 64
    x = data["test_x"][:64]
    sessions = [ortnpu.InferenceSession(imported), ortnpu.InferenceSession(direct)]
    a, b = ([s.run(None, {name: x[i:i + step]})[0] for i in range(0, len(x), step)]
            for s in sessions)
    a, b = np.concatenate(a), np.concatenate(b)
    assert np.array_equal(a, b)
    if "test_y" in data:
        assert (a.argmax(1) == data["test_y"][:64]).mean() > 0.85


def _rebuilt_layers() -> list[tuple[str, onnx.ModelProto, tuple[int, ...]]]:
    """A stride-16 patch embedding, a stride-2 ConvTranspose and a 1-D Conv: layers that
    evaluate and quantize rebuild (space-to-depth + 1x1 Conv; zero insertion + Conv; height 1)."""
    rng = np.random.default_rng(21)
    models = []
    for name, node, w, shape in (
            ("patch", helper.make_node("Conv", ["x", "w", "b"], ["y"], name="patch",
                                       strides=[16, 16], kernel_shape=[16, 16]),
             rng.normal(0, 0.05, (8, 3, 16, 16)), (1, 3, 32, 32)),
            ("up", helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up",
                                    strides=[2, 2]),
             rng.normal(0, 0.3, (4, 6, 2, 2)), (1, 4, 5, 5)),
            ("tconv", helper.make_node("Conv", ["x", "w", "b"], ["y"], name="tconv",
                                       pads=[1, 1]),
             rng.normal(0, 0.3, (6, 4, 3)), (1, 4, 16)),
            ("blocks", helper.make_node("Conv", ["x", "w", "b"], ["y"], name="blocks",
                                        strides=[2, 16], kernel_shape=[4, 32]),
             rng.normal(0, 0.05, (6, 3, 4, 32)), (1, 3, 8, 64))):
        cout = w.shape[1] if node.op_type == "ConvTranspose" else w.shape[0]
        g = helper.make_graph(
            [node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w.astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, cout).astype(np.float32), "b")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        models.append((name, m, shape))
    return models


@pytest.mark.parametrize("case", [0, 1, 2, 3],
                         ids=["patch_embedding", "conv_transpose", "conv1d", "kernel_of_strides"])
def test_rebuilt_layers_keep_the_models_integer_weights(case: int) -> None:
    """The NPU graph's rebuilt convolution holds the QDQ model's own int8 weights in its
    layout, not the float weights quantized again: halved, the weights no longer span the
    int8 range, so a requantization (max |w| -> 127) would double them."""
    name, m, shape = _rebuilt_layers()[case]
    calib = np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32)
    qdq = quantize_with_onnxruntime(m, sample_feeds("x", calib))
    weights = next(t for t in qdq.graph.initializer if t.data_type == TensorProto.INT8 and
                   numpy_helper.to_array(t).ndim >= 3)
    halved = numpy_helper.to_array(weights) // 2
    weights.CopyFrom(numpy_helper.from_array(halved, weights.name))
    npu = import_qdq(qdq, "tflite-int8")
    conv = next(n for n in npu.graph.node if n.op_type.startswith("Conv"))
    got = next(numpy_helper.to_array(t) for t in npu.graph.initializer if t.name == conv.input[1])
    if name == "patch":   # [o, (i, j, c), 0, 0] = w[o, c, i, j]: SPACE_TO_DEPTH's order
        want = halved.transpose(0, 2, 3, 1).reshape(halved.shape[0], -1, 1, 1)
    elif name == "tconv":
        want = halved[:, :, None, :]
    elif name == "blocks":   # [o, (i, j, c), a, b] = w[o, c, 2a + i, 16b + j]
        want = np.zeros((6, 3 * 2 * 16, 2, 2), halved.dtype)
        for c, i, j, a, b in np.ndindex(3, 2, 16, 2, 2):
            want[:, (i * 16 + j) * 3 + c, a, b] = halved[:, c, 2 * a + i, 16 * b + j]
    else:
        want = halved.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    assert np.array_equal(got, want)
    sess = ortnpu.InferenceSession(npu)
    x = calib[:1]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


def test_inner_axis_softmax_of_a_qdq_model_imports() -> None:
    """The Softmax moved to the last axis writes a new tensor: it takes the model's output
    parameters through the Transpose back (quantize has no calibration data here)."""
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 4, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    calib = np.random.default_rng(0).standard_normal((8, 16, 4, 8)).astype(np.float32) * 3
    qdq = quantize_with_onnxruntime(m, sample_feeds("x", calib))
    result = QuantizationResult()
    npu = import_qdq(qdq, "tflite-int8", result=result)
    assert all(p.device == "NPU" for p in result.placements)
    x = calib[:1]
    got = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    e = np.exp(x - x.max(axis=1, keepdims=True))
    assert np.abs(got - e / e.sum(axis=1, keepdims=True)).max() < 0.02
