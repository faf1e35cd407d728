"""NPU/CPU partitioning: the plan of where nodes run, and NPU nodes grouped into convex subgraphs.

The decision per node is :func:`ortnpu.placement.place` (target support and ortnpu's lowerings
in one place); :func:`partition` is that function under its historical name. This module holds
the result (:class:`PartitionPlan`) and the grouping: every subgraph is **convex**, no path
leaves it and comes back in, so it can run as one call to the NPU with all its inputs ready.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ortnpu.passes.graph import (
    GraphIndex,
    node_inputs,
    topological_order,
)
from ortnpu.target.spec import Target
from ortnpu.target.support import Verdict

NPU = "NPU"
CPU = "CPU"


@dataclass
class Subgraph:
    """One convex group of NPU nodes.

    Attributes:
        index: position in :attr:`PartitionPlan.subgraphs` (execution order).
        nodes: node names in topological order.
        inputs: tensors computed outside the subgraph (or graph inputs) that it reads.
        outputs: tensors it computes that are read outside it or are graph outputs.
    """

    index: int
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]

    @property
    def name(self) -> str:
        return f"npu_{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "nodes": list(self.nodes),
                "inputs": list(self.inputs), "outputs": list(self.outputs)}


@dataclass
class PartitionPlan:
    """Where each node runs, and why.

    Attributes:
        placement: node name to ``"NPU"`` or ``"CPU"``.
        reasons: node name to a sentence; every CPU node has one saying what to change.
        verdicts: node name to its support :class:`~ortnpu.target.support.Verdict`.
        subgraphs: the NPU subgraphs in execution order.
        order: node names in topological order.
        op_types: node name to op type.
        target: name of the target.
        options: the placement options used.
        causes: node name to the grouping key of its reason (no node or tensor names), so
            reports can count CPU nodes per cause and op type.
        fused_into: absorbed node name (a fused activation, or a MatMul's bias Add) to the NPU
            node whose output clamp or bias it becomes.
        notes: what the placement assumed (e.g. a dynamic batch read as 1).
        cpu_islands: the CPU nodes grouped like the subgraphs (convex groups along edges),
            so that subgraphs and islands contract to an acyclic picture of the partition.
    """

    placement: dict[str, str]
    reasons: dict[str, str]
    verdicts: dict[str, Verdict]
    subgraphs: list[Subgraph]
    order: list[str]
    op_types: dict[str, str]
    target: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    causes: dict[str, str] = field(default_factory=dict)
    fused_into: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu_islands: list[list[str]] = field(default_factory=list)

    def cpu_groups(self) -> list[tuple[str, str, list[str]]]:
        """CPU nodes grouped by (cause, op type), largest group first: ``(cause, op, nodes)``."""
        return group_by_cause((n, self.op_types[n], self.causes.get(n) or self.reasons[n])
                              for n in self.cpu_nodes)

    @property
    def npu_nodes(self) -> list[str]:
        return [n for n in self.order if self.placement[n] == NPU]

    @property
    def cpu_nodes(self) -> list[str]:
        return [n for n in self.order if self.placement[n] == CPU]

    @property
    def boundary_tensors(self) -> list[str]:
        """Tensors crossing between the CPU and the NPU (subgraph inputs and outputs)."""
        seen: dict[str, None] = {}
        for sg in self.subgraphs:
            for t in sg.inputs + sg.outputs:
                seen.setdefault(t, None)
        return list(seen)

    def subgraph_of(self, node: str) -> Subgraph | None:
        """The subgraph holding ``node``, or None for a CPU node."""
        for sg in self.subgraphs:
            if node in sg.nodes:
                return sg
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (see docs/evaluate.md for the schema)."""
        return {
            "target": self.target,
            "options": self.options,
            "npu_node_count": len(self.npu_nodes),
            "cpu_node_count": len(self.cpu_nodes),
            "subgraphs": [sg.to_dict() for sg in self.subgraphs],
            "cpu_nodes": [{"name": n, "op": self.op_types[n], "reason": self.reasons[n],
                           "cause": self.causes.get(n, "")} for n in self.cpu_nodes],
            "cpu_groups": [{"cause": c, "op": op, "count": len(nodes), "nodes": nodes}
                           for c, op, nodes in self.cpu_groups()],
            "fused": dict(self.fused_into),
            "cpu_islands": [list(i) for i in self.cpu_islands],
            "boundary_tensors": self.boundary_tensors,
        }

    def __str__(self) -> str:
        lines = [f"partition for {self.target}: {len(self.npu_nodes)} NPU node(s) in "
                 f"{len(self.subgraphs)} subgraph(s), {len(self.cpu_nodes)} CPU node(s)"]
        for sg in self.subgraphs:
            lines.append(f"  {sg.name}: {len(sg.nodes)} nodes, inputs {sg.inputs}, "
                         f"outputs {sg.outputs}")
        for n in self.cpu_nodes:
            lines.append(f"  CPU {self.reasons[n]}")
        return "\n".join(lines)


def group_by_cause(rows: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, list[str]]]:
    """``(node, op, cause)`` rows grouped by (cause, op), largest group first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for node, op, cause in rows:
        groups.setdefault((cause, op), []).append(node)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][1], kv[0][0]))
    return [(cause, op, nodes) for (cause, op), nodes in ranked]


def prepare(model: onnx.ModelProto, target: Target | None = None,
            log: list[Any] | None = None, keep: Sequence[str] = ()) -> onnx.ModelProto:
    """Name unnamed nodes, infer shapes and rewrite float ops into the forms an NPU runs
    (:func:`~ortnpu.passes.npu_forms.npu_forms`: LayerNormalization decomposed, a rank-5 q/k/v
    split sliced, a patch embedding beyond ``target``'s stride limit as a 1x1 convolution;
    ``quantize`` applies the same), on a copy (as partition and estimate need). ``log``
    receives the :class:`~ortnpu.passes.PassResult` of each rewrite that applied; ``keep``
    (the user's ``force_cpu`` names and op types) are left whole."""
    from ortnpu.passes.npu_forms import npu_forms

    return npu_forms(model, target, log, keep)


def region_of(index: GraphIndex, npu_inputs: Sequence[str],
            npu_outputs: Sequence[str]) -> set[str]:
    """Nodes needed to compute ``npu_outputs`` from ``npu_inputs`` (extract_model semantics)."""
    stop = set(npu_inputs)
    region: set[str] = set()
    todo = [t for t in npu_outputs]
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if t in seen or t in stop:
            continue
        seen.add(t)
        node = index.producer.get(t)
        if node is None or node.name in region:
            continue
        region.add(node.name)
        todo.extend(node_inputs(node))
    return region


def partition(model: onnx.ModelProto, target: Target | str | None = None, *,
              force_cpu: Sequence[str] = (), force_npu: Sequence[str] = (),
              npu_inputs: Sequence[str] | None = None, npu_outputs: Sequence[str] | None = None,
              min_subgraph_nodes: int | None = None) -> PartitionPlan:
    """Place every node on the NPU or the CPU and group the NPU nodes in convex subgraphs.

    The same decision as :func:`ortnpu.placement.place` (which see), with shapes read as they
    are (no batch fixed to 1).

    Args:
        model: the (preferably optimized) float model; not modified. Unnamed nodes are named
            ``<op>_<index>`` as :class:`~ortnpu.passes.NameNodes` does.
        target: a :class:`~ortnpu.target.Target` or preset name (default ``tflite-int8``).
        force_cpu: node names or op types to run on the CPU whatever the verdict.
        force_npu: node names or op types to run on the NPU whatever the target's limits (a
            node ortnpu cannot lower stays on the CPU).
        npu_inputs: tensors where the NPU part starts; what computes them (pre-processing)
            runs on the CPU. Like ``onnx.utils.extract_model``'s input names.
        npu_outputs: tensors where the NPU part ends; what follows (post-processing) runs on
            the CPU.
        min_subgraph_nodes: overrides the target's ``[support] min_subgraph_nodes``.

    Returns:
        The :class:`PartitionPlan`.

    Raises:
        ModelError: not a model, a cyclic graph, unknown names in the options, or a node both
            forced to the CPU and to the NPU.
        TargetError: unknown target.
    """
    from ortnpu.placement import place

    return place(model, target, force_cpu=force_cpu, force_npu=force_npu,
                 npu_inputs=npu_inputs, npu_outputs=npu_outputs,
                 min_subgraph_nodes=min_subgraph_nodes, batch=False)


class Constants(Mapping[str, np.ndarray]):
    """The graph's constant tensors by name, decoded only when a check reads a value."""

    def __init__(self, index: GraphIndex) -> None:
        self._index = index
        self._names = {n for n in index.initializers if n not in index.graph_inputs}
        self._names |= {n.output[0] for n in index.graph.node
                        if n.op_type == "Constant" and n.output}
        self._cache: dict[str, np.ndarray] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._cache:
            value = self._index.constant(name)
            self._cache[name] = np.zeros(0) if value is None else value
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _edges(order: Sequence[onnx.NodeProto], index: GraphIndex,
           constants: set[str]) -> dict[str, set[str]]:
    succ: dict[str, set[str]] = defaultdict(set)
    for node in order:
        for x in node_inputs(node):
            producer = index.producer.get(x)
            if producer is not None and x not in constants and producer.name != node.name:
                succ[producer.name].add(node.name)
    return succ


def cluster(order: Sequence[onnx.NodeProto], index: GraphIndex, placement: Mapping[str, str],
             constants: set[str]) -> list[list[str]]:
    """Greedy convex clustering of NPU nodes.

    Clusters are merged along producer -> consumer edges in topological order. Merging clusters
    A -> B is refused when B is reachable from A through a third cluster: the merged cluster
    would then have a path that leaves it and re-enters, i.e. a cycle between the NPU subgraph
    and the CPU. The contracted graph therefore stays acyclic and every cluster stays convex.
    """
    succ_nodes = _edges(order, index, constants)
    parent = {n.name: n.name for n in order}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    csucc: dict[str, set[str]] = {n.name: set(succ_nodes.get(n.name, ())) for n in order}
    cpred: dict[str, set[str]] = {n.name: set() for n in order}
    for a, bs in succ_nodes.items():
        for b in bs:
            cpred[b].add(a)

    def reachable_other(a: str, b: str) -> bool:
        """True if cluster b is reachable from cluster a other than by a direct edge."""
        stack = [c for c in csucc[a] if c != b]
        seen = set(stack)
        while stack:
            c = stack.pop()
            if c == b:
                return True
            for d in csucc[c]:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return False

    def merge(a: str, b: str) -> None:
        parent[b] = a
        for s in csucc.pop(b):
            cpred[s].discard(b)
            if s != a:
                cpred[s].add(a)
                csucc[a].add(s)
        for p in cpred.pop(b):
            csucc[p].discard(b)
            if p != a:
                csucc[p].add(a)
                cpred[a].add(p)
        csucc[a].discard(b)
        csucc[a].discard(a)
        cpred[a].discard(a)
        cpred[a].discard(b)

    for node in order:
        if placement[node.name] != NPU:
            continue
        for x in node_inputs(node):
            producer = index.producer.get(x)
            if producer is None or x in constants or placement[producer.name] != NPU:
                continue
            a, b = find(producer.name), find(node.name)
            if a == b:
                continue
            if not reachable_other(a, b):
                merge(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for node in order:
        if placement[node.name] == NPU:
            groups[find(node.name)].append(node.name)
    return list(groups.values())


def subgraphs_of(groups: list[list[str]], order: Sequence[onnx.NodeProto], index: GraphIndex,
               constants: set[str]) -> list[Subgraph]:
    by_name = {n.name: n for n in order}
    position = {n.name: i for i, n in enumerate(order)}
    groups = sorted(groups, key=lambda g: position[g[-1]])
    result = []
    for i, members in enumerate(groups):
        inside = set(members)
        produced = {o for m in members for o in by_name[m].output if o}
        inputs: dict[str, None] = {}
        outputs: dict[str, None] = {}
        for m in members:
            for x in node_inputs(by_name[m]):
                if x not in produced and x not in constants:
                    inputs.setdefault(x, None)
            for o in by_name[m].output:
                if not o:
                    continue
                readers = index.consumers.get(o, [])
                if o in index.graph_outputs or any(r.name not in inside for r in readers):
                    outputs.setdefault(o, None)
        result.append(Subgraph(index=i, nodes=list(members), inputs=list(inputs),
                               outputs=list(outputs)))
    return result


def is_convex(model: onnx.ModelProto, nodes: Iterable[str]) -> bool:
    """True if no path from a node of ``nodes`` leaves the set and re-enters it."""
    graph = model.graph
    index = GraphIndex(graph)
    order = topological_order(graph)
    succ = _edges(order, index, set())
    inside = set(nodes)
    frontier = [s for n in inside for s in succ.get(n, ()) if s not in inside]
    seen = set(frontier)
    while frontier:
        c = frontier.pop()
        for d in succ.get(c, ()):
            if d in inside:
                return False
            if d not in seen:
                seen.add(d)
                frontier.append(d)
    return True


__all__ = ["CPU", "NPU", "Constants", "PartitionPlan", "Subgraph", "cluster", "group_by_cause",
           "is_convex",
           "partition", "prepare", "region_of", "subgraphs_of"]
