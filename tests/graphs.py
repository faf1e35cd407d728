"""Small float graphs built with onnx.helper for unit tests (synthetic weights, fixed seeds)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def checked_model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    """``graph`` as a model of the default domain at ``opset`` (IR 8), checked in full."""
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def small_cnn(seed: int = 0, batch: int | str = "N") -> onnx.ModelProto:
    """Conv+Relu, MaxPool, depthwise Conv+Clip, Add residual, GAP, Flatten, Gemm, Softmax."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    inits = [init("w1", 8, 3, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 1, 3, 3),
             init("b2", 8, scale=0.1), init("w3", 8, 8, 1, 1), init("wf", 5, 8),
             init("bf", 5, scale=0.1),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="dwconv", pads=[1, 1, 1, 1],
                         group=8),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="pwconv"),
        helper.make_node("Add", ["c3", "p1"], ["a1"], name="add1"),
        helper.make_node("Sigmoid", ["a1"], ["s1"], name="sigmoid1"),
        helper.make_node("Mul", ["a1", "s1"], ["m1"], name="swish"),
        helper.make_node("GlobalAveragePool", ["m1"], ["g1"], name="gap"),
        helper.make_node("Flatten", ["g1"], ["f1"], name="flatten"),
        helper.make_node("Gemm", ["f1", "wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [batch, 3, 12, 12])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 5])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(n: int, seed: int = 1, shape: tuple[int, ...] = (3, 12, 12)) -> np.ndarray:
    """Smooth random images in [0, 1] (synthetic: unit tests only)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape)).astype(np.float32)
    return ((x + np.roll(x, 1, axis=-1) + np.roll(x, 1, axis=-2)) / 3).astype(np.float32)


def outlier_cnn(seed: int = 0, factor: float = 300.0) -> onnx.ModelProto:
    """small_cnn with one channel of conv1 blown up by ``factor`` and scaled back by dwconv.

    The float function is unchanged, but per-tensor int8 quantization of the activations
    between the two layers loses the small channels: the layer autofix and compare must find.
    """
    model = small_cnn(seed)
    inits = {i.name: i for i in model.graph.initializer}
    w1 = numpy_helper.to_array(inits["w1"]).copy()
    b1 = numpy_helper.to_array(inits["b1"]).copy()
    w2 = numpy_helper.to_array(inits["w2"]).copy()
    w1[0] *= factor
    b1[0] = abs(b1[0]) * factor
    w2[0] /= factor
    for name, value in (("w1", w1), ("b1", b1), ("w2", w2)):
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return model


class InflatedRange:
    """A min/max calibrator that widens one tensor's range: a deliberately bad scale."""

    def __init__(self, tensor: str, factor: float = 200.0) -> None:
        from ortnpu.quant import MinMaxCalibrator

        self.inner = MinMaxCalibrator()
        self.tensor = tensor
        self.factor = factor

    def collect(self, name: str, values: np.ndarray) -> None:
        self.inner.collect(name, values)

    def range_of(self, name: str) -> tuple[float, float]:
        lo, hi = self.inner.range_of(name)
        if name == self.tensor:
            return lo * self.factor, hi * self.factor
        return lo, hi


def tied_rnn(steps: int = 4, hidden: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A recurrent cell unrolled over ``steps`` time steps whose Gemm/Tanh read the SAME weight
    initializers at every step (tied weights, as torch exports an LSTMCell loop)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.3)
                                     .astype(np.float32), name)
             for name in ("w_ih", "w_hh")]
    inits.append(numpy_helper.from_array((rng.standard_normal(hidden) * 0.1)
                                         .astype(np.float32), "bias"))
    nodes = [helper.make_node("Split", ["x"], [f"x{t}" for t in range(steps)], name="split",
                              axis=1, num_outputs=steps)]
    h = ""
    for t in range(steps):
        nodes.append(helper.make_node("Squeeze", [f"x{t}", "axis1"], [f"xs{t}"], name=f"sq{t}"))
        nodes.append(helper.make_node("Gemm", [f"xs{t}", "w_ih", "bias"], [f"i{t}"],
                                      name=f"ih{t}", transB=1))
        if h:
            nodes.append(helper.make_node("Gemm", [h, "w_hh"], [f"r{t}"], name=f"hh{t}",
                                          transB=1))
            nodes.append(helper.make_node("Add", [f"i{t}", f"r{t}"], [f"s{t}"], name=f"add{t}"))
        nodes.append(helper.make_node("Tanh", [f"s{t}" if h else f"i{t}"], [f"h{t}"],
                                      name=f"tanh{t}"))
        h = f"h{t}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph = helper.make_graph(
        nodes, "tied_rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, steps, hidden])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, hidden])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def if_model(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu then an ``If`` on a bool input whose branches read outer tensors only through
    their bodies (implicit inputs): the Conv's pre-activation output ``c``, the Relu's output
    ``r`` and the initializer ``k`` (as a voice-activity model's ``If`` on its state does)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    k = numpy_helper.from_array((rng.standard_normal((1, 4, 1, 1))).astype(np.float32), "k")
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["c", "k"], ["t0"], name="then_mul"),
         helper.make_node("Add", ["t0", "r"], ["b"], name="then_add")], "then", [], [out])
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["r", "c"], ["b"], name="else_sub")], "else", [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("If", ["flag"], ["b"], name="branch", then_branch=then_g,
                              else_branch=else_g),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    graph = helper.make_graph(
        nodes, "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        initializer=[w, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def vad_like(batch: int | str = "batch") -> onnx.ModelProto:
    """A voice-activity-like model: audio ``x[batch, 16]``, an int64 sample rate ``sr`` (a
    scalar) and an LSTM-style state ``h[2, batch, 4]`` whose batch axis is not the first."""
    rng = np.random.default_rng(9)
    w = numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.3).astype(np.float32), "w")
    nodes = [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast_sr"),
             helper.make_node("Div", ["x", "srf"], ["xs"], name="norm"),
             helper.make_node("MatMul", ["xs", "w"], ["m"], name="proj"),
             helper.make_node("ReduceSum", ["h", "axis0"], ["hs"], name="state_sum",
                              keepdims=0),
             helper.make_node("Add", ["m", "hs"], ["a"], name="mix"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "vad_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        initializer=[w, numpy_helper.from_array(np.array([0], np.int64), "axis0")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def vad_with_if(batch: int | str = "batch") -> onnx.ModelProto:
    """:func:`vad_like` whose first step depends on the sample rate through an ``If``
    (``sr == 16000``: x / 2, else x * 3), as silero-style VAD models branch on ``sr``; the
    branches read the outer ``x`` and an outer initializer implicitly."""
    model = vad_like(batch)
    g = model.graph
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    three = numpy_helper.from_array(np.array(3.0, np.float32), "three")
    rate = numpy_helper.from_array(np.array(16000, np.int64), "rate16k")
    out = [helper.make_tensor_value_info("xb", TensorProto.FLOAT, None)]
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "half"], ["xb"], name="halve")],
                               "at16k", [], out)
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "three"], ["xb"], name="triple")],
                               "other", [], [helper.make_tensor_value_info(
                                   "xb", TensorProto.FLOAT, None)])
    head = [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"], name="is16k"),
            helper.make_node("If", ["is16k"], ["xb"], name="by_rate", then_branch=then_g,
                             else_branch=else_g)]
    nodes = list(g.node)
    for n in nodes:
        for k, x in enumerate(n.input):
            if x == "x":
                n.input[k] = "xb"
    del g.node[:]
    g.node.extend(head + nodes)
    g.initializer.extend([half, three, rate])
    onnx.checker.check_model(model, full_check=True)
    return model


def transformer(blocks: int = 1, seed: int = 7, tokens: int = 8, width: int = 16,
                gelu: bool = True) -> onnx.ModelProto:
    """``blocks`` encoder blocks of 24 nodes: self-attention (MatMul of two activations,
    Softmax), residual, a LayerNorm decomposed into ReduceMean/Sub/Sqrt/Div, an Erf GELU.

    ``gelu=False`` scales the Erf's input by 0.7 instead of 1/√2: the same nodes, but no GELU,
    so the Erf stays a lone op ortnpu has no lowering for (the tests' CPU node).

    One block names its nodes ``q_proj``, ``scores``...; several prefix them ``b<k>/``. Forty
    blocks make the ~1000-node model the reports must stay readable on.
    """
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                       name)

    def c(name: str, value: object) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    nodes: list[onnx.NodeProto] = []
    inits = [c("quarter", 0.25), c("eps", 1e-5), c("gamma", np.ones(width)),
             c("beta", np.zeros(width)), c("rsqrt2", 1 / np.sqrt(2) if gelu else 0.7),
             c("one", 1.0), c("half", 0.5)]
    x = "x"
    for k in range(blocks):
        p = "" if blocks == 1 else f"b{k}/"
        names = {x, "quarter", "eps", "gamma", "beta", "rsqrt2", "one", "half"}

        def n(op: str, ins: list[str], out: str, name: str, p: str = p,
              names: set[str] = names, **kw: object) -> str:
            nodes.append(helper.make_node(op, [i if i in names else p + i for i in ins],
                                          [p + out], name=p + name, **kw))
            return p + out

        inits += [w(p + "wq", width, width), w(p + "wk", width, width),
                  w(p + "wv", width, width), w(p + "wo", width, width)]
        n("MatMul", [x, "wq"], "q", "q_proj")
        n("MatMul", [x, "wk"], "k", "k_proj")
        n("MatMul", [x, "wv"], "v", "v_proj")
        n("Transpose", ["k"], "kt", "k_t", perm=[0, 2, 1])
        n("MatMul", ["q", "kt"], "s", "scores")
        n("Mul", ["s", "quarter"], "ss", "scale")
        n("Softmax", ["ss"], "p", "softmax", axis=-1)
        n("MatMul", ["p", "v"], "o", "context")
        n("MatMul", ["o", "wo"], "y0", "out_proj")
        n("Add", ["y0", x], "y", "residual")
        n("ReduceMean", ["y"], "mu", "ln_mean", axes=[-1])
        n("Sub", ["y", "mu"], "d", "ln_sub")
        n("Mul", ["d", "d"], "sq", "ln_sq")
        n("ReduceMean", ["sq"], "var", "ln_var", axes=[-1])
        n("Add", ["var", "eps"], "ve", "ln_eps")
        n("Sqrt", ["ve"], "sd", "ln_sqrt")
        n("Div", ["d", "sd"], "nrm", "ln_div")
        n("Mul", ["nrm", "gamma"], "ng", "ln_gamma")
        n("Add", ["ng", "beta"], "ln", "ln_beta")
        n("Mul", ["ln", "rsqrt2"], "h", "gelu_scale")
        n("Erf", ["h"], "e", "gelu_erf")
        n("Add", ["e", "one"], "e1", "gelu_add")
        n("Mul", ["ln", "e1"], "g1", "gelu_mul")
        x = n("Mul", ["g1", "half"], "out", "gelu_half")
    graph = helper.make_graph(
        nodes, "transformer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, tokens, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
