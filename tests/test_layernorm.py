"""A transformer's float patterns on the NPU (issue 14): ONNX LayerNormalization and its
decomposed form (Sqrt → Div as RSQRT · MUL, the variance's square as SQUARED_DIFFERENCE), Erf,
Gather of constant indices and the rank-5 q/k/v split. Each model runs three ways that must
agree bit for bit (default session, per-node Python session, integer export on stock
onnxruntime); evaluate and quantize place the same nodes. LiteRT equality of the ops is in
tests/oracle/test_litert_oracle_layernorm.py."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import transformer
from onnx import TensorProto, helper, numpy_helper
from test_tflite_ops import _three_paths

import ortnpu
from ortnpu.quant.params import QuantParams
from ortnpu.quant.quantizer import QuantizationResult
from ortnpu.quant.tables import inv_sqrt_multiplier, rsqrt_int8_table, sqrt_table

TARGETS = ("tflite-int8", "tflite-a16w8")   # n2d2-int8 has no MEAN rescale (ReduceMean)


def _init(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _data(shape: tuple[int, ...], n: int = 6, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)}
            for _ in range(n)]


def layernorm_model(axis: int = -1, bias: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Linear → LayerNormalization (opset 17) → Linear on [1, 6, 12]."""
    rng = np.random.default_rng(3)
    inits = [_init("w0", rng.standard_normal((12, 12)) * 0.4),
             _init("w1", rng.standard_normal((12, 12)) * 0.4),
             _init("gamma", rng.uniform(0.5, 1.5, 12 if axis == -1 else (6, 12))),
             _init("beta", rng.standard_normal(12 if axis == -1 else (6, 12)) * 0.1)]
    n = helper.make_node
    ln_in = ["h", "gamma", "beta"] if bias else ["h", "gamma"]
    nodes = [n("MatMul", ["x", "w0"], ["h"], name="fc0"),
             n("LayerNormalization", ln_in, ["ln"], name="ln", axis=axis, epsilon=1e-5),
             n("MatMul", ["ln", "w1"], ["y"], name="fc1")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 6, 12])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 6, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _cpu(model: onnx.ModelProto, target: str) -> dict[str, str]:
    plan = ortnpu.evaluate(model, target).plan
    return {n: plan.reasons[n] for n in plan.order if plan.placement[n] == "CPU"}


def _quantized_cpu(model: onnx.ModelProto, target: str,
                   data: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, dict[str, str]]:
    res = QuantizationResult()
    npu = ortnpu.quantize(model, target, data, result=res)
    return npu, {p.node: p.reason for p in res.placements if p.device == "CPU"}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("bias", "opset"), [(True, 17), (False, 18)])
def test_layernormalization_runs_on_the_npu(target: str, bias: bool, opset: int) -> None:
    model = layernorm_model(bias=bias, opset=opset)
    data = _data((1, 6, 12))
    assert _cpu(model, target) == {}
    npu, cpu = _quantized_cpu(model, target, data)
    assert cpu == {}
    ops = {n.op_type.rsplit("_", 1)[0] for n in npu.graph.node}
    assert "LayerNormalization" not in ops and "Lut" in ops
    if target == "tflite-int8":   # int8: TFLite's SQUARED_DIFFERENCE; int16 has none
        assert "SquaredDifference" in ops
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.1 * np.abs(ref).max()


def test_layernormalization_equals_its_decomposed_form() -> None:
    """The ONNX op and the pattern a decomposing exporter writes give the same integers."""
    from ortnpu.passes import DecomposeLayerNorm

    model = layernorm_model()
    decomposed = DecomposeLayerNorm()(model).model
    assert "LayerNormalization" not in {n.op_type for n in decomposed.graph.node}
    data = _data((1, 6, 12))
    a = ortnpu.InferenceSession(ortnpu.quantize(model, "tflite-int8", data)).run(None, data[1])
    b = ortnpu.InferenceSession(ortnpu.quantize(decomposed, "tflite-int8", data)).run(
        None, data[1])
    assert np.array_equal(a[0], b[0])


def test_layernormalization_over_other_axes_says_why() -> None:
    model = layernorm_model(axis=-2)
    cpu = _cpu(model, "tflite-int8")
    assert list(cpu) == ["ln"]
    assert "decomposes a LayerNorm over the last axis only" in cpu["ln"]
    _, qcpu = _quantized_cpu(model, "tflite-int8", _data((1, 6, 12)))
    assert qcpu == cpu


def test_transformer_encoder_all_on_the_npu() -> None:
    """The test encoder (decomposed LayerNorm, five-node erf GELU): every node on the NPU, the
    GELU fused into one Gelu table as TFLite's converter fuses it (TFLite has no ERF)."""
    model = transformer(2)
    for target in ("tflite-int8", "tflite-a16w8"):
        assert _cpu(model, target) == {}
    data = [{"x": np.random.default_rng(k).standard_normal((1, 8, 16)).astype(np.float32)}
            for k in range(8)]
    npu, qcpu = _quantized_cpu(model, "tflite-int8", data)
    assert qcpu == {}
    assert not any(n.op_type in ("Erf", "Gelu") for n in npu.graph.node)
    _three_paths(npu, data[0])


def test_lone_erf_stays_on_the_cpu_with_its_reason() -> None:
    """An Erf that is no GELU (input scaled by 0.7, not 1/√2) is not fused: it stays on the
    CPU, and evaluate and quantize say so alike."""
    model = transformer(2, gelu=False)
    cpu = _cpu(model, "tflite-int8")
    assert sorted(cpu) == ["b0/gelu_erf", "b1/gelu_erf"]
    assert all("no integer lowering for Erf" in r for r in cpu.values())
    data = [{"x": np.random.default_rng(k).standard_normal((1, 8, 16)).astype(np.float32)}
            for k in range(8)]
    npu, qcpu = _quantized_cpu(model, "tflite-int8", data)
    assert qcpu == cpu
    _three_paths(npu, data[0])


def _div_model(divisor: str) -> onnx.ModelProto:
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r"], name="relu"),
             n("Add", ["r", "one"], ["r1"], name="plus_one")]
    if divisor == "sqrt":
        nodes.append(n("Sqrt", ["r1"], ["d"], name="root"))
    elif divisor == "relu":
        nodes.append(n("Relu", ["r1"], ["d"], name="relu2"))
    nodes.append(n("Div", ["x", "d" if divisor != "const" else "three"], ["y"], name="div"))
    graph = helper.make_graph(nodes, "div", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8])], [_init("one", 1.0), _init("three", 3.0)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("divisor", ["sqrt", "const", "relu"])
def test_div_reasons_are_true(divisor: str) -> None:
    """Div by a Sqrt → RSQRT · MUL, by a constant → MUL; by another activation it stays on the
    CPU and the reason says which divisions lower (no target edit would move it)."""
    model = _div_model(divisor)
    data = _data((1, 4, 8))
    cpu = _cpu(model, "tflite-int8")
    npu, qcpu = _quantized_cpu(model, "tflite-int8", data)
    assert qcpu == cpu
    if divisor == "relu":
        assert list(cpu) == ["div"]
        assert "by a constant" in cpu["div"] and "by a Sqrt" in cpu["div"]
        assert "op_types" not in cpu["div"]
        return
    assert cpu == {}
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max() + 0.05


def qkv_model(heads: int = 2, tokens: int = 5, dim: int = 4, paddle: bool = False
              ) -> onnx.ModelProto:
    """timm's attention split: Reshape to rank 5, Transpose(2, 0, 3, 1, 4), Gather 0/1/2 (or
    Paddle's Slice [i, i + 1) of axis 0 and Squeeze), and the class-token Gather on axis 1."""
    rng = np.random.default_rng(1)
    width = heads * dim
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wqkv"], ["qkv"], name="qkv"),
             n("Reshape", ["qkv", "shape5"], ["qkv5"], name="reshape5"),
             n("Transpose", ["qkv5"], ["qkvt"], name="permute", perm=[2, 0, 3, 1, 4])]
    if paddle:
        for k, p in enumerate("qkv"):
            nodes += [n("Slice", ["qkvt", f"s{k}", f"s{k + 1}", "ax0"], [f"{p}5"],
                        name=f"slice_{p}"),
                      n("Squeeze", [f"{p}5", "ax0"], [p], name=f"squeeze_{p}")]
    else:
        nodes += [n("Gather", ["qkvt", f"i{k}"], [f"{p}"], name=f"take_{p}", axis=0)
                  for k, p in enumerate("qkv")]
    nodes += [n("Transpose", ["k"], ["kt"], name="kt", perm=[0, 1, 3, 2]),
              n("MatMul", ["q", "kt"], ["s"], name="scores"),
              n("MatMul", ["s", "v"], ["o"], name="context"),
              n("Gather", ["o", "i0"], ["cls"], name="cls_token", axis=2),
              n("Reshape", ["cls", "flat"], ["y"], name="flatten")]
    inits = [_init("wqkv", rng.standard_normal((width, 3 * width)) * 0.3),
             _init("shape5", [1, tokens, 3, heads, dim], np.int64),
             _init("flat", [1, heads * dim], np.int64)]
    inits += [_init(f"i{k}", k, np.int64) for k in range(3)]
    inits += [_init(f"s{k}", [k], np.int64) for k in range(4)] + [_init("ax0", [0], np.int64)]
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, tokens, width])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, heads * dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("paddle", [False, True])
def test_rank5_qkv_split_and_gathers_run_on_the_npu(paddle: bool) -> None:
    model = qkv_model(paddle=paddle)
    data = [{"x": np.random.default_rng(k).standard_normal((1, 5, 8)).astype(np.float32)}
            for k in range(6)]
    assert _cpu(model, "tflite-int8") == {}
    npu, cpu = _quantized_cpu(model, "tflite-int8", data)
    assert cpu == {}
    assert not {"Gather", "Transpose", "Reshape", "Slice", "Squeeze"} & {
        n.op_type for n in npu.graph.node}
    y = _three_paths(npu, data[0])
    ref = ort.InferenceSession(model.SerializeToString()).run(None, data[0])[0]
    assert np.abs(y - ref).max() < 0.2 * np.abs(ref).max()   # two 8-bit products


def test_gather_of_scattered_indices_says_why() -> None:
    model = qkv_model()
    (take,) = [i for i in model.graph.initializer if i.name == "i0"]
    model.graph.initializer.append(_init("spread", [0, 2], np.int64))
    for node in model.graph.node:
        if node.name == "cls_token":
            node.input[1] = "spread"
            node.output[0] = "cls2"
    model.graph.node.append(helper.make_node("ReduceMax", ["cls2"], ["cls"], name="mx",
                                             axes=[2], keepdims=0))
    cpu = _cpu(model, "tflite-int8")
    assert "not consecutive" in cpu["cls_token"]
    assert take is not None


def test_inv_sqrt_multiplier_is_close_to_the_reciprocal_root() -> None:
    v = np.array([2, 3, 4, 7, 255, 1000, 65535, 1 << 20, (1 << 31) - 1])
    m, s = inv_sqrt_multiplier(v)
    got = m * 2.0 ** (s.astype(np.float64) - 31)
    assert np.allclose(got, 1 / np.sqrt(v), rtol=2e-6)
    assert inv_sqrt_multiplier(np.array([0, 1]))[0].tolist() == [(1 << 31) - 1] * 2


def test_rsqrt_and_sqrt_tables_at_the_edges() -> None:
    """v = 0 (and, refused by TFLite, v < 0) gives the type maximum; large v is 1/sqrt(v)
    within one step; SQRT truncates."""
    xp, yp = QuantParams(0.01, -20, "int8"), QuantParams(0.05, -128, "int8")
    table = rsqrt_int8_table(xp, yp).astype(np.int64)
    q = np.arange(-128, 128)
    assert np.all(table[q <= -20] == 127)
    big = q > 0
    want = 1 / np.sqrt(0.01 * (q[big] + 20)) / 0.05 - 128
    assert np.all(np.abs(table[big] - np.clip(want, -128, 127)) <= 1)
    root = sqrt_table(xp, QuantParams(0.02, -128, "int8")).astype(np.int64)
    assert np.all(root[q <= -20] == -128)
    exact = np.sqrt(0.01 * (q[big] + 20)) / 0.02 - 128   # float32 then truncated: within 1
    assert np.all((root[big] <= exact + 1e-4) & (root[big] > exact - 1.001))
