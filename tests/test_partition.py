"""Partitioner: convex subgraphs, overrides, region cuts, minimum size, reasons."""

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortnpu.errors import ModelError
from ortnpu.partition import CPU, NPU, is_convex, partition
from ortnpu.target import parse_target

# Relu and Add run on the NPU, Neg (a stand-in for any unsupported op) does not.
TARGET = parse_target('name = "t"\n[support]\nop_types = ["Relu", "Add", "Conv", "Softmax"]\n'
                      'cpu_preferred = []\n')


def _model(nodes: list, outputs: tuple = ("y",), inits: tuple = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 4])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4])
                           for o in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _n(op: str, inputs: list, out: str, name: str) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [out], name=name)


def _cycle_trap() -> onnx.ModelProto:
    """a(NPU) -> b(CPU) -> c(NPU), and a -> c: {a, c} together would leave and re-enter."""
    return _model([_n("Relu", ["x"], "a", "a"), _n("Neg", ["a"], "b", "b"),
                   _n("Add", ["a", "b"], "y", "c")])


def test_naive_grouping_would_cycle() -> None:
    m = _cycle_trap()
    assert not is_convex(m, ["a", "c"])
    plan = partition(m, TARGET)
    assert plan.placement == {"a": NPU, "b": CPU, "c": NPU}
    assert [sg.nodes for sg in plan.subgraphs] == [["a"], ["c"]]
    assert all(is_convex(m, sg.nodes) for sg in plan.subgraphs)
    assert plan.subgraphs[0].outputs == ["a"]
    assert plan.subgraphs[1].inputs == ["a", "b"]
    assert plan.reasons["b"].startswith("Neg 'b': ortnpu has no integer lowering for Neg")


def test_long_detour_and_diamond() -> None:
    """Two NPU chains joined at both ends, one branch broken by CPU nodes in the middle."""
    m = _model([
        _n("Relu", ["x"], "a", "a"),
        _n("Relu", ["a"], "p1", "p1"), _n("Neg", ["p1"], "p2", "p2"), _n("Relu", ["p2"], "p3",
                                                                         "p3"),
        _n("Relu", ["a"], "q1", "q1"), _n("Relu", ["q1"], "q2", "q2"),
        _n("Add", ["p3", "q2"], "y", "join"),
    ])
    plan = partition(m, TARGET)
    for sg in plan.subgraphs:
        assert is_convex(m, sg.nodes), sg.nodes
    npu = set(plan.npu_nodes)
    assert npu == {"a", "p1", "p3", "q1", "q2", "join"}
    # every NPU node is in exactly one subgraph
    members = list(itertools.chain.from_iterable(sg.nodes for sg in plan.subgraphs))
    assert sorted(members) == sorted(npu)


def test_random_graphs_always_convex() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        nodes, tensors = [], ["x"]
        for i in range(14):
            k = rng.integers(1, 3)
            ins = list(rng.choice(tensors, size=min(k, len(tensors)), replace=False))
            op = "Neg" if rng.random() < 0.3 else ("Add" if len(ins) == 2 else "Relu")
            if op == "Neg" or op == "Relu":
                ins = ins[:1]
            nodes.append(_n(op, ins, f"t{i}", f"n{i}"))
            tensors.append(f"t{i}")
        used = {x for n in nodes for x in n.input}
        outs = tuple(t for t in tensors[1:] if t not in used)
        m = _model(nodes, outputs=outs)
        plan = partition(m, TARGET)
        for sg in plan.subgraphs:
            assert is_convex(m, sg.nodes), (trial, sg.nodes)
        assert all(plan.reasons[n] for n in plan.cpu_nodes)


def test_overrides_by_name_and_op_type() -> None:
    m = _cycle_trap()
    plan = partition(m, TARGET, force_cpu=["c"], force_npu=["Neg"])
    # force_npu overrides the target's limits, not a missing lowering: Neg stays on the CPU
    assert plan.placement == {"a": NPU, "b": CPU, "c": CPU}
    assert plan.reasons["c"] == "Add 'c': forced to the CPU by the user (force_cpu 'c')"
    assert plan.reasons["b"] == ("Neg 'b': forced to the NPU by the user, but ortnpu has no "
                                 "integer lowering for Neg yet; it runs on the CPU in float")
    assert [sg.nodes for sg in plan.subgraphs] == [["a"]]
    narrow = parse_target('name = "narrow"\n[support]\nop_types = ["Add"]\n')
    plan = partition(m, narrow, force_npu=["Relu"])
    assert plan.placement == {"a": NPU, "b": CPU, "c": NPU}
    assert "forced to the NPU by the user (the target's check said: op type Relu" \
        in plan.reasons["a"]
    with pytest.raises(ModelError, match="neither a node name nor an op type"):
        partition(m, TARGET, force_cpu=["nope"])
    with pytest.raises(ModelError, match="choose one"):
        partition(m, TARGET, force_cpu=["Add"], force_npu=["c"])


def test_region_cut_by_tensor_names() -> None:
    m = _model([_n("Relu", ["x"], "pre", "pre"), _n("Relu", ["pre"], "body", "body"),
                _n("Softmax", ["body"], "y", "post")])
    plan = partition(m, TARGET, npu_inputs=["pre"], npu_outputs=["body"])
    assert plan.placement == {"pre": CPU, "body": NPU, "post": CPU}
    assert "outside the NPU region" in plan.reasons["pre"]
    assert plan.subgraphs[0].inputs == ["pre"] and plan.subgraphs[0].outputs == ["body"]
    with pytest.raises(ModelError, match="not a tensor"):
        partition(m, TARGET, npu_outputs=["nope"])


def test_min_subgraph_nodes() -> None:
    m = _cycle_trap()
    plan = partition(m, TARGET, min_subgraph_nodes=2)
    assert plan.npu_nodes == [] and plan.subgraphs == []
    assert "fewer than the minimum 2" in plan.reasons["a"]


def test_unnamed_nodes_and_constants() -> None:
    const = helper.make_node("Constant", [], ["k"],
                             value=numpy_helper.from_array(np.ones((1, 4), np.float32)))
    m = _model([const, helper.make_node("Add", ["x", "k"], ["y"])])
    plan = partition(m, TARGET)
    assert plan.placement == {"Constant_0": CPU, "Add_1": NPU}
    assert "ortnpu optimize" in plan.reasons["Constant_0"]
    assert plan.subgraphs[0].inputs == ["x"]
    d = plan.to_dict()
    assert d["cpu_nodes"][0]["name"] == "Constant_0"
    assert "npu_0" in str(plan)


def test_bad_input() -> None:
    with pytest.raises(ModelError):
        partition("model.onnx", TARGET)  # type: ignore[arg-type]
