"""The ops issue 14 moved to the NPU: Slice/Split, Squeeze/Unsqueeze, Sub, Max/Min, LeakyRelu,
Elu, Gelu, HardSigmoid tables, and a QDQ DequantizeLinear → QuantizeLinear pair.

Each model runs three ways that must agree bit for bit: the default session (fused, compiled
where the program compiler accepts the layers), the per-node Python session and the integer
export on stock onnxruntime. LiteRT equality is in tests/oracle/test_litert_oracle_ops.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import transformer
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import Maximum, Slice, Sub
from ortnpu.domain.arith import quantize_multiplier, rescale
from ortnpu.quant.params import QuantParams
from ortnpu.quant.tables import leaky_relu_table
from ortnpu.runtime.native_program import NATIVE_OPS
from ortnpu.target import load_target


def _three_paths(npu: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    a = ortnpu.InferenceSession(npu).run(None, feeds)[0]
    b = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, feeds)[0]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    c = ort.InferenceSession(ortnpu.export(npu).SerializeToString(), so,
                             providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(a, b) and np.array_equal(a, c)
    return a


def _init(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list,
           out_shape: list, opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _data(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def yolo_head() -> onnx.ModelProto:
    """A YOLOv8-style detection head: Split of box and class channels, Sigmoid scores,
    anchor-relative box decoding with Sub/Add/Mul, Concat."""
    rng = np.random.default_rng(0)
    inits = [_init("w0", rng.standard_normal((16, 8, 3, 3)) * 0.2),
             _init("w1", rng.standard_normal((8, 16, 1, 1)) * 0.2),
             _init("anchors", rng.uniform(0, 8, (1, 2, 8, 8))), _init("half", 0.5),
             _init("stride", 8.0), _init("sp44", [4, 4], np.int64),
             _init("sp22", [2, 2], np.int64), _init("flat", [1, 8, 64], np.int64)]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["f0"], name="stem", pads=[1, 1, 1, 1]),
        n("Sigmoid", ["f0"], ["f0s"], name="silu_sig"),
        n("Mul", ["f0", "f0s"], ["f1"], name="silu_mul"),
        n("Conv", ["f1", "w1"], ["p"], name="pred"),
        n("Split", ["p", "sp44"], ["box", "cls"], name="split_box_cls", axis=1),
        n("Sigmoid", ["cls"], ["score"], name="cls_sigmoid"),
        n("Split", ["box", "sp22"], ["lt", "rb"], name="split_lt_rb", axis=1),
        n("Sub", ["anchors", "lt"], ["x1y1"], name="x1y1"),
        n("Add", ["anchors", "rb"], ["x2y2"], name="x2y2"),
        n("Add", ["x1y1", "x2y2"], ["csum"], name="c_sum"),
        n("Mul", ["csum", "half"], ["cxy"], name="c_xy"),
        n("Sub", ["x2y2", "x1y1"], ["wh"], name="wh"),
        n("Concat", ["cxy", "wh"], ["xywh"], name="cat_box", axis=1),
        n("Mul", ["xywh", "stride"], ["boxes"], name="scale_stride"),
        n("Concat", ["boxes", "score"], ["out"], name="cat_out", axis=1),
        n("Reshape", ["out", "flat"], ["y"], name="flatten")]
    return _model(nodes, inits, [1, 8, 8, 8], [1, 8, 64])


def test_yolo_head_runs_wholly_on_the_npu_and_the_paths_agree() -> None:
    model = yolo_head()
    summary = ortnpu.evaluate(model, "tflite-int8").summary
    assert (summary["npu_nodes"], summary["nodes"]) == (16, 16)   # main: 12 of 16
    data = _data((1, 8, 8, 8))
    npu = ortnpu.quantize(model, "tflite-int8", data)
    ops = {n.op_type for n in npu.graph.node}
    assert {"Slice_i8", "Sub_i8"} <= ops and not ops & {"Split", "Sub"}
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.02 * np.abs(ref).max()


def test_transformer_sub_moves_to_the_npu() -> None:
    model = transformer()
    report = ortnpu.evaluate(model, "tflite-int8")
    # 15 of 24 before Sub lowered (ln_sub on the CPU), 16 with it, 18 with the two attention
    # MatMuls (TFLite's BATCH_MATMUL) on the NPU, 19 with Softmax, 21 with the two means
    # (TFLite MEAN), 23 with Sqrt → Div as RSQRT · MUL, and the five-node erf GELU fused into
    # one Gelu (TFLite's GELU): 20 nodes after fusion, all on the NPU
    assert report.summary["npu_nodes"] == 20
    plan = report.plan
    assert [plan.op_types[n] for n in plan.order if plan.placement[n] == "CPU"] == []
    data = _data((1, 8, 16), n=8)
    npu = ortnpu.quantize(model, "tflite-int8", data)
    ops = [n.op_type for n in npu.graph.node]
    # the variance's Mul(d, d) of d = Sub(y, mu) is TFLite's SQUARED_DIFFERENCE(y, mu); the
    # Sqrt's own table is unused (the Div reads RSQRT of its input) and dropped; two tables
    # remain: the RSQRT and the GELU
    assert {"Sub_i8", "SquaredDifference_i8"} <= set(ops) and ops.count("Lut_i8") == 2
    assert not {"Sqrt", "Div"} & set(ops)
    _three_paths(npu, data[0])


def test_layout_ops_lower_and_agree() -> None:
    """Split (sizes, and equal parts of opset 18), Slice with a negative step, Squeeze and
    Unsqueeze (negative axes, dynamic batch) become Slice and Reshape nodes."""
    rng = np.random.default_rng(0)
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3))), _init("sp", [1, 3], np.int64),
             _init("st", [0, 3], np.int64), _init("en", [2, 2], np.int64),
             _init("ax", [1, 3], np.int64), _init("stp", [1, -1], np.int64),
             _init("sqax", [-1], np.int64)]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             n("Split", ["c", "sp"], ["s0", "s1"], name="split", axis=1),
             n("Slice", ["s1", "st", "en", "ax", "stp"], ["sl"], name="slice"),
             n("Squeeze", ["sl", "sqax"], ["u"], name="sq"),
             n("Unsqueeze", ["u", "sqax"], ["sq"], name="unsq"),
             n("Split", ["s0"], ["e0", "e1"], name="split_eq", axis=2, num_outputs=2),
             n("Concat", ["e0", "e1"], ["cat"], name="cat", axis=2),
             n("Add", ["cat", "sq"], ["y"], name="add")]
    model = _model(nodes, inits, ["N", 3, 8, 8], ["N", 2, 8, 8])
    summary = ortnpu.evaluate(model, "tflite-int8").summary
    assert summary["cpu_nodes"] == 0
    data = _data((2, 3, 8, 8))
    npu = ortnpu.quantize(model, "tflite-int8", data)
    assert not {n.op_type for n in npu.graph.node} & {"Split", "Slice", "Squeeze", "Unsqueeze"}
    y = _three_paths(npu, data[0])
    assert y.shape == (2, 2, 8, 8)


def test_split_of_a_dynamic_axis_is_refused_with_a_reason() -> None:
    n = helper.make_node
    graph = helper.make_graph(
        [n("Split", ["x"], ["a", "b"], name="split_dyn", axis=1, num_outputs=2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, "W"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [4, None]) for o in "ab"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    text = ortnpu.evaluate(model, "tflite-int8").to_text()
    assert "split_dyn" in text and "equal parts need a static size of axis 1" in text


def test_sub_negates_the_second_operand_only() -> None:
    """Sub's reference is Add's with b's multiplier negated: a - b exactly with unit scales,
    and swapping the operands negates the result (where it does not saturate)."""
    a = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    b = a.T.copy()
    attrs = {"a_zp": 0, "b_zp": 0, "y_zp": 0, "left_shift": 20, "a_multiplier": 1 << 30,
             "a_shift": 0, "b_multiplier": 1 << 30, "b_shift": 0, "y_multiplier": 1 << 30,
             "y_shift": -18, "act_min": -128, "act_max": 127}
    ab = Sub.run_reference([a, b], attrs).astype(np.int64)
    ba = Sub.run_reference([b, a], attrs).astype(np.int64)
    diff = a.astype(np.int64) - b
    assert np.array_equal(ab, np.clip(diff, -128, 127))
    inside = np.abs(diff) <= 127
    assert np.array_equal(ab[inside], -ba[inside])
    assert Sub.name in NATIVE_OPS and Slice.name in NATIVE_OPS   # compiled-program steps


def test_compiled_program_runs_the_new_layers() -> None:
    """The detector head's Split (Slice layers) and Sub run inside its compiled program, with
    the outputs of the per-layer path."""
    pytest.importorskip("ortnpu.domain._native")
    model = yolo_head()
    data = _data((1, 8, 8, 8))
    npu = ortnpu.quantize(model, "tflite-int8", data)
    ops = {n.op_type.rsplit("_", 1)[0] for n in npu.graph.node}
    assert {"Slice", "Sub"} <= ops
    sess = ortnpu.InferenceSession(npu)
    assert sess.compile_reports and all(r.native for r in sess.compile_reports), \
        sess.compile_reports
    _three_paths(npu, data[0])


def test_max_min_with_constant_and_requantized_operands() -> None:
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv"),
             n("Max", ["c", "zero"], ["r"], name="max_const"),
             n("Mul", ["c", "three"], ["c3"], name="wide"),
             n("Min", ["r", "c3"], ["y"], name="min_two")]
    inits = [_init("w", rng.standard_normal((4, 3, 1, 1))), _init("zero", 0.0),
             _init("three", 3.0)]
    model = _model(nodes, inits, [1, 3, 5, 5], [1, 4, 5, 5])
    data = _data((1, 3, 5, 5))
    npu = ortnpu.quantize(model, "tflite-int8", data)
    ops = [n.op_type for n in npu.graph.node]
    assert "Maximum_i8" in ops and "Minimum_i8" in ops and "Requantize_i8" in ops
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()


def test_maximum_refuses_operands_of_another_type() -> None:
    with pytest.raises(ortnpu.KernelError, match="requantize it first"):
        Maximum.run_reference([np.zeros(3, np.int8), np.zeros(3, np.int16)], {}, np.int8)
    with pytest.raises(ortnpu.KernelError, match="do not broadcast"):
        Maximum.run_reference([np.zeros(3, np.int8), np.zeros(4, np.int8)], {}, np.int8)


@pytest.mark.parametrize("op", ["LeakyRelu", "Elu", "Gelu", "GeluTanh", "HardSigmoid"])
def test_activation_tables_run_on_the_npu(op: str) -> None:
    attrs = {"LeakyRelu": {"alpha": 0.1}, "GeluTanh": {"approximate": "tanh"}}.get(op, {})
    onnx_op = "Gelu" if op.startswith("Gelu") else op
    model = _model([helper.make_node(onnx_op, ["x"], ["y"], name="act", **attrs)], [],
                   [1, 64], [1, 64], opset=20)
    report = ortnpu.evaluate(model, "tflite-int8")
    assert report.summary["npu_nodes"] == 1
    data = _data((1, 64), n=4)
    npu = ortnpu.quantize(model, "tflite-int8", data)
    assert [n.op_type for n in npu.graph.node if n.domain] == ["Lut_i8"]
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


def test_leaky_relu_table_is_tflite_kernel() -> None:
    """The table equals QuantizeLeakyRelu computed value by value with TFLite's formula."""
    xp, yp = QuantParams(0.05, -3, "int8"), QuantParams(0.04, 7, "int8")
    arith = load_target("tflite-int8").arithmetic
    table = leaky_relu_table(xp, yp, 0.2, "tflite_double", arith)
    mi = quantize_multiplier(float(np.float32(np.float32(0.05) / np.float32(0.04))))
    ma = quantize_multiplier(float(np.float32(np.float32(np.float32(0.05) * np.float32(0.2))
                                              / np.float32(0.04))))
    for q in range(-128, 128):
        v = q + 3
        m, s = mi if v >= 0 else ma
        want = int(np.clip(int(rescale(np.int64(v), m, s, "tflite_double")) + 7, -128, 127))
        assert int(table[q + 128]) == want


def test_leaky_relu_with_negative_alpha_stays_on_the_cpu_with_a_reason() -> None:
    model = _model([helper.make_node("LeakyRelu", ["x"], ["y"], name="lr", alpha=-0.5)], [],
                   [1, 8], [1, 8])
    text = ortnpu.evaluate(model, "tflite-int8").to_text()
    assert "negative alpha" in text


def test_qdq_dequantize_quantize_pair_becomes_a_requantize() -> None:
    """x → Q(s1) → DQ → Q(s2) → DQ: a requantization (TFLite's QUANTIZE int8 → int8), which
    import_qdq used to refuse as a tensor quantized twice."""
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s1", "z1"], ["q1"], name="q1"),
             n("DequantizeLinear", ["q1", "s1", "z1"], ["d1"], name="d1"),
             n("QuantizeLinear", ["d1", "s2", "z2"], ["q2"], name="q2"),
             n("DequantizeLinear", ["q2", "s2", "z2"], ["y"], name="d2")]
    inits = [_init("s1", 0.05), _init("z1", 3, np.int8), _init("s2", 0.031),
             _init("z2", -7, np.int8)]
    model = _model(nodes, inits, [1, 64], [1, 64], opset=19)
    npu = ortnpu.import_qdq(model, "tflite-int8")
    assert [n.op_type for n in npu.graph.node if n.domain] == ["Requantize_i8"]
    x = {"x": np.linspace(-7, 7, 64, dtype=np.float32).reshape(1, 64)}
    y = _three_paths(npu, x)
    # TFLite's QUANTIZE: rescale by the double ratio of the scales (not a float re-rounding)
    q1 = np.clip(np.rint(x["x"] / np.float32(0.05)) + 3, -128, 127).astype(np.int64)
    m, s = quantize_multiplier(float(np.float64(np.float32(0.05)) / np.float64(np.float32(0.031))))
    q2 = np.clip(rescale(q1 - 3, m, s, "tflite_double") - 7, -128, 127)
    assert np.array_equal(y, (q2 + 7).astype(np.float32) * np.float32(0.031))
