"""One placement for evaluate and quantize, and reasons whose advice really moves the node.

The graphs are the shapes that made evaluate and quantize disagree on real models: attention
(MatMul of two activations, a decomposed LayerNorm, an Erf GELU), an unrolled LSTM cell next to
an ONNX LSTM, a detector head (Split, Resize, Softmax/DFL), on the default target, on a target
file that adds Sub/ReduceMean/Erf, and on one that drops Conv.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from graphs import transformer
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.placement import place
from ortnpu.quant.quantizer import QuantizationResult
from ortnpu.target import Target, load_target, parse_target

RNG = np.random.default_rng(7)


def _w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _c(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes: list, inputs: dict[str, list[int]], outputs: dict[str, list[int]],
           inits: list) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v)
                     for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _n(op: str, ins: list[str], out: str | list[str], name: str, **kw: object) -> onnx.NodeProto:
    return helper.make_node(op, ins, [out] if isinstance(out, str) else out, name=name, **kw)


def attention() -> onnx.ModelProto:
    """Self-attention, residual, decomposed LayerNorm, Erf GELU: [1, 8, 16]."""
    return transformer(1, gelu=False)


def lstm_like() -> onnx.ModelProto:
    """One unrolled LSTM step (Gemm, Split into gates, Sigmoid/Tanh, Mul/Add) and an ONNX LSTM."""
    nodes = [
        _n("Gemm", ["x", "wx", "bx"], "gx", "gate_x", transB=1),
        _n("MatMul", ["h0", "wh"], "gh", "gate_h"),
        _n("Add", ["gx", "gh"], "gates", "gate_sum"),
        _n("Split", ["gates", "four"], ["gi", "gf", "gc", "go"], "gate_split", axis=1),
        _n("Sigmoid", ["gi"], "i", "sig_i"), _n("Sigmoid", ["gf"], "f", "sig_f"),
        _n("Tanh", ["gc"], "cc", "tanh_c"), _n("Sigmoid", ["go"], "o", "sig_o"),
        _n("Mul", ["f", "c0"], "fc", "forget"), _n("Mul", ["i", "cc"], "ic", "input"),
        _n("Add", ["fc", "ic"], "c1", "cell"), _n("Tanh", ["c1"], "tc", "tanh_cell"),
        _n("Mul", ["o", "tc"], "h1", "hidden"),
        _n("Unsqueeze", ["x", "zero"], "xs", "to_seq"),
        _n("LSTM", ["xs", "lw", "lr"], ["ly", "lh"], "lstm", hidden_size=4),
        _n("Squeeze", ["lh", "zero"], "lh2", "lstm_squeeze"),
    ]
    inits = [_w("wx", 16, 8), _w("bx", 16, scale=0.1), _w("wh", 4, 16), _w("lw", 1, 16, 8),
             _w("lr", 1, 16, 4), _c("four", [4, 4, 4, 4], np.int64),
             _c("zero", [0], np.int64)]
    return _model(nodes, {"x": [1, 8], "h0": [1, 4], "c0": [1, 4]},
                  {"h1": [1, 4], "c1": [1, 4], "lh2": [1, 4]}, inits)


def detector_head() -> onnx.ModelProto:
    """Conv+Relu stem, Split, Resize, MaxPool, Concat, Softmax DFL through a Conv, Sigmoid."""
    nodes = [
        _n("Conv", ["x", "w1", "b1"], "c1", "stem", pads=[1, 1, 1, 1]),
        _n("Relu", ["c1"], "r1", "stem_relu"),
        _n("Split", ["r1", "halves"], ["a", "b"], "split", axis=1),
        _n("Resize", ["a", "", "scales"], "up", "upsample", mode="nearest"),
        _n("MaxPool", ["up"], "mp", "pool", kernel_shape=[2, 2], strides=[2, 2]),
        _n("Concat", ["mp", "b"], "cat", "concat", axis=1),
        _n("Conv", ["cat", "w2"], "head", "head"),
        _n("Split", ["head", "parts"], ["box", "cls"], "head_split", axis=1),
        _n("Reshape", ["box", "box_shape"], "box4", "box_reshape"),
        _n("Softmax", ["box4"], "box_sm", "dfl_softmax", axis=1),
        _n("Conv", ["box_sm", "dfl_w"], "dfl", "dfl_conv"),
        _n("Sigmoid", ["cls"], "scores", "cls_sigmoid"),
    ]
    inits = [_w("w1", 8, 3, 3, 3), _w("b1", 8, scale=0.1), _w("w2", 18, 8, 1, 1),
             _c("halves", [4, 4], np.int64), _c("parts", [16, 2], np.int64),
             _c("scales", [1, 1, 2, 2]), _c("box_shape", [1, 4, 4, 64], np.int64),
             numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1),
                                     "dfl_w")]
    return _model(nodes, {"x": [1, 3, 8, 8]}, {"dfl": [1, 1, 4, 64], "scores": [1, 2, 8, 8]},
                  inits)


def _with_ops(add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Target:
    """The default preset as a target file that adds/removes op types (parsed from TOML)."""
    base = load_target("tflite-int8")
    ops = [o for o in base.support.op_types if o not in remove] + list(add)
    text = base.to_toml()
    text = re.sub(r"(?m)^name = .*$", 'name = "custom"', text, count=1)
    text = re.sub(r"(?m)^op_types = \[.*?\]$", "op_types = [" + ", ".join(
        f'"{o}"' for o in ops) + "]", text, flags=re.S)
    target = parse_target(text)
    assert target.support.op_types == tuple(ops)
    return target


def dynamic_attention() -> onnx.ModelProto:
    """Two attention blocks whose sequence length is dynamic: shape reasons everywhere."""
    model = transformer(2, gelu=False)
    for value in (model.graph.input[0], model.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[1]
        dim.ClearField("dim_value")
        dim.dim_param = "T"
    return model


GRAPHS: dict[str, Callable[[], onnx.ModelProto]] = {
    "attention": attention, "lstm": lstm_like, "detector": detector_head,
    "dynamic_attention": dynamic_attention}
TARGETS: dict[str, Callable[[], Target]] = {
    "default": lambda: load_target("tflite-int8"),
    "adds_sub_reducemean_erf": lambda: _with_ops(add=("Sub", "ReduceMean", "Erf")),
    "no_conv": lambda: _with_ops(remove=("Conv",)),
    "tight": lambda: _tight(),
}


def _tight() -> Target:
    """Small kernels, MaxPool and Sigmoid left to the CPU, Concat not listed: several limits."""
    t = _with_ops(remove=("Concat",))
    return dataclasses.replace(t, name="tight", support=dataclasses.replace(
        t.support, max_kernel=1, cpu_preferred=("Softmax", "MaxPool", "Sigmoid")))


def _samples(model: onnx.ModelProto, n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    shapes = {i.name: [d.dim_value or 8 for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input}
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
            for _ in range(n)]


def _both(model: onnx.ModelProto, target: Target
          ) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """CPU node -> reason, then node -> device, from evaluate and from quantize."""
    report = ortnpu.evaluate(model, target)
    res = QuantizationResult()
    # placement does not depend on the range method: minmax skips auto's output check (two
    # more quantizations and runs per call, which made these tests the suite's slowest)
    ortnpu.quantize(model, target, _samples(model), optimize=False, result=res,
                    method="minmax")
    evaluated = {n: report.plan.reasons[n] for n in report.plan.cpu_nodes}
    quantized = {p.node: p.reason for p in res.placements if p.device == "CPU"}
    return (evaluated, quantized, dict(report.plan.placement),
            {p.node: p.device for p in res.placements})


@pytest.mark.parametrize("target_name", list(TARGETS))
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_evaluate_and_quantize_agree(graph: str, target_name: str) -> None:
    model, target = GRAPHS[graph](), TARGETS[target_name]()
    evaluated, quantized, eval_devices, quant_devices = _both(model, target)
    assert evaluated == quantized
    # every node, NPU ones included (the detector runs whole on the default targets since its
    # DFL Softmax moves to the last axis: the rewritten nodes must match too)
    assert eval_devices == quant_devices
    assert len(eval_devices) >= len(model.graph.node)


def test_reasons_on_the_defect_graphs() -> None:
    # TFLite's BATCH_MATMUL multiplies two activations: the attention products run on the NPU
    tflite = place(attention(), "tflite-int8")
    assert tflite.placement["scores"] == "NPU" and tflite.placement["context"] == "NPU"
    plan = place(attention(), "n2d2-int8")
    # attention scores: the target refuses two activations, ortnpu could lower them
    assert plan.placement["scores"] == "CPU" and plan.placement["context"] == "CPU"
    assert "matmul_two_activations = false" in plan.reasons["scores"]
    assert plan.placement["q_proj"] == "NPU"
    custom = place(attention(), _with_ops(add=("Erf",)))
    assert custom.placement["ln_sub"] == "NPU"   # Sub lowers (TFLite's SUB)
    assert custom.placement["ln_mean"] == "NPU"  # the channel mean (TFLite's MEAN)
    # Sqrt → Div lowers as TFLite's RSQRT · MUL
    assert custom.placement["ln_sqrt"] == "NPU" and custom.placement["ln_div"] == "NPU"
    assert custom.reasons["gelu_erf"] == ("Erf 'gelu_erf': ortnpu has no integer lowering for "
                                          "Erf yet; it runs on the CPU in float")
    no_div = place(attention(), _with_ops(remove=("Div",)))
    assert no_div.reasons["ln_div"] == (
        "Div 'ln_div': op type Div is not among the ops the target runs ([support] op_types); "
        "add it to op_types in the target file to run it on the NPU")
    # Softmax is both cpu_preferred and unlowered: no advice to edit cpu_preferred
    assert "cpu_preferred" not in custom.reasons["softmax"]
    det = place(detector_head(), _with_ops(remove=("Conv",)))
    assert det.reasons["stem"] == ("Conv 'stem': op type Conv is not among the ops the target "
                                   "runs ([support] op_types); add it to op_types in the target "
                                   "file to run it on the NPU")
    # no NPU producer to fuse into: the Relu runs alone (a requantize with the clamp)
    assert det.placement["stem_relu"] == "NPU" and "stem_relu" not in det.fused_into
    default = place(detector_head(), "tflite-int8")
    assert default.fused_into == {"stem_relu": "stem"}
    assert default.reasons["stem_relu"] == "Relu 'stem_relu': fused into Conv 'stem' as its " \
                                           "output clamp"


def test_cpu_groups_count_by_cause_and_op() -> None:
    plan = place(attention(), "tflite-int8")
    groups = {(cause, op): nodes for cause, op, nodes in plan.cpu_groups()}
    key = ("ortnpu has no integer lowering for Erf yet; it runs on the CPU in float", "Erf")
    assert groups[key] == ["gelu_erf"]
    assert sum(len(v) for v in groups.values()) == len(plan.cpu_nodes)


def _follow(reason: str, node: onnx.NodeProto, target: Target) -> Target | None:
    """The target edited as the reason advises, or None when the reason gives no advice."""
    s = target.support
    changes: dict[str, object] = {}
    if "add it to op_types" in reason:
        changes["op_types"] = (*s.op_types, node.op_type)
    if "remove it from" in reason and "cpu_preferred" in reason:
        changes["cpu_preferred"] = tuple(o for o in s.cpu_preferred if o != node.op_type)
    for key in re.findall(r"\[support\] (\w+)", reason):
        value = getattr(s, key)
        if key in ("op_types", "cpu_preferred"):
            continue
        if isinstance(value, bool):
            changes[key] = True
        elif key == "min_subgraph_nodes":
            changes[key] = 1
        elif isinstance(value, int):
            changes[key] = 1 << 20
        elif key == "dtypes":
            changes[key] = (*value, *re.findall(r"is (\w+);", reason))
        else:  # pragma: no cover - a new key needs a rule here
            raise AssertionError(f"no rule to follow advice on {key}: {reason}")
    if not changes:
        return None
    return dataclasses.replace(target, name=target.name + "-edited",
                               support=dataclasses.replace(s, **changes))


ADVICE = ("add it to op_types", "remove it from", "[support]")


@pytest.mark.parametrize("target_name", list(TARGETS))
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_following_advice_moves_the_node(graph: str, target_name: str) -> None:
    model, target = GRAPHS[graph](), TARGETS[target_name]()
    plan = place(model, target)
    nodes = {n.name: n for n in model.graph.node}
    followed = 0
    for name in plan.cpu_nodes:
        reason = plan.reasons[name]
        edited = _follow(reason, nodes[name], target)
        if edited is None:
            assert not any(a in reason for a in ADVICE), reason
            continue
        followed += 1
        after = place(model, edited)
        assert after.placement[name] == "NPU", (reason, after.reasons[name])
        evaluated, quantized, _, _ = _both(model, edited)
        assert name not in evaluated and name not in quantized, (reason, quantized.get(name))
    if graph == "detector" and target_name in ("no_conv", "tight"):
        assert followed >= 3


def test_no_lowering_is_not_fixed_by_the_target() -> None:
    """The honest half: listing an op ortnpu cannot lower does not move it, as the reason says."""
    model = attention()
    target = _with_ops(add=("Erf",))
    target = dataclasses.replace(target, support=dataclasses.replace(
        target.support, cpu_preferred=(), matmul_two_activations=True))
    evaluated, quantized, _, _ = _both(model, target)
    assert evaluated == quantized
    assert {n for n, r in evaluated.items() if "no integer lowering" in r} == {"gelu_erf"}
    assert "scores" not in evaluated and "context" not in evaluated


def test_force_npu_cannot_override_a_missing_lowering() -> None:
    model = detector_head()
    (up,) = [n for n in model.graph.node if n.name == "upsample"]
    (mode,) = [a for a in up.attribute if a.name == "mode"]
    mode.s = b"cubic"   # TFLite has no cubic resize: ortnpu cannot lower it
    plan = place(model, "tflite-int8", force_npu=["Resize", "dfl_softmax"])
    assert plan.placement["upsample"] == "CPU"
    assert plan.reasons["upsample"].startswith(
        "Resize 'upsample': forced to the NPU by the user, but mode 'cubic' has no TFLite kernel")
    attn = place(attention(), "n2d2-int8", force_npu=["scores"])
    assert attn.placement["scores"] == "NPU"
    assert "matmul_two_activations" in attn.reasons["scores"]


def test_integer_tensors_stay_on_the_cpu_with_a_true_reason() -> None:
    """An int64 tensor cannot be quantized: the reason says so instead of advising dtypes."""
    nodes = [_n("Cast", ["x"], "xi", "to_int", to=TensorProto.INT64),
             _n("Reshape", ["xi", "shape"], "r", "reshape_int"),
             _n("Cast", ["r"], "y", "to_float", to=TensorProto.FLOAT)]
    model = _model(nodes, {"x": [1, 4]}, {"y": [4]}, [_c("shape", [4], np.int64)])
    plan = place(model, "tflite-int8")
    assert plan.reasons["reshape_int"] == (
        "Reshape 'reshape_int': input 'xi' is int64; ortnpu quantizes float32 tensors only, "
        "so it runs on the CPU in int64")


def test_old_opset_conversion_adds_no_cpu_nodes() -> None:
    """Quantize converts opset 12 to 13 (Squeeze axes become inputs); the converter's Constant
    nodes must not show up as CPU nodes that evaluate never saw (PP-OCRv4 rec: 54 vs 61)."""
    nodes = [_n("Gemm", ["x", "w"], "g", "fc", transB=1), _n("Relu", ["g"], "r", "relu"),
             _n("Unsqueeze", ["r"], "u", "unsq", axes=[1]),
             _n("Squeeze", ["u"], "y", "sq", axes=[1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [_w("w", 4, 8)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    evaluated, quantized, _, _ = _both(model, load_target("tflite-int8"))
    # Squeeze/Unsqueeze lower onto Reshape: every node runs on the NPU, both ways
    assert evaluated == quantized == {}


def test_int16_opset_conversion_folds_nothing_evaluate_did_not() -> None:
    """16-bit targets convert the model to opset 21 (int16 QuantizeLinear) and fold the
    converter's Constant nodes: folding every constant subgraph there too put a Gather of
    constant data (an unrolled LSTM's zero state) on the NPU in quantize while evaluate kept
    it on the CPU (zoo_crnn on tflite-a16w8: 4 CPU nodes against 0)."""
    nodes = [_n("Gather", ["table", "idx"], "row", "gather", axis=0),
             _n("Add", ["x", "row"], "y", "add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(np.ones((2, 1, 4), np.float32), "table"),
                           numpy_helper.from_array(np.array(0, np.int64), "idx")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for name in ("tflite-int8", "tflite-a16w8"):
        evaluated, quantized, eval_devices, quant_devices = _both(model, load_target(name))
        assert evaluated == quantized and "gather" in evaluated, name
        assert eval_devices == quant_devices, name
