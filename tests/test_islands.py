"""NPU islands between CPU nodes: each runs as one compiled program, bit-exact with the layers
run one by one (``InferenceSession(npu, fuse=False, native=False)``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import transformer
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import DOMAIN, Add, Conv, kernels, make_node
from ortnpu.runtime.fusion import find_islands
from ortnpu.runtime.native_program import NATIVE_DOMAIN

pytestmark = [pytest.mark.usefixtures("require_c"),
              pytest.mark.skipif(kernels.get_mode() == "numpy",
                                 reason="C kernels not in use (ORTNPU_KERNELS=numpy)")]


def _chain_with_cpu_between(blocks: int, batch: int | str = "N") -> onnx.ModelProto:
    """conv, then ``blocks`` times: DequantizeLinear -> Tanh -> QuantizeLinear on the CPU and an
    NPU Add of that and the tensor before it (read directly: the Add's island has two inputs,
    one from the island before). Every island's output also leaves the graph (two outputs)."""
    rng = np.random.default_rng(4)
    inits = {"w": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8),
             "b": rng.integers(-500, 500, 4).astype(np.int64),
             "m": np.full(4, 1 << 30, np.int32), "s": np.full(4, -7, np.int32),
             "sc": np.array(0.05, np.float32), "zp": np.array(-3, np.int8)}
    nodes = [make_node(Conv, ["x", "w", "b", "m", "s"], "t0", np.int8, "conv", x_zp=1,
                       pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)]
    outputs = []
    for k in range(blocks):
        t = f"t{k}"
        nodes += [helper.make_node("DequantizeLinear", [t, "sc", "zp"], [f"f{k}"], name=f"dq{k}"),
                  helper.make_node("Tanh", [f"f{k}"], [f"h{k}"], name=f"tanh{k}"),
                  helper.make_node("QuantizeLinear", [f"h{k}", "sc", "zp"], [f"q{k}"],
                                   name=f"q{k}"),
                  make_node(Add, [t, f"q{k}"], f"t{k + 1}", np.int8, f"add{k}",
                            a_zp=-3, b_zp=-3, y_zp=-3, a_multiplier=1 << 30, a_shift=-1,
                            b_multiplier=1 << 30, b_shift=-1, y_multiplier=1 << 30,
                            y_shift=-18)]
        outputs.append(f"t{k + 1}")
    graph = helper.make_graph(
        nodes, "islands", [helper.make_tensor_value_info("x", TensorProto.INT8,
                                                         [batch, 2, 5, 5])],
        [helper.make_tensor_value_info(t, TensorProto.INT8, [batch, 4, 5, 5])
         for t in outputs[-2:]],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    graph.value_info.extend(helper.make_tensor_value_info(f"t{k}", TensorProto.INT8,
                                                          [batch, 4, 5, 5])
                            for k in range(blocks + 1))   # as ortnpu.quantize writes them
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19),
                                                    helper.make_opsetid(DOMAIN, 1)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("blocks", [1, 6])
def test_every_island_between_cpu_nodes_is_one_program(blocks: int) -> None:
    model = _chain_with_cpu_between(blocks)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True] * (blocks + 1)
    graph_nodes = sess._final_nodes
    assert not [n for n in graph_nodes if n.domain == DOMAIN]   # no layer left to Python
    assert sum(n.domain == NATIVE_DOMAIN for n in graph_nodes) == blocks + 1
    assert max(len(n.input) for n in graph_nodes if n.domain == NATIVE_DOMAIN) == \
        (2 if blocks else 1)
    ref = ortnpu.InferenceSession(model, fuse=False, native=False)
    python = ortnpu.InferenceSession(model, native=False)
    for batch in (1, 3, 0):
        x = np.random.default_rng(batch).integers(-128, 128, (batch, 2, 5, 5)).astype(np.int8)
        want = ref.run(None, {"x": x})
        for s in (sess, python):
            got = s.run(None, {"x": x})
            assert all(g.shape == w.shape and np.array_equal(g, w)
                       for g, w in zip(got, want, strict=True)), batch


def test_profile_of_a_program_of_several_inputs() -> None:
    """``NativeProgram.profile`` takes one array per input (the layer times of a transformer's
    programs in docs/kernels.md were found this way): every layer named, times not negative."""
    sess = ortnpu.InferenceSession(_chain_with_cpu_between(2))
    multi = [p for p in sess.native_programs if len(p.in_dtypes) > 1]
    assert multi
    for prog in multi:
        xs = [np.zeros((1, *d), t) for t, d in zip(prog.in_dtypes, prog.in_dims_all, strict=True)]
        prof = prog.profile(xs, repeat=3)
        assert len(prof) == len(prog.macs) > 0
        assert all(name and ms >= 0 for name, ms in prof)


def test_fixed_batch_islands_are_exact() -> None:
    model = _chain_with_cpu_between(3, batch=2)
    sess = ortnpu.InferenceSession(model)
    assert all(r.native for r in sess.compile_reports)
    x = np.random.default_rng(7).integers(-128, 128, (2, 2, 5, 5)).astype(np.int8)
    want = ortnpu.InferenceSession(model, fuse=False, native=False).run(None, {"x": x})
    got = sess.run(None, {"x": x})
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8"])
def test_transformer_islands_with_float_boundaries(target: str) -> None:
    """A transformer whose LayerNorm and Erf stay on the CPU: attention with its residual and
    the two halves of the GELU MLP are islands of several inputs and outputs; every NPU layer
    runs in a compiled program and the numbers are those of the layers one by one."""
    float_model = transformer(blocks=3)
    rng = np.random.default_rng(2)
    calib = (rng.random((16, 1, 8, 16)) * 4 - 2).astype(np.float32)
    npu = ortnpu.quantize(float_model, target, [{"x": c} for c in calib],
                          force_cpu=["b0/gelu_erf", "b1/gelu_erf", "b2/gelu_erf"])
    sess = ortnpu.InferenceSession(npu)
    assert sess.compile_reports and all(r.native for r in sess.compile_reports), \
        sess.compile_reports
    assert not [n for n in sess._final_nodes if n.domain == DOMAIN]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False)
    for seed in range(3):
        x = (np.random.default_rng(seed).random((1, 8, 16)) * 4 - 2).astype(np.float32)
        assert np.array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])


def _reaches(graph: onnx.GraphProto) -> list[set[int]]:
    producer = {t: k for k, n in enumerate(graph.node) for t in n.output}
    succ: list[set[int]] = [set() for _ in graph.node]
    for k, n in enumerate(graph.node):
        for t in n.input:
            if t in producer:
                succ[producer[t]].add(k)
    reach: list[set[int]] = [set() for _ in graph.node]
    for k in reversed(range(len(graph.node))):   # nodes are in topological order
        for s in succ[k]:
            reach[k] |= {s} | reach[s]
    return reach


@pytest.mark.parametrize("seed", range(20))
def test_islands_are_convex_on_random_graphs(seed: int) -> None:
    """However many islands: each member node in exactly one, and no path leaves an island
    and comes back into it (a program runs all its layers at once)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    nodes, member = [], []
    for k in range(n):
        reads = ["x"] if k == 0 else [f"t{int(j)}" for j in
                                       set(rng.integers(0, k, int(rng.integers(1, 4))))]
        npu = bool(rng.random() < 0.6)
        nodes.append(helper.make_node("Npu" if npu else "Cpu", reads, [f"t{k}"], name=f"n{k}",
                                      domain="test"))
        member.append(npu)
    graph = helper.make_graph(nodes, "g", [], [])
    islands = find_islands(graph, lambda node: node.op_type == "Npu")
    flat = sorted(k for island in islands for k in island)
    assert flat == [k for k in range(n) if member[k]]
    reach = _reaches(graph)
    for island in islands:
        inside = set(island)
        outside_reached = set().union(*(reach[k] for k in island)) - inside
        back = set().union(*(reach[k] for k in outside_reached)) if outside_reached else set()
        assert not back & inside, (seed, island)
