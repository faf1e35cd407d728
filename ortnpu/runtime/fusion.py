"""Run each NPU subgraph as one onnxruntime node, as a real NPU runs a compiled subgraph.

An NPU graph has one ``com.ortnpu`` node per layer, and every node costs a crossing from
onnxruntime into Python plus a validation. :func:`fuse_subgraphs` replaces each run of
consecutive ``com.ortnpu`` nodes that has one activation input and one output by a single
``Subgraph_<type>`` node whose *program* (the layers, their constants and attributes) stays in
this process. The program validates its layers once per input shape and then calls the kernels
directly. The numbers are those of the layers one by one (the tests compare both); errors still
name the layer. Fusion is an in-memory step of :class:`ortnpu.InferenceSession`: saved NPU graphs
keep one node per layer. With ``native=True`` the session first compiles every NPU *island*
(:func:`find_islands`: convex groups of layers between CPU nodes, with any number of inputs and
outputs) into C (:mod:`ortnpu.runtime.native_program`); this Python program is the path for the
layers left over and for ``native=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.domain import DOMAIN, kernels, spec_of
from ortnpu.domain.spec import Attr, Input, OpSpec, op_type_name, parse_op_type
from ortnpu.errors import KernelError
from ortnpu.onnx_types import dim_size, np_dtype
from ortnpu.passes.graph import node_inputs

#: Programs of the live sessions, by id (a session keeps its programs alive).
_PROGRAMS: weakref.WeakValueDictionary[str, Program] = weakref.WeakValueDictionary()
_counter = itertools.count()
_lock = threading.Lock()


@dataclass
class Step:
    """One layer of a program."""

    spec: type[OpSpec]
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any]
    out_dtype: np.dtype
    where: str
    frees: tuple[str, ...] = ()     # intermediates no later step reads
    name: str = ""                  # the node's name


@dataclass
class Program:
    """The layers of one fused subgraph, with their constants."""

    input: str
    output: str
    steps: list[Step]
    constants: dict[str, np.ndarray]
    name: str = "subgraph"
    in_shape: tuple[Any, ...] | None = None   # from the model; None when unknown
    in_dtype: np.dtype | None = None
    out_dtype: np.dtype | None = None
    pid: str = ""                             # the id the Subgraph node names
    validated: set = field(default_factory=set)
    #: every input and output (``input``/``output`` first) with their shapes and types: an
    #: island between CPU nodes (see :func:`find_islands`) may read and give several tensors;
    #: only compiled programs run those (the Python ``Subgraph`` node has one of each)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    in_shapes: tuple[tuple[Any, ...] | None, ...] = ()
    in_dtypes: tuple[np.dtype | None, ...] = ()
    out_dtypes: tuple[np.dtype | None, ...] = ()

    def __post_init__(self) -> None:
        self.inputs = self.inputs or (self.input,)
        self.outputs = self.outputs or (self.output,)
        self.in_shapes = self.in_shapes or (self.in_shape,)
        self.in_dtypes = self.in_dtypes or (self.in_dtype,)
        self.out_dtypes = self.out_dtypes or (self.out_dtype,)

    def inputs_of(self, step: Step, values: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The step's input arrays: tensors computed so far, then the program's constants."""
        return [values[n] if n in values else self.constants[n] for n in step.inputs]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the layers; the first run for an input shape validates every layer."""
        values: dict[str, np.ndarray] = {self.input: x}
        signature = (x.shape, x.dtype.str)
        check = signature not in self.validated
        for step in self.steps:
            arrays = self.inputs_of(step, values)
            if check:
                step.spec.validate(arrays, step.attrs, step.out_dtype, step.where)
            values[step.output] = kernels.run_unchecked(step.spec, arrays, step.attrs,
                                                        step.out_dtype)
            for name in step.frees:
                values.pop(name, None)
        if check:
            self.validated.add(signature)
        return values[self.output]


class Subgraph(OpSpec):
    """A fused run of layers (runtime only; not part of the op table or of saved graphs)."""

    name = "Subgraph"
    doc = "y = the program's layers applied in order to x (see ortnpu/runtime/fusion.py)."
    inputs = (Input("x", "act", "the subgraph's activation input"),)
    attrs = (Attr("program", str, "", "id of the program in this process"),)
    fused: ClassVar[bool] = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        if a["program"] not in _PROGRAMS:
            raise KernelError(f"{where}program {a['program']!r} is not loaded in this process; "
                              "fused subgraphs run only inside the ortnpu.InferenceSession that "
                              "made them")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        return _PROGRAMS[a["program"]].run(arrays[0])


def _dtype_of(model: onnx.ModelProto, name: str) -> np.dtype | None:
    """The tensor's numpy dtype from the model, or None when unknown (or not an ONNX type:
    onnxruntime then refuses the model with its own message)."""
    for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if vi.name == name and vi.type.tensor_type.elem_type:
            return np_dtype(vi.type.tensor_type.elem_type)
    return None


def _shape_of(model: onnx.ModelProto, name: str) -> tuple[Any, ...] | None:
    """Dimensions of a tensor from the model (ints, or None where symbolic)."""
    for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        tt = vi.type.tensor_type
        if vi.name == name and tt.HasField("shape"):
            return tuple(dim_size(d) for d in tt.shape.dim)
    return None


def fuse_subgraphs(model: onnx.ModelProto, min_nodes: int = 2
                   ) -> tuple[onnx.ModelProto, list[Program]]:
    """Replace each fusable run of ``com.ortnpu`` nodes by one ``Subgraph`` node.

    A run fuses when its nodes are consecutive in the graph, it reads exactly one activation
    from outside (the rest are initializers) and exactly one of its tensors is used outside
    it or is a graph output. Other runs stay one node per layer.

    Returns:
        The new model and the programs, which the caller must keep alive while it runs.
    """
    g = model.graph
    # an initializer that is also a graph input is only a default: a feed may replace it, so
    # a program must not freeze it as a constant (it counts as a second activation input)
    fed = {i.name for i in g.input}
    inits = {i.name: i for i in g.initializer if i.name not in fed}
    consumers: dict[str, list[int]] = {}
    for k, node in enumerate(g.node):
        for t in node_inputs(node):   # an If/Loop/Scan body's reads count
            consumers.setdefault(t, []).append(k)
    graph_outputs = {o.name for o in g.output}
    runs: list[list[int]] = []
    for k, node in enumerate(g.node):
        if node.domain == DOMAIN and not node.op_type.startswith("Subgraph"):
            if runs and runs[-1][-1] == k - 1:
                runs[-1].append(k)
            else:
                runs.append([k])
    fused: dict[int, onnx.NodeProto] = {}
    drop: set[int] = set()
    programs: list[Program] = []
    for run in runs:
        program_node = _fuse(model, run, inits, consumers, graph_outputs, min_nodes, programs)
        if program_node is not None:
            fused[run[0]] = program_node
            drop.update(run)
    if not programs:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for k, node in enumerate(g.node):
        if k in fused:
            out.graph.node.append(fused[k])
        elif k not in drop:
            out.graph.node.append(node)
    used = {t for n in out.graph.node for t in node_inputs(n)}
    keep = [i for i in g.initializer if i.name in used or i.name in fed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out, programs


def _fuse(model: onnx.ModelProto, run: list[int], inits: dict[str, onnx.TensorProto],
          consumers: dict[str, list[int]], graph_outputs: set[str], min_nodes: int,
          programs: list[Program]) -> onnx.NodeProto | None:
    if len(run) < min_nodes:
        return None
    nodes = [model.graph.node[k] for k in run]
    members = set(run)
    produced = {o for n in nodes for o in n.output}
    external = [t for n in nodes for t in n.input
                if t and t not in produced and t not in inits]
    leaving = [t for t in produced
               if t in graph_outputs or any(c not in members for c in consumers.get(t, []))]
    if len(set(external)) != 1 or len(leaving) != 1:
        return None
    out_dtype = _dtype_of(model, leaving[0])
    if out_dtype is None:
        return None
    available = {external[0]}
    for node in nodes:   # the graph's order need not be topological; the program's must
        if any(t and t not in inits and t not in available for t in node.input):
            return None
        available.update(node.output)
    program = program_of(model, nodes, [external[0]], [leaving[0]], inits)
    if program is None:
        return None
    register(program)
    programs.append(program)
    return helper.make_node(op_type_name("Subgraph", out_dtype), [external[0]], [leaving[0]],
                            name=program.name, domain=DOMAIN, program=program.pid,
                            node_name=program.name)


def program_of(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], inputs: Sequence[str],
               outputs: Sequence[str], inits: Mapping[str, onnx.TensorProto]) -> Program | None:
    """The program of ``nodes`` (in an order where each reads only what is computed before it,
    or ``inputs``, or constants) with these inputs and outputs; None when a node is not an op
    of the domain or a constant is not an ONNX type (then the nodes stay as they are)."""
    steps: list[Step] = []
    constants: dict[str, np.ndarray] = {}
    available = set(inputs)
    for node in nodes:
        if any(t and t not in inits and t not in available for t in node.input):
            return None   # reads a tensor not computed before it (a cycle, a misordered graph)
        available.update(node.output)
        try:
            spec = spec_of(node.op_type)
            _, _, dtype = parse_op_type(node.op_type)
        except KernelError:
            return None
        attrs = spec.full_attrs({a.name: helper.get_attribute_value(a) for a in node.attribute})
        for t in node.input:
            if t in inits and t not in constants:
                if np_dtype(inits[t].data_type) is None:
                    return None   # not an ONNX type: onnxruntime refuses the model itself
                constants[t] = numpy_helper.to_array(inits[t])
        steps.append(Step(spec, tuple(node.input), node.output[0], attrs, dtype,
                          f"node {node.name!r} ({node.op_type}): ", name=node.name))
    produced = {o for n in nodes for o in n.output}
    last_use: dict[str, int] = {}
    for k, step in enumerate(steps):
        for t in step.inputs:
            if t in produced:
                last_use[t] = k
    frees: dict[int, list[str]] = {}
    for t, j in last_use.items():   # one pass: session creation stays linear in chain length
        if t not in outputs:
            frees.setdefault(j, []).append(t)
    for k, step in enumerate(steps):
        step.frees = tuple(frees.get(k, ()))
    first = nodes[0].name or "subgraph"
    # when the model does not say: what the layer that makes the tensor gives
    made = {step.output: np.dtype(step.out_dtype) for step in steps}
    for node in model.graph.node:
        if node.domain == DOMAIN and node.output and node.output[0] in inputs:
            with contextlib.suppress(KernelError):   # not an op type of the domain
                made[node.output[0]] = np.dtype(parse_op_type(node.op_type)[2])
    return Program(inputs[0], outputs[0], steps, constants,
                   name=f"{first}..{nodes[-1].name}" if len(nodes) > 1 else first,
                   in_shape=_shape_of(model, inputs[0]), in_dtype=_dtype_of(model, inputs[0]),
                   out_dtype=_dtype_of(model, outputs[0]), inputs=tuple(inputs),
                   outputs=tuple(outputs),
                   in_shapes=tuple(_shape_of(model, t) for t in inputs),
                   in_dtypes=tuple(_dtype_of(model, t) or made.get(t) for t in inputs),
                   out_dtypes=tuple(_dtype_of(model, t) or made.get(t) for t in outputs))


def register(program: Program) -> None:
    """Give ``program`` its id in this process (what a ``Subgraph`` node names)."""
    digest = hashlib.sha1("".join(s.name for s in program.steps).encode()).hexdigest()[:12]
    with _lock:
        pid = f"{digest}-{next(_counter)}"
        _PROGRAMS[pid] = program
    program.pid = pid


def topological_order(graph: onnx.GraphProto) -> list[int] | None:
    """The graph's node indices, each after the nodes that produce what it reads (the graph's
    own order where it allows); None when the nodes form a cycle."""
    producer = {t: k for k, n in enumerate(graph.node) for t in n.output if t}
    preds = [{producer[t] for t in node_inputs(n) if t in producer} - {k}
             for k, n in enumerate(graph.node)]
    readers: list[list[int]] = [[] for _ in graph.node]
    for k, ps in enumerate(preds):
        for q in ps:
            readers[q].append(k)
    waiting = [len(ps) for ps in preds]
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for r in readers[k]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    return order if len(order) == len(graph.node) else None


def find_islands(graph: onnx.GraphProto, member: Callable[[onnx.NodeProto], bool]
                 ) -> list[list[int]]:
    """Group the ``member`` nodes (NPU layers) into islands that can each run as one program.

    An island must be convex: no path may leave it through another node and come back (the
    program runs all its layers at once, so a CPU node between two of them could not run in
    between). Each node gets a level: a member the highest level of the members it reads, plus
    one for each non-member on the way from a member (non-members that no member feeds count
    nothing). A path from a member out through a non-member and back raises the level, so
    connected members of equal level form convex islands, as large as this rule allows (NPU
    layers between float LayerNorm nodes: one island between each pair). Returns the islands
    (node indices in an order that computes each node after its inputs), or [] when the graph
    has a cycle.
    """
    order = topological_order(graph)
    if order is None:
        return []
    producer = {t: k for k, n in enumerate(graph.node) for t in n.output if t}
    is_member = [member(n) for n in graph.node]
    level = [0] * len(graph.node)
    tainted = [False] * len(graph.node)   # a non-member that some member feeds
    parent = list(range(len(graph.node)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k in order:
        preds = {producer[t] for t in node_inputs(graph.node[k]) if t in producer} - {k}
        if is_member[k]:
            level[k] = max([level[p] if is_member[p] else level[p] + 1
                            for p in preds if is_member[p] or tainted[p]], default=0)
            for p in preds:
                if is_member[p] and level[p] == level[k]:
                    parent[root(p)] = root(k)
        else:
            fed = [p for p in preds if is_member[p] or tainted[p]]
            tainted[k] = bool(fed)
            level[k] = max((level[p] for p in fed), default=0)
    groups: dict[int, list[int]] = {}
    for k in order:
        if is_member[k]:
            groups.setdefault(root(k), []).append(k)
    return list(groups.values())


__all__ = ["Program", "Subgraph", "find_islands", "fuse_subgraphs", "program_of", "register",
           "topological_order"]
