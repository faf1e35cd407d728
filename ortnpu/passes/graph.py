"""Small helpers over an ONNX graph: producers, consumers, constants, attributes, shapes.

These work on :class:`onnx.GraphProto` in place and are shared by the passes, the support checks,
the partitioner and the estimator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.onnx_types import dim_size

#: A tensor shape as far as it is known: ints for static dims, str or None for dynamic ones.
Shape = list[int | str | None]


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of attribute ``name`` of ``node`` (ints, floats, lists, strings decoded)."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    """Set (replace) attribute ``name`` of ``node``."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def get_meta(node: onnx.NodeProto | onnx.ModelProto, key: str) -> str | None:
    """The value of ``key`` in the node's (or model's) ``metadata_props``, or None."""
    for p in node.metadata_props:
        if p.key == key:
            return p.value
    return None


def set_meta(node: onnx.NodeProto | onnx.ModelProto, key: str, value: str) -> None:
    """Set ``key`` in the node's (or model's) ``metadata_props``."""
    for p in node.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = node.metadata_props.add()
    entry.key, entry.value = key, value


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names an If/Loop/Scan node's bodies read from the outer scope (implicit inputs)."""
    names: set[str] = set()
    for g in subgraphs(node):
        local = local_names(g)
        for n in g.node:
            names.update(x for x in n.input if x and x not in local)
            names.update(x for x in subgraph_inputs(n) if x not in local)
        # a body may return an outer tensor as it is (an output no body node produces)
        names.update(o.name for o in g.output if o.name and o.name not in local)
    return names


def implicit_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer tensors only the node's subgraph bodies read (not among its explicit inputs).

    Every rewrite that renames, removes or replaces a tensor must treat these as reads of the
    node: they are the one place where subgraphs see the outer graph.
    """
    if not node.attribute:
        return []
    return sorted(subgraph_inputs(node) - set(node.input))


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit non-empty inputs, then implicit inputs of subgraph bodies."""
    return [x for x in node.input if x] + implicit_inputs(node)


class GraphIndex:
    """Producer / consumer / initializer maps of a graph, built once; rebuild after edits."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for name in node_inputs(node):
                self.consumers[name].append(node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input} - set(self.initializers)
        self.graph_outputs = {o.name for o in graph.output}

    def is_constant(self, name: str) -> bool:
        """True if ``name`` is an initializer (not overridable by a graph input) or a Constant."""
        if name in self.initializers and name not in self.graph_inputs:
            return True
        node = self.producer.get(name)
        return node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx")

    def constant(self, name: str) -> np.ndarray | None:
        """The value of constant tensor ``name``, or None if it is not constant."""
        if not name:
            return None
        if name in self.initializers and name not in self.graph_inputs:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return constant_node_value(node)
        return None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The single node reading ``name`` if exactly one does and it is not a graph output."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.graph_outputs:
            return users[0]
        return None


def clip_bounds(index: GraphIndex, clip: onnx.NodeProto
                ) -> tuple[float | None, float | None] | None:
    """``(min, max)`` of a ``Clip`` (``None`` for an absent bound; inputs of opset 11+ or
    attributes of opset 6), or ``None`` when a bound input is not constant."""
    bounds: list[float | None] = []
    for pos, key in ((1, "min"), (2, "max")):
        if len(clip.input) > pos and clip.input[pos]:
            value = index.constant(clip.input[pos])
            if value is None:
                return None
            bounds.append(float(np.asarray(value).reshape(-1)[0]))
        else:
            value = attr(clip, key)
            bounds.append(None if value is None else float(value))
    return bounds[0], bounds[1]


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node, or None for a sparse value."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(helper.get_attribute_value(a),
                            dtype=np.float32 if a.name == "value_float" else np.int64)
        if a.name in ("value_floats", "value_ints"):
            return np.array(helper.get_attribute_value(a),
                            dtype=np.float32 if a.name == "value_floats" else np.int64)
    return None


def node_key(node: onnx.NodeProto) -> tuple[str, str, tuple[str, ...]]:
    """A key that identifies a node of one graph (outputs are unique in SSA form).

    Python protobuf wrappers of repeated fields are not stable objects, so nodes are never
    compared with ``id()``.
    """
    return node.name, node.op_type, tuple(node.output)


def remove_nodes(graph: onnx.GraphProto, doomed: Iterable[onnx.NodeProto]) -> None:
    """Remove the given nodes from ``graph``, keeping the order of the rest."""
    keys = {node_key(n) for n in doomed}
    keep = [n for n in graph.node if node_key(n) not in keys]
    if len(keep) != len(graph.node):
        kept = [onnx.NodeProto() for _ in keep]
        for dst, src in zip(kept, keep, strict=True):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(kept)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan node (empty for other nodes)."""
    return [g for a in node.attribute
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def local_names(graph: onnx.GraphProto) -> set[str]:
    """Tensors a (sub)graph defines itself: inputs, initializers, node outputs."""
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for n in graph.node:
        names.update(n.output)
    return names


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every reader of tensor ``old`` (including subgraph bodies) read ``new`` instead.

    A body that defines its own ``old`` (shadowing the outer one) is left alone.
    """
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x == old:
                node.input[i] = new
        for g in subgraphs(node):
            if old not in local_names(g):
                rename_input(g, old, new)
                for o in g.output:   # a body may return the outer tensor itself
                    if o.name == old:
                        o.name = new


def opset_version(model: onnx.ModelProto, default: int = 0) -> int:
    """The model's opset of the default ONNX domain (``default`` when it imports none)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return default


def conv_operands(node: onnx.NodeProto, op_type: str, index: GraphIndex,
                  shapes: dict[str, Shape | None], spatial: int = 2
                  ) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """``(weights, (C, *spatial sizes))`` of an ``op_type`` node (Conv, ConvTranspose) with
    ``spatial`` spatial axes whose weights (and bias, if any) are constant and whose input has
    static sizes after the batch; else None. For the rewrites that rebuild such a layer."""
    if node.op_type != op_type or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    w = index.constant(node.input[1])
    shape = shapes.get(node.input[0])
    if w is None or w.ndim != spatial + 2 or shape is None or len(shape) != spatial + 2:
        return None
    if len(node.input) > 2 and node.input[2] and index.constant(node.input[2]) is None:
        return None
    dims = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return w, tuple(int(d) for d in dims)


def rebuild_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto],
                  dropped: set[str] = frozenset()) -> None:
    """Replace the graph's nodes by ``nodes`` and drop the constants named ``dropped``."""
    del graph.node[:]
    graph.node.extend(nodes)
    drop_constants(graph, set(dropped))


def drop_constants(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the initializers and ``Constant`` nodes that hold ``names`` (weights a rewrite
    replaced and nothing else reads)."""
    if not names:
        return
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    remove_nodes(graph, [n for n in graph.node
                         if n.op_type == "Constant" and n.output[0] in names])


def replace_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    """Set initializer ``name`` to ``value`` (added if missing)."""
    tensor = numpy_helper.from_array(value, name)
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def unique_name(taken: set[str], base: str) -> str:
    """``base`` if free in ``taken``, else ``base_1``, ``base_2``...; the result is added."""
    name, k = base, 1
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def all_tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name used in ``graph`` (inputs, outputs, initializers, value_info)."""
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer} | {v.name for v in graph.value_info}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
    names.discard("")
    return names


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Known value infos of the main graph: inputs, outputs, value_info and initializers."""
    g = model.graph
    infos: dict[str, onnx.ValueInfoProto] = {}
    for t in g.initializer:
        infos[t.name] = helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    for v in list(g.value_info) + list(g.output) + list(g.input):
        if v.type.HasField("tensor_type"):
            infos[v.name] = v
    return infos


def shape_of(info: onnx.ValueInfoProto | None) -> Shape | None:
    """The shape in ``info`` (None if the rank is unknown)."""
    if info is None or not info.type.HasField("tensor_type"):
        return None
    tt = info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    # a non-positive dim_value (Paddle's -1) is unknown, like an empty dim
    return [d.dim_param if d.HasField("dim_param") else dim_size(d) for d in tt.shape.dim]


def shapes_and_types(model: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Shapes and element types of every tensor whose info is known."""
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    for name, info in value_infos(model).items():
        s = shape_of(info)
        if s is not None:
            shapes[name] = s
        if info.type.tensor_type.elem_type:
            types[name] = info.type.tensor_type.elem_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            if value is not None:
                shapes[node.output[0]] = list(value.shape)
                types[node.output[0]] = helper.np_dtype_to_tensor_dtype(value.dtype)
    return shapes, types


def is_static(shape: Shape | None) -> bool:
    """True if the shape is known and every dim is a non-negative int."""
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in a topological order (stable: ties keep file order).

    Raises:
        ModelError: the graph has a cycle or reads a tensor nobody produces.
    """
    from ortnpu.errors import ModelError

    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    order: list[onnx.NodeProto] = []
    producers = {o for n in graph.node for o in n.output}
    while pending:
        rest = []
        for node in pending:
            needs = [x for x in node_inputs(node) if x in producers]
            if all(x in available for x in needs):
                order.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            names = ", ".join(repr(n.name or n.op_type) for n in rest[:5])
            raise ModelError(f"the graph has a cycle or unreachable nodes: {names}")
        pending = rest
    return order


def iter_weight_inputs(node: onnx.NodeProto) -> Iterator[tuple[int, str]]:
    """(position, name) of inputs that hold a layer's weights or bias."""
    positions = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                 "BatchNormalization": (1, 2, 3, 4), "PRelu": (1,)}.get(node.op_type, ())
    for i in positions:
        if i < len(node.input) and node.input[i]:
            yield i, node.input[i]
