"""Fold the shape arithmetic of exports with a dynamic batch, one entry at a time.

An exporter that keeps the batch dynamic writes every Reshape's target as run-time arithmetic
on ``Shape`` outputs: a ViT's attention reshapes ``x`` to ``[Shape(x)[0], Shape(x)[1], 3,
heads, Shape(x)[2] / heads]``. Only the first entry depends on the batch, but
:class:`~ortnpu.passes.FoldConstants` folds a node only when all its inputs are known, so the
whole chain stayed on the CPU, the Reshape's output shape stayed unknown and everything after
it could not be placed (a ViT-S exported with a dynamic batch: 116 of 150 nodes on the CPU).

This pass follows the int64 shape vectors entry by entry (a static dim is known, a dynamic one
is a symbol: the dim's name from shape inference, or anonymous), folds every vector that turns
out fully known, and gives a Reshape with a run-time target a constant one: an entry that is
the input's own dim at that position becomes ``0`` (copy), and a single entry still unknown
becomes ``-1``. That is exact: a Reshape is only valid when its target's product equals the
input's size, so the one unknown entry can only be the value ``-1`` infers.

One more form needs the batch at run time: a constant repeated over the batch and joined to
the activations (a ViT's ``cls_token.expand(b, -1, -1)`` and ``Concat`` on the token axis).
It becomes ``Add(Pad(x), E)``, ``E`` the constant in its slots and zeros elsewhere, and when
the Concat's only reader adds a constant (the position embedding) that constant joins ``E``:
the same float values bit for bit (``0 + c`` and ``x + 0`` are exact), no batch needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    attr,
    opset_version,
    remove_nodes,
    shapes_and_types,
    topological_order,
    unique_name,
)

#: Longest shape vector followed (a shape has one entry per dim).
MAX_ENTRIES = 16

_INTEGER_TYPES = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
                  onnx.TensorProto.BOOL: np.bool_}

#: An entry: its value (int), a dynamic dim (its symbol: equal symbols are equal dims), or
#: unknown (None).
Entry = int | str | None


@dataclass(frozen=True)
class ShapeVector:
    """A small integer tensor of rank 0 or 1 whose entries are known (int) or not."""

    entries: tuple[Entry, ...]
    scalar: bool = False

    @property
    def known(self) -> bool:
        """True when every entry is known before run time."""
        return all(isinstance(e, int) for e in self.entries)


def _trunc_div(a: int, b: int) -> int | None:
    """Integer Div as onnxruntime computes it (truncated toward zero); None for b = 0."""
    if b == 0:
        return None
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


_BINARY: dict[str, Callable[[int, int], int | None]] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": _trunc_div,
    "Equal": lambda a, b: int(a == b),
}


def _broadcast(*vectors: ShapeVector) -> int | None:
    """The common length of rank-0/1 vectors under broadcasting, or None if they do not."""
    lengths = {len(v.entries) for v in vectors if not (v.scalar or len(v.entries) == 1)}
    if len(lengths) > 1:
        return None
    return lengths.pop() if lengths else 1


def _at(v: ShapeVector, i: int) -> Entry:
    return v.entries[0] if len(v.entries) == 1 else v.entries[i]


def _fresh_shapes(model: onnx.ModelProto) -> tuple[dict, dict]:
    """Shapes and types from one shape inference over the whole graph: only then do equal
    dim symbols mean equal dims (value infos kept from earlier runs may reuse a name), so
    when inference fails every symbol is dropped (unknown)."""
    from ortnpu.errors import ModelError
    from ortnpu.passes.shape_inference import InferShapes

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    try:
        probe = InferShapes()(probe).model
    except ModelError:
        shapes, types = shapes_and_types(model)
        return {k: [d if isinstance(d, int) else None for d in v]
                for k, v in shapes.items()}, types
    return shapes_and_types(probe)


def _repeated_constant(index: GraphIndex, vectors: dict[str, ShapeVector], name: str,
                       rank: int) -> np.ndarray | None:
    """One sample of ``Expand(C, s)`` when it only repeats float constant ``C`` over a
    dynamic batch (``s[0]`` dynamic, every other entry known), else None."""
    node = index.producer.get(name)
    if node is None or node.op_type != "Expand" or node.domain not in ("", "ai.onnx"):
        return None
    value, target = index.constant(node.input[0]), vectors.get(node.input[1])
    if value is None or value.dtype != np.float32 or target is None or \
            len(target.entries) != rank or value.ndim > rank or isinstance(target.entries[0], int):
        return None
    rest = target.entries[1:]
    if not all(isinstance(e, int) and e >= 1 for e in rest):
        return None
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if value.shape[0] != 1:
        return None
    try:
        shape = np.broadcast_shapes(value.shape[1:], tuple(rest))  # type: ignore[arg-type]
    except ValueError:
        return None
    return np.broadcast_to(value, (1, *shape)).copy()


class FoldShapeArithmetic(Pass):
    """Fold shape vectors that are known entry by entry; give one-unknown Reshapes a ``-1``.

    Follows ``Shape`` (with ``start``/``end``), ``Gather`` and ``Slice`` on axis 0,
    ``Unsqueeze``/``Squeeze`` between rank 0 and 1, ``Concat`` on axis 0, ``Cast`` between
    integer types, ``Identity``, integer ``Add``/``Sub``/``Mul``/``Div``, ``Equal`` and
    ``Where``. Anything else is unknown.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        if not any(n.op_type == "Shape" for n in graph.node):
            # only a Shape yields an entry that is not a constant: without one every vector
            # is FoldConstants' job, and the fresh shape inference (a copy of the model) is
            # not worth paying in every cleanup round
            return []
        index = GraphIndex(graph)
        shapes, types = _fresh_shapes(model)
        vectors: dict[str, ShapeVector] = {}

        def vector(name: str) -> ShapeVector | None:
            if name in vectors:
                return vectors[name]
            value = index.constant(name)
            if value is None or value.dtype.kind not in "iub" or value.ndim > 1 or \
                    value.size > MAX_ENTRIES:
                return None
            v = ShapeVector(tuple(int(x) for x in value.reshape(-1)), value.ndim == 0)
            vectors[name] = v
            return v

        for node in topological_order(graph):
            if node.domain in ("", "ai.onnx") and len(node.output) == 1:
                out = self._follow(node, vector, shapes)
                if out is not None and len(out.entries) <= MAX_ENTRIES:
                    vectors[node.output[0]] = out

        changes: list[str] = []
        folded = self._fold_known(graph, index, vectors, types, changes)
        self._reshape_targets(graph, index, vectors, folded, shapes, changes)
        if opset_version(model, 0) >= 11:
            self._expanded_constants(graph, GraphIndex(graph), vectors, shapes, changes)
        return changes

    @staticmethod
    def _follow(node: onnx.NodeProto, vector: Callable[[str], ShapeVector | None],
                shapes: dict) -> ShapeVector | None:
        """The shape vector ``node`` writes, or None when it is not one this pass follows."""
        op = node.op_type
        if op == "Shape":
            dims = shapes.get(node.input[0])
            if dims is None:
                return None
            start, end = int(attr(node, "start", 0)), attr(node, "end", None)
            dims = dims[start:] if end is None else dims[start:int(end)]
            return ShapeVector(tuple(d if isinstance(d, int) and d >= 0 else
                                     (d if isinstance(d, str) and d else None) for d in dims))
        ins = [vector(x) if x else None for x in node.input]
        if not ins or ins[0] is None:
            return None
        first = ins[0]
        if op in ("Identity", "Cast"):
            to = attr(node, "to", onnx.TensorProto.INT64)
            return first if op == "Identity" or to in _INTEGER_TYPES else None
        if op == "Gather":
            idx = ins[1] if len(ins) > 1 else None
            if first.scalar or idx is None or not idx.known or int(attr(node, "axis", 0)):
                return None
            n = len(first.entries)
            if any(not -n <= int(i) < n for i in idx.entries):  # type: ignore[arg-type]
                return None
            return ShapeVector(tuple(first.entries[int(i)] for i in idx.entries),  # type: ignore[arg-type]
                               idx.scalar)
        if op == "Slice":
            return FoldShapeArithmetic._slice(first, ins[1:])
        if op in ("Unsqueeze", "Squeeze"):
            if op == "Unsqueeze" and first.scalar:
                return ShapeVector(first.entries)
            if op == "Squeeze" and not first.scalar and len(first.entries) == 1:
                return ShapeVector(first.entries, scalar=True)
            return None
        if op == "Concat":
            if int(attr(node, "axis", 0)) not in (0, -1) or any(v is None or v.scalar
                                                                for v in ins):
                return None
            return ShapeVector(tuple(e for v in ins for e in v.entries))  # type: ignore[union-attr]
        if op in _BINARY and len(ins) == 2 and ins[1] is not None:
            n = _broadcast(first, ins[1])
            if n is None:
                return None
            fn = _BINARY[op]
            out = []
            for i in range(n):
                a, b = _at(first, i), _at(ins[1], i)
                if isinstance(a, int) and isinstance(b, int):
                    out.append(fn(a, b))
                elif op == "Equal" and ((isinstance(a, str) and isinstance(b, int) and b < 0) or
                                        (isinstance(b, str) and isinstance(a, int) and a < 0)):
                    out.append(0)   # a dim is never negative: torch's expand(b, -1, -1) test
                else:
                    out.append(None)
            return ShapeVector(tuple(out), first.scalar and ins[1].scalar)
        if op == "Where" and len(ins) == 3 and all(v is not None for v in ins):
            cond, x, y = ins
            n = _broadcast(cond, x, y)  # type: ignore[arg-type]
            if n is None:
                return None
            out = []
            for i in range(n):
                c, a, b = _at(cond, i), _at(x, i), _at(y, i)  # type: ignore[arg-type]
                out.append((a if c else b) if isinstance(c, int) else
                           (a if a == b and a is not None else None))
            return ShapeVector(tuple(out), all(v.scalar for v in ins))  # type: ignore[union-attr]
        return None

    @staticmethod
    def _slice(data: ShapeVector, params: Sequence[ShapeVector | None]) -> ShapeVector | None:
        """``data[start:end:step]`` of a 1-D vector with constant Slice parameters."""
        if data.scalar or len(params) < 2 or any(p is None or not p.known
                                                 for p in params[:2]):
            return None
        rest = list(params[2:4])
        if any(p is None or not p.known for p in rest):
            return None
        starts, ends = params[0].entries, params[1].entries  # type: ignore[union-attr]
        axes = rest[0].entries if rest else (0,)  # type: ignore[union-attr]
        steps = rest[1].entries if len(rest) > 1 else (1,)  # type: ignore[union-attr]
        if len(starts) != 1 or tuple(axes) not in ((0,), (-1,)) or steps[0] == 0:
            return None
        return ShapeVector(data.entries[slice(starts[0], ends[0], steps[0])])

    @staticmethod
    def _fold_known(graph: onnx.GraphProto, index: GraphIndex,
                    vectors: dict[str, ShapeVector], types: dict[str, int],
                    changes: list[str]) -> set[str]:
        """Replace each node whose vector is fully known by an initializer; their names."""
        doomed: list[onnx.NodeProto] = []
        folded: set[str] = set()
        for node in graph.node:
            out = node.output[0] if len(node.output) == 1 else ""
            v = vectors.get(out)
            dtype = _INTEGER_TYPES.get(types.get(out, 0))
            if v is None or not v.known or dtype is None or node.op_type == "Constant" or \
                    out in index.graph_outputs or all(index.is_constant(x) for x in node.input
                                                      if x):
                continue  # constant inputs only: FoldConstants' job
            value = np.array(v.entries, dtype=dtype).reshape(() if v.scalar else (-1,))
            graph.initializer.append(numpy_helper.from_array(value, out))
            doomed.append(node)
            folded.add(out)
        remove_nodes(graph, doomed)
        if doomed:
            names = ", ".join(repr(n.name or n.op_type) for n in doomed[:4])
            more = f" and {len(doomed) - 4} more" if len(doomed) > 4 else ""
            changes.append(f"folded {len(doomed)} shape computation(s) whose entries are all "
                           f"static: {names}{more}")
        return folded

    @staticmethod
    def _reshape_targets(graph: onnx.GraphProto, index: GraphIndex,
                         vectors: dict[str, ShapeVector], folded: set[str],
                         shapes: dict, changes: list[str]) -> None:
        """Give Reshapes whose run-time target copies input dims or has one unknown entry a
        constant target (0 for a copied dim, -1 for the unknown)."""
        taken = all_tensor_names(graph)
        for node in graph.node:
            if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] in folded or \
                    index.is_constant(node.input[1]):
                continue
            v = vectors.get(node.input[1])
            if v is None or v.scalar:
                continue
            target = FoldShapeArithmetic._constant_target(
                list(v.entries), shapes.get(node.input[0]), bool(attr(node, "allowzero", 0)))
            if target is None:
                continue
            name = unique_name(taken, f"{node.name or node.output[0]}_target")
            graph.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
            changes.append(f"Reshape {node.name!r}: its run-time target became the constant "
                           f"{target.tolist()}")

    @staticmethod
    def _expanded_constants(graph: onnx.GraphProto, index: GraphIndex,
                            vectors: dict[str, ShapeVector], shapes: dict,
                            changes: list[str]) -> None:
        """Concat of batch-repeated constants and one activation → Pad + Add of a constant."""
        taken = all_tensor_names(graph)
        for node in list(graph.node):
            out_dims = shapes.get(node.output[0]) if node.op_type == "Concat" else None
            if out_dims is None or len(out_dims) < 2:
                continue
            rank = len(out_dims)
            axis = int(attr(node, "axis", 0)) % rank
            parts = [_repeated_constant(index, vectors, x, rank) for x in node.input]
            free = [k for k, p in enumerate(parts) if p is None]
            if axis == 0 or len(free) != 1 or len(free) == len(parts):
                continue
            x = node.input[free[0]]
            x_dims = shapes.get(x)
            if x_dims is None or len(x_dims) != rank or \
                    not all(isinstance(d, int) and d > 0 for d in x_dims[1:]):
                continue
            slots = [np.zeros([1, *x_dims[1:]], np.float32) if p is None else p for p in parts]
            if any(s.shape[1:axis] + s.shape[axis + 1:] != slots[free[0]].shape[1:axis] +
                   slots[free[0]].shape[axis + 1:] for s in slots):
                continue
            before = sum(s.shape[axis] for s in slots[:free[0]])
            after = sum(s.shape[axis] for s in slots[free[0] + 1:])
            table = np.concatenate(slots, axis=axis).astype(np.float32)
            reader = index.only_consumer(node.output[0])
            add_to = None
            if reader is not None and reader.op_type == "Add" and reader.domain in ("", "ai.onnx"):
                other = reader.input[1] if reader.input[0] == node.output[0] else reader.input[0]
                value = index.constant(other)
                if value is not None and value.dtype == np.float32 and value.ndim <= rank and \
                        np.broadcast_shapes(value.shape, table.shape) == table.shape:
                    add_to, table = reader, (table + value).astype(np.float32)
            pads = np.zeros(2 * rank, np.int64)
            pads[axis], pads[rank + axis] = before, after
            label = node.name or node.output[0]
            pads_name = unique_name(taken, f"{label}_pads")
            table_name = unique_name(taken, f"{label}_constants")
            padded = unique_name(taken, f"{label}_padded")
            graph.initializer.extend([numpy_helper.from_array(pads, pads_name),
                                      numpy_helper.from_array(table, table_name)])
            pad = helper.make_node("Pad", [x, pads_name], [padded],
                                   name=unique_name(taken, f"{label}/pad"), mode="constant")
            position = list(graph.node).index(node)
            graph.node.insert(position, pad)
            if add_to is not None:
                del add_to.input[:]
                add_to.input.extend([padded, table_name])
                remove_nodes(graph, [node])
                what = f"and the constant Add {add_to.name!r} became Pad + Add"
            else:
                add = helper.make_node("Add", [padded, table_name], [node.output[0]],
                                       name=unique_name(taken, f"{label}/add"))
                graph.node.insert(position + 1, add)
                remove_nodes(graph, [node])
                what = "became Pad + Add"
            changes.append(f"Concat {node.name!r} of constants repeated over the batch {what} "
                           f"of a constant (no run-time batch needed)")

    @staticmethod
    def _constant_target(entries: list[Entry], dims: list | None,
                         allowzero: bool) -> np.ndarray | None:
        """The constant Reshape target equal to ``entries`` on every valid input, or None."""
        if any(isinstance(e, int) and e < -1 for e in entries):
            return None
        if not allowzero and dims is not None:
            for i, e in enumerate(entries):
                if isinstance(e, str) and i < len(dims) and dims[i] == e:
                    entries[i] = 0     # the input's own dim at this position: copy it
        unknown = [i for i, e in enumerate(entries) if not isinstance(e, int)]
        if not unknown:
            return np.array(entries, np.int64)
        if len(unknown) > 1 or -1 in entries or (allowzero and 0 in entries):
            return None
        entries[unknown[0]] = -1
        return np.array(entries, np.int64)


__all__ = ["FoldShapeArithmetic", "ShapeVector"]
