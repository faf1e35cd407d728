"""The export driver shared by every style: find the ``com.ortnpu`` nodes, lower each one.

A style is a table ``op name -> lowering function`` (one function per op of
``ortnpu.domain.OPS``); the driver gives each lowering a :class:`NodeContext` (validated
attributes, constant parameters, input types and shapes) and a :class:`Builder`, then assembles
the standard graph, drops the constants only the NPU nodes used, and checks the result with
``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ortnpu.domain import DOMAIN, OPS, OpSpec, parse_op_type, spec_of
from ortnpu.domain.spec import ONNX_OF_DTYPE
from ortnpu.errors import ModelError, OrtNpuError, UnsupportedError, first_line
from ortnpu.exporters.builder import F32, NP_OF_ONNX, Builder
from ortnpu.onnx_types import dim_size
from ortnpu.passes.graph import node_inputs

#: Lowest default-domain opset of an export (ReduceSum/Clip/Pad with tensor inputs).
MIN_OPSET = 13


@dataclass
class NodeContext:
    """Everything a lowering needs to know about one NPU node."""

    node: onnx.NodeProto
    spec: type[OpSpec]
    attrs: dict[str, Any]
    out_dtype: np.dtype
    constants: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]

    @property
    def where(self) -> str:
        """Prefix naming the node in messages."""
        return f"node {self.node.name!r} ({self.node.op_type}): "

    @property
    def out_type(self) -> int:
        """ONNX element type of the output."""
        return ONNX_OF_DTYPE[self.out_dtype]

    @property
    def output(self) -> str:
        """Name of the node's output."""
        return self.node.output[0]

    def input(self, k: int) -> str:
        """Name of input ``k``."""
        return self.node.input[k]

    def const(self, k: int) -> np.ndarray:
        """The constant value of input ``k`` (parameters must be initializers)."""
        name = self.node.input[k]
        if name not in self.constants:
            raise UnsupportedError(f"{self.where}input {name!r} must be an initializer (a "
                                   "constant) to be exported; fold it into a constant first")
        return self.constants[name]

    def shape(self, k: int, static_from: int = 0) -> list[int]:
        """Shape of input ``k``; an error when a dimension from ``static_from`` on is unknown
        (``static_from=1`` lets the batch dimension stay dynamic)."""
        name = self.node.input[k]
        shape = self.shapes.get(name)
        if shape is None or any(d is None for d in shape[static_from:]):
            raise UnsupportedError(f"{self.where}the shape of {name!r} must be static to be "
                                   "exported; fix the input shapes first (ortnpu optimize "
                                   "--input-shape ...)")
        return [None if d is None else int(d) for d in shape]  # type: ignore[misc]

    def rank(self, k: int) -> int | None:
        """Rank of input ``k`` when known."""
        shape = self.shapes.get(self.node.input[k])
        return None if shape is None else len(shape)


Lowering = Callable[[Builder, NodeContext], None]


def check_table(table: Mapping[str, Lowering], style: str) -> None:
    """Every op of the domain must have a lowering in a style's table."""
    missing = [op.name for op in OPS if op.name not in table]
    if missing:
        raise AssertionError(f"export style {style!r} lacks lowerings for {missing}")


def _known_types(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """Element types and shapes of every tensor we can know before lowering."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    shapes: dict[str, list[int | None]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.elem_type:
            types[vi.name] = t.elem_type
        if t.HasField("shape"):
            shapes[vi.name] = [dim_size(d) for d in t.shape.dim]
    for init in g.initializer:
        types[init.name] = init.data_type
        shapes[init.name] = list(init.dims)
    for node in g.node:
        if node.domain == DOMAIN:
            _, _, dtype = parse_op_type(node.op_type)
            types[node.output[0]] = ONNX_OF_DTYPE[dtype]
    return types, shapes


def _node_shapes(model: onnx.ModelProto, types: dict[str, int],
                 shapes: dict[str, list[int | None]]) -> dict[str, list[int | None]]:
    """Add the output shapes of NPU nodes by running their references on zero inputs."""
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for node in g.node:
        if node.domain != DOMAIN or node.output[0] in shapes:
            continue
        arrays = []
        for name in node.input:
            shape = shapes.get(name)
            if name in consts:
                arrays.append(consts[name])
            elif shape is not None and all(d is not None for d in shape):
                arrays.append(np.zeros(shape, NP_OF_ONNX.get(types.get(name, 0), np.int8)))
            else:
                break
        else:
            try:
                y = spec_of(node.op_type).run_reference(arrays, helper_attrs(node),
                                                        parse_op_type(node.op_type)[2])
            except OrtNpuError:
                continue
            shapes[node.output[0]] = list(y.shape)
    return shapes


def helper_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as a plain dict."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def lower_model(model: onnx.ModelProto, table: Mapping[str, Lowering], style: str,
                post: Callable[[Builder, onnx.GraphProto], None] | None = None,
                metadata: Mapping[str, str] | None = None,
                opaque_dequantize: bool = False) -> onnx.ModelProto:
    """Replace every ``com.ortnpu`` node of ``model`` by its lowering from ``table``.

    ``opaque_dequantize`` rewrites the per-tensor DequantizeLinear nodes at the NPU/CPU
    boundaries as Cast, Sub and Mul (see :func:`_dequantize_as_arithmetic`).
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"export needs an onnx.ModelProto, got {type(model).__name__}")
    g = model.graph
    types, shapes = _known_types(model)
    shapes = _node_shapes(model, types, shapes)
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    b = Builder(types=dict(types))
    used_by_standard: set[str] = set()
    for node in g.node:
        if node.domain != DOMAIN:
            if not (opaque_dequantize and _dequantize_as_arithmetic(b, node, constants, shapes)):
                b.nodes.append(node)
            used_by_standard.update(node_inputs(node))   # subgraph bodies' reads too
            continue
        try:
            spec = spec_of(node.op_type)
        except OrtNpuError as exc:
            raise UnsupportedError(f"node {node.name!r}: {exc}") from None
        _, _, out_dtype = parse_op_type(node.op_type)
        ctx = NodeContext(node, spec, spec.full_attrs(helper_attrs(node),
                                                      where=f"node {node.name!r}: "),
                          out_dtype, constants, shapes)
        b.prefix = node.name or node.output[0]
        table[spec.name](b, ctx)
        b.prefix = ""
    graph = helper.make_graph(b.nodes, g.name, list(g.input), [_with_shape(o, shapes)
                                                                for o in g.output],
                              doc_string=g.doc_string)
    if post is not None:
        post(b, graph)
    needed = {i for n in graph.node for i in node_inputs(n)} | used_by_standard
    needed |= {o.name for o in g.output}
    graph.initializer.extend(i for i in g.initializer if i.name in needed)
    graph.initializer.extend(i for i in b.initializers if i.name in needed)
    graph.value_info.extend(vi for vi in g.value_info if vi.name in _produced(graph))
    opsets = [o for o in model.opset_import if o.domain not in (DOMAIN, "", "ai.onnx")]
    default = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
                  + [MIN_OPSET])
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", default), *opsets],
                            ir_version=max(model.ir_version, 7),
                            producer_name="ortnpu.export")
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"ortnpu.export.style": style, **(metadata or {})})
    helper.set_model_props(out, props)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:
        raise UnsupportedError(f"the {style!r} export of {g.name!r} does not pass "
                               f"onnx.checker: {first_line(exc)}") from None
    return out


def _dequantize_as_arithmetic(b: Builder, node: onnx.NodeProto,
                              constants: Mapping[str, np.ndarray],
                              shapes: Mapping[str, list[int | None]]) -> bool:
    """Emit a per-tensor DequantizeLinear as ``(float(x) - float(zp)) * scale``.

    Why: stock onnxruntime (default optimizations) fuses DequantizeLinear -> float op ->
    QuantizeLinear into its own int8 kernels (QLinearSoftmax, QLinearSigmoid, QLinearAdd...),
    which compute something else than the float op the NPU graph's CPU part states; the
    simulator's sessions turn that fusion off (``session.disable_quant_qdq``), a user's plain
    session of the export cannot. Without a DequantizeLinear there is nothing to fuse, and the
    arithmetic is the same: ``x - zp`` of 8- and 16-bit integers is exact in float32, and the
    product is the one DequantizeLinear computes.

    Returns:
        False (the node is kept) for per-axis or non-constant parameters and other input types.
    """
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return False
    if b.types.get(node.input[0]) not in (TensorProto.INT8, TensorProto.UINT8,
                                          TensorProto.INT16):
        return False
    params = [constants.get(n) for n in node.input[1:3] if n]
    if any(p is None or p.size != 1 for p in params) or params[0].dtype != np.float32:
        return False
    scale = params[0].reshape(())
    zp = params[1].reshape(()) if len(params) > 1 else np.int64(0)
    xf = b.emit("Cast", [node.input[0]], F32, to=F32)
    if int(zp) != 0:
        xf = b.emit("Sub", [xf, b.const(np.float32(zp), np.float32)], F32)
    # The scale as a vector along the last axis where that axis is known: onnxruntime's
    # MatMulScaleFusion folds a Mul by a *scalar* that feeds a MatMul into FusedMatMul(alpha),
    # which rounds differently, and its NoopElimination removes an Add of 0 put in between.
    last = (shapes.get(node.output[0]) or shapes.get(node.input[0]) or [None])[-1]
    if isinstance(last, int) and last > 1:
        scale = np.full(last, scale, np.float32)
    b.emit("Mul", [xf, b.const(scale, np.float32)], F32, output=node.output[0])
    return True


def _with_shape(vi: onnx.ValueInfoProto, shapes: dict[str, list[int | None]]
                ) -> onnx.ValueInfoProto:
    """A graph output with its shape filled in when the NPU graph left it out (the checker
    requires one) and we know it."""
    t = vi.type.tensor_type
    if t.HasField("shape") or vi.name not in shapes:
        return vi
    return helper.make_tensor_value_info(vi.name, t.elem_type, shapes[vi.name])


def _produced(graph: onnx.GraphProto) -> set[str]:
    return {o for n in graph.node for o in n.output}
