"""Is onnxruntime's int8 exact on this CPU? Its convolutions against the exact integer sum.

``python -m ortnpu.bench exactness [--models mobilenet_v2,resnet18_like] [--samples 2]``

The speed benchmark times onnxruntime's int8 session of each model (``quantize_static``, QDQ,
int8 activations and per-channel int8 weights). onnxruntime turns the int8 activations into
uint8 (zero point + 128) and runs each convolution as ``QLinearConv`` u8 x s8. Without
AVX-512 VNNI or AVX-VNNI, its x86 kernels multiply with ``vpmaddubsw``, which adds two u8 x s8
products into a *saturating* int16: when both products are large and of the same sign
(255 * 100 + 255 * 100 > 32767) the sum is clipped and the output is wrong. ortnpu's kernels
never saturate (int16 pair multiply-adds into int32; exactly the reference's bits), which costs
instructions on such CPUs. This check measures what the difference means on real layers and
real inputs, so that the speed tables can say what they compare:

* per group-1 convolution of the model: the layer's real int8 inputs (the QDQ graph run
  unfused on the model's test images), the layer run as onnxruntime runs it (``QLinearConv``,
  uint8 activations, the model's weights, scales and bias), and the exact result (int64
  sums, then onnxruntime's own float requantization): how many outputs differ by more than one
  step (one step is rounding: float scale products and ties), and the largest difference;
* the whole model: onnxruntime's optimized int8 session against the same QDQ graph with
  optimizations off (every Conv then runs in float on the dequantized values): top-1 agreement;
  and the same for the model quantized with 7-bit weights (``reduce_range``, onnxruntime's
  advice for such CPUs: no pair can saturate), which shows what rounding alone accounts for.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ortnpu.bench.models import BenchModel
from ortnpu.bench.speed import CALIBRATION_IMAGES, fixed_batch, free_batch
from ortnpu.comparison import _with_outputs
from ortnpu.domain.ops_linear import Conv
from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """One convolution: outputs compared, how many differ by more than one step, the largest."""

    name: str
    weight_shape: tuple[int, ...]
    outputs: int
    wrong: int
    max_diff: int


@dataclasses.dataclass(frozen=True)
class ModelCheck:
    """A model's layers, what onnxruntime's optimized graph runs, and the whole-model effect."""

    model: str
    samples: int
    layers: list[LayerCheck]     # the convolutions onnxruntime runs as QLinearConv u8 x s8
    convolutions: int            # group-1 convolutions of the QDQ graph (the others run float)
    whole_samples: int           # test inputs of the whole-model comparison
    top1_vs_unfused: float       # onnxruntime int8 vs the same QDQ graph unfused
    top1_vs_unfused_7bit: float  # the same with 7-bit weights (reduce_range: no saturation)

    @property
    def outputs(self) -> int:
        return sum(c.outputs for c in self.layers)

    @property
    def wrong(self) -> int:
        return sum(c.wrong for c in self.layers)


def _session(model: onnx.ModelProto, level: ort.GraphOptimizationLevel,
             optimized_path: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def exact_sum(x: np.ndarray, x_zp: int, w: np.ndarray, bias: np.ndarray, pads: list[int],
              strides: list[int]) -> np.ndarray:
    """The exact int64 accumulator of a group-1 ONNX Conv (``pads`` in ONNX order: top, left,
    bottom, right): the reference kernel's own (ortnpu.domain Conv.accumulate)."""
    attrs = Conv.full_attrs({"x_zp": x_zp, "pad_top": pads[0], "pad_left": pads[1],
                             "pad_bottom": pads[2], "pad_right": pads[3],
                             "stride_h": strides[0], "stride_w": strides[1]})
    return Conv.accumulate([x, w, bias], attrs)


def _qdq_convs(qdq: onnx.ModelProto) -> list[tuple[onnx.NodeProto, ...]]:
    """(DequantizeLinear x, DequantizeLinear w, DequantizeLinear bias or None, Conv,
    QuantizeLinear y) for each group-1 Conv of the QDQ graph."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in qdq.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Conv" or attrs.get("group", 1) != 1:
            continue
        dqx, dqw = producer.get(n.input[0]), producer.get(n.input[1])
        dqb = producer.get(n.input[2]) if len(n.input) > 2 else None
        after = consumers.get(n.output[0], [])
        if (dqx is None or dqx.op_type != "DequantizeLinear" or dqw is None
                or dqw.op_type != "DequantizeLinear" or len(after) != 1
                or after[0].op_type != "QuantizeLinear"):
            continue
        out.append((dqx, dqw, dqb, n, after[0]))
    return out


def check_model(model: BenchModel, samples: int = 2, whole: int = 64) -> ModelCheck:
    """The checks of the module docstring: the layers on ``samples`` test inputs of ``model``,
    the whole model on ``whole``."""
    import ortnpu

    raw = onnx.load(str(model.path))
    if fixed_batch(raw):
        raw = free_batch(raw) or raw
    optimized = ortnpu.optimize(raw)
    name = optimized.graph.input[0].name
    feeds = sample_feeds(name, model.calib[:CALIBRATION_IMAGES])
    qdq = quantize_with_onnxruntime(optimized, feeds)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    x = np.ascontiguousarray(model.test[:samples])

    # the optimized graph onnxruntime runs: the convolutions it runs as QLinearConv on uint8
    # activations (the others stay float there), found by their weight tensor
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        fused = _session(qdq, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, path)
        opt = onnx.load(path)
    opt_inits = {i.name: i for i in opt.graph.initializer}
    fused_u8 = {n.input[3] for n in opt.graph.node if n.op_type == "QLinearConv"
                and n.input[2] in opt_inits
                and opt_inits[n.input[2]].data_type == TensorProto.UINT8}
    convs = _qdq_convs(qdq)
    layers = [c for c in convs if c[1].input[0] in fused_u8]

    # whole model: fused against unfused, on up to ``whole`` test inputs; the same with 7-bit
    # weights (reduce_range), which cannot saturate: what rounding alone accounts for
    xs = np.ascontiguousarray(model.test[:whole])
    seven = quantize_with_onnxruntime(optimized, feeds, reduce_range=True)
    agree = _top1_fused_vs_unfused(fused, qdq, name, xs)
    agree7 = _top1_fused_vs_unfused(_session(seven, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                    seven, name, xs)

    inputs = layer_inputs(qdq, name, [dqx.input[0] for dqx, *_ in layers], x)
    checks = [_check_layer(conv, dqx, dqw, dqb, qy, inits, inputs[dqx.input[0]])
              for dqx, dqw, dqb, conv, qy in layers]
    return ModelCheck(model.name, len(x), checks, len(convs), len(xs), agree, agree7)


def layer_inputs(qdq: onnx.ModelProto, name: str, tensors: list[str],
                 x: np.ndarray) -> dict[str, list[np.ndarray]]:
    """The int8 tensors ``tensors`` of the unfused QDQ graph on each sample of ``x`` (fetched
    by name: the model may have several outputs, and layers may share an input)."""
    wanted = list(dict.fromkeys(tensors))
    probe = _with_outputs(qdq, wanted, dict.fromkeys(wanted, TensorProto.INT8))
    sess = _session(probe, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    got: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    for i in range(len(x)):
        for t, v in zip(wanted, sess.run(wanted, {name: x[i:i + 1]}), strict=True):
            got[t].append(v)
    return got


def _top1_fused_vs_unfused(fused: ort.InferenceSession, qdq: onnx.ModelProto, name: str,
                           xs: np.ndarray) -> float:
    """How often ``fused`` (onnxruntime's optimized session of ``qdq``) has the top-1 of the
    same graph run with optimizations off."""
    unfused = _session(qdq, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    same = [np.argmax(fused.run(None, {name: xs[i:i + 1]})[0])
            == np.argmax(unfused.run(None, {name: xs[i:i + 1]})[0]) for i in range(len(xs))]
    return float(np.mean(same)) if same else float("nan")


def _check_layer(conv: onnx.NodeProto, dqx: onnx.NodeProto, dqw: onnx.NodeProto,
                 dqb: onnx.NodeProto | None, qy: onnx.NodeProto, inits: dict[str, np.ndarray],
                 inputs: list[np.ndarray]) -> LayerCheck:
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    pads, strides = list(attrs.get("pads", [0, 0, 0, 0])), list(attrs.get("strides", [1, 1]))
    sx, zx = np.float32(inits[dqx.input[1]]), int(inits[dqx.input[2]])
    w, sw = inits[dqw.input[0]], inits[dqw.input[1]].astype(np.float32)
    sy, zy = np.float32(inits[qy.input[1]]), int(inits[qy.input[2]])
    bias = (inits[dqb.input[0]].astype(np.int64) if dqb is not None
            else np.zeros(w.shape[0], np.int64))
    consts = {"sx": np.asarray(sx, np.float32), "zx": np.asarray(zx + 128, np.uint8), "w": w,
              "sw": np.asarray(sw, np.float32), "zw": np.zeros(w.shape[0], np.int8),
              "sy": np.asarray(sy, np.float32), "zy": np.asarray(zy + 128, np.uint8),
              "b": bias.astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
                            ["y"], pads=pads, strides=strides)
    graph = helper.make_graph(
        [node], conv.name,
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(inputs[0].shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    scale = (sx * sw / sy).astype(np.float32).reshape(1, -1, 1, 1)
    outputs = wrong = worst = 0
    for xi in inputs:
        xi = xi.astype(np.int64)
        got = sess.run(None, {"x": (xi + 128).astype(np.uint8)})[0].astype(np.int64) - 128
        acc = exact_sum(xi, zx, w, bias, pads, strides)
        exact = np.clip(np.rint(acc.astype(np.float32) * scale) + zy, -128, 127)
        diff = np.abs(got - exact)
        outputs += diff.size
        wrong += int((diff > 1).sum())
        worst = max(worst, int(diff.max()))
    return LayerCheck(conv.name, tuple(w.shape), outputs, wrong, worst)


def report(checks: list[ModelCheck]) -> str:
    """Markdown: one row per model, then the layers with wrong outputs."""
    lines = ["| model | convolutions onnxruntime runs as QLinearConv u8 x s8 | test inputs | "
             "their outputs off by more than one step | largest difference | "
             "onnxruntime int8 top-1 = its QDQ graph unfused | the same, 7-bit weights |",
             "|---|---|---|---|---|---|---|"]
    for c in checks:
        worst = max((lc.max_diff for lc in c.layers), default=0)
        lines.append(f"| {c.model} | {len(c.layers)} of {c.convolutions} | {c.samples} | "
                     f"{c.wrong} of {c.outputs} ({100 * c.wrong / max(c.outputs, 1):.3f} %) | "
                     f"{worst} | {c.top1_vs_unfused:.3f} ({c.whole_samples} inputs) | "
                     f"{c.top1_vs_unfused_7bit:.3f} |")
    for c in checks:
        bad = sorted((lc for lc in c.layers if lc.wrong), key=lambda lc: -lc.wrong)
        if bad:
            text = "; ".join(f"{lc.name} {lc.weight_shape}: {lc.wrong} of {lc.outputs} "
                             f"(max {lc.max_diff})" for lc in bad[:6])
            lines.append(f"\n* **{c.model}** layers with wrong outputs: {text}.")
    return "\n".join(lines)


def main(models: list[BenchModel], samples: int, whole: int = 64) -> None:
    print(report([check_model(m, samples, whole) for m in models]))
