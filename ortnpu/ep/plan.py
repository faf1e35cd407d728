"""Which nodes of a QDQ graph the ortnpu EP claims: the NPU part of ``import_qdq``, per group.

onnxruntime hands the EP the QDQ graph itself (``DequantizeLinear → op → QuantizeLinear``).
``import_qdq`` reads that graph into a float graph and asks the one placement decision
(:mod:`ortnpu.placement`, through the quantizer) where each float node runs. The EP claims:

* every op node ``import_qdq`` puts on the NPU (a node the importer folds into another, such
  as the bias ``Add`` of a ``MatMul``, goes with the node that absorbed it);
* the ``DequantizeLinear`` nodes those ops read (weights, biases, activations) and the
  ``QuantizeLinear`` that produces a claimed activation ``DequantizeLinear``'s input;
* the ``QuantizeLinear`` after each claimed op and the ``DequantizeLinear`` nodes after it.

A group therefore takes float tensors in and gives float tensors out, exactly as the whole
model does, and is itself a QDQ model: :func:`group_model` extracts it and ``import_qdq`` of it
is the program the EP compiles. Claimed nodes are grouped into convex subgraphs with the same
clustering as :mod:`ortnpu.partition`; a group whose extracted model the importer refuses stays
on the CPU, with the importer's reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import onnx
from onnx import helper

from ortnpu.errors import OrtNpuError
from ortnpu.partition import CPU, NPU, cluster
from ortnpu.passes.graph import GraphIndex, topological_order
from ortnpu.target import Target

_Q, _DQ = "QuantizeLinear", "DequantizeLinear"


@dataclass(frozen=True)
class NodeReport:
    """Where one node of the graph onnxruntime gave the EP runs, and why if on the CPU."""

    node: str            # the node's name in the graph ("" when it has none)
    op_type: str
    device: str          # "NPU" or "CPU"
    reason: str = ""
    group: int = -1      # index of its NPU group
    key: str = ""        # the unique name the EP gave it (its name, when it has a unique one)


@dataclass
class Plan:
    """The EP's decision for one graph."""

    groups: list[list[str]] = field(default_factory=list)
    reports: list[NodeReport] = field(default_factory=list)
    models: list[onnx.ModelProto] = field(default_factory=list)  # NPU graph of each group

    def npu_nodes(self) -> Counter[tuple[str, str]]:
        """(name, op type) of the NPU nodes, counted (several nodes may have no name)."""
        return Counter((r.node, r.op_type) for r in self.reports if r.device == NPU)

    def renamed(self, original: dict[str, str]) -> Plan:
        """The plan with the graph's own node names (``key`` keeps the EP's)."""
        reports = [replace(r, node=original.get(r.node, r.node), key=r.node)
                   for r in self.reports]
        return Plan(self.groups, reports, self.models)


def group_model(model: onnx.ModelProto, members: set[str]) -> onnx.ModelProto:
    """The QDQ model of one group: its nodes, the initializers they read, the tensors they
    read from outside as inputs and those read outside (or graph outputs) as outputs."""
    g = model.graph
    nodes = [n for n in g.node if n.name in members]
    produced = {o for n in nodes for o in n.output if o}
    inits = {t.name: t for t in g.initializer}
    outside = {o.name for o in g.output}
    for n in g.node:
        if n.name not in members:
            outside.update(i for i in n.input if i)
    infos = {v.name: v for v in [*g.input, *g.value_info, *g.output]}

    def info(name: str) -> onnx.ValueInfoProto:
        return infos[name] if name in infos else helper.make_empty_tensor_value_info(name)

    inputs: dict[str, None] = {}
    used: dict[str, None] = {}
    for n in nodes:
        for i in n.input:
            if not i or i in produced:
                continue
            (used if i in inits else inputs)[i] = None
    outputs = [o for n in nodes for o in n.output if o and o in outside]
    sub = helper.make_graph(nodes, g.name or "group", [info(i) for i in inputs],
                            [info(o) for o in outputs], initializer=[inits[i] for i in used],
                            value_info=[infos[t] for t in sorted(produced - set(outputs))
                                        if t in infos])
    out = helper.make_model(sub, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _claims(model: onnx.ModelProto, index: GraphIndex, device: dict[str, str]) -> set[str]:
    """Op nodes on the NPU and the Q/DQ nodes around them (see the module docstring)."""
    order = topological_order(model.graph)
    npu_ops: set[str] = set()
    for n in order:
        if n.op_type in (_Q, _DQ):
            continue
        where = device.get(n.name)
        if where == NPU:
            npu_ops.add(n.name)
        elif where is None:   # folded into another node by the importer: goes with it
            producers = [index.producer.get(i) for i in n.input if i]
            if any(p is not None and p.name in npu_ops for p in producers):
                npu_ops.add(n.name)
    claimed = set(npu_ops)
    by_name = {n.name: n for n in order}
    for name in npu_ops:
        node = by_name[name]
        for t in node.input:
            dq = index.producer.get(t)
            if dq is not None and dq.op_type == _DQ:
                claimed.add(dq.name)
                q = index.producer.get(dq.input[0])
                if q is not None and q.op_type == _Q:
                    claimed.add(q.name)
        for t in node.output:
            for q in index.consumers.get(t, []):
                if q.op_type != _Q:
                    continue
                claimed.add(q.name)
                for dq in index.consumers.get(q.output[0], []):
                    if dq.op_type == _DQ:
                        claimed.add(dq.name)
    return claimed


def plan(model: onnx.ModelProto, target: Target) -> Plan:
    """Groups to claim and a report per node (every node of ``model`` is named)."""
    from ortnpu.quant import QuantizationResult
    from ortnpu.quant.qdq_import import import_qdq

    nodes = list(model.graph.node)
    res = QuantizationResult()
    try:
        import_qdq(model, target, result=res)
    except OrtNpuError as exc:
        why = f"import_qdq cannot read the graph: {exc}"
        return Plan(reports=[NodeReport(n.name, n.op_type, CPU, why) for n in nodes])
    placed = {p.node: p for p in res.placements}
    device = {name: p.device for name, p in placed.items()}
    index = GraphIndex(model.graph)
    claimed = _claims(model, index, device)
    order = topological_order(model.graph)
    placement = {n.name: NPU if n.name in claimed else CPU for n in order}
    groups = cluster(order, index, placement, set(index.initializers))
    out = Plan()
    dropped: dict[str, str] = {}
    for members in groups:
        try:
            npu = import_qdq(group_model(model, set(members)), target)
        except OrtNpuError as exc:
            for m in members:
                dropped[m] = f"its group of {len(members)} nodes does not import alone: {exc}"
            continue
        out.groups.append(members)
        out.models.append(npu)
    group_of = {m: k for k, members in enumerate(out.groups) for m in members}
    for n in nodes:
        if n.name in group_of:
            out.reports.append(NodeReport(n.name, n.op_type, NPU, group=group_of[n.name]))
            continue
        if n.name in dropped:
            why = dropped[n.name]
        elif n.name in placed:
            why = placed[n.name].reason or "placed on the CPU by import_qdq"
        elif n.op_type in (_Q, _DQ):
            why = "no node that import_qdq puts on the NPU reads or writes it"
        else:
            why = "import_qdq's float graph has no NPU node for it"
        out.reports.append(NodeReport(n.name, n.op_type, CPU, why))
    return out


__all__ = ["NodeReport", "Plan", "group_model", "plan"]
