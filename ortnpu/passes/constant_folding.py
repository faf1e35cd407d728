"""Constant folding: compute nodes whose inputs are all known before run time."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, constant_node_value, remove_nodes, shapes_and_types

#: Ops never folded: random, side effects, or structure the quantizer wants to see.
_NEVER_FOLD = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
    "Bernoulli", "QuantizeLinear", "DequantizeLinear", "If", "Loop", "Scan", "SequenceConstruct",
    "Optional",
})


class FoldConstants(Pass):
    """Replace nodes whose inputs are all constant by initializers holding their outputs.

    ``Constant`` nodes become initializers; ``Shape`` (and ``Size``) of a tensor whose shape is
    known become constants, which lets the shape arithmetic of exported models fold away.
    The values are computed with onnxruntime in one session.

    Args:
        max_elements: outputs larger than this stay computed at run time (avoids blowing up the
            file with e.g. ``ConstantOfShape`` results), unless a layer reads them as its
            weights or bias: a layer needs constant weights to run on the NPU (the onnx
            package's alexnet/vgg19/zfnet512 fill their large Gemm weights by ConstantOfShape).
        only: fold only the nodes writing one of these tensors (None: every node). After
            onnx's version converter, the nodes it added (Constant inputs that were attributes,
            a Shape/Reshape chain for an old Reshape): folding more there gave quantize a
            graph that evaluate never saw.
    """

    def __init__(self, max_elements: int = 1 << 22,
                 only: Collection[str] | None = None) -> None:
        self.max_elements = max_elements
        self.only = None if only is None else frozenset(only)

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        shapes, _ = shapes_and_types(model)
        known: dict[str, np.ndarray] = {}
        for name in index.initializers:
            if name not in index.graph_inputs:
                known[name] = numpy_helper.to_array(index.initializers[name])
        folded_nodes: list[onnx.NodeProto] = []
        to_compute: list[onnx.NodeProto] = []
        computed_names: set[str] = set()
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD or \
                    (self.only is not None and not self.only.intersection(node.output)):
                continue
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for a in node.attribute):
                continue
            if node.op_type == "Constant":
                value = constant_node_value(node)
                if value is not None:
                    known[node.output[0]] = value
                    folded_nodes.append(node)
                continue
            if node.op_type in ("Shape", "Size") and node.input[0] not in known:
                value = self._shape_value(node, shapes.get(node.input[0]))
                if value is not None:
                    known[node.output[0]] = value
                    folded_nodes.append(node)
                continue
            inputs = [x for x in node.input if x]
            if not inputs or not all(x in known or x in computed_names for x in inputs):
                continue
            to_compute.append(node)
            computed_names.update(o for o in node.output if o)
        values = self._compute(model, to_compute, known)
        for node in to_compute:
            outs = [o for o in node.output if o]
            if all(o in values for o in outs) and all(
                    values[o].size <= self.max_elements or _is_weight(index, o) for o in outs):
                folded_nodes.append(node)
                for o in outs:
                    known[o] = values[o]
        if not folded_nodes:
            return []
        doomed_outputs = {o for n in folded_nodes for o in n.output if o}
        # A folded tensor that is also a graph output stays computed by a Constant-free path:
        # we add it as an initializer, which onnxruntime accepts as a graph output.
        existing = {t.name for t in graph.initializer}
        for name in sorted(doomed_outputs):
            if name in existing or name not in known:
                continue
            if name in index.consumers or name in index.graph_outputs:
                graph.initializer.append(numpy_helper.from_array(np.asarray(known[name]), name))
        remove_nodes(graph, folded_nodes)
        kept_vi = [v for v in graph.value_info if v.name not in doomed_outputs]
        del graph.value_info[:]
        graph.value_info.extend(kept_vi)
        by_op: dict[str, list[str]] = {}
        for n in folded_nodes:
            by_op.setdefault(n.op_type, []).append(n.name or n.output[0])
        return [f"folded {len(names)} constant {op} node(s): {_names(names)}"
                for op, names in sorted(by_op.items())]

    @staticmethod
    def _shape_value(node: onnx.NodeProto, shape: list | None) -> np.ndarray | None:
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            return None
        if node.op_type == "Size":
            return np.array(int(np.prod(shape)), dtype=np.int64)
        rank = len(shape)
        start = int(_attr_int(node, "start", 0))
        end = int(_attr_int(node, "end", rank))
        start = max(0, min(rank, start + rank if start < 0 else start))
        end = max(0, min(rank, end + rank if end < 0 else end))
        return np.array(shape[start:end], dtype=np.int64)

    @staticmethod
    def _compute(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                 known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``nodes`` in onnxruntime; nodes that fail are skipped one by one."""
        if not nodes:
            return {}
        results: dict[str, np.ndarray] = {}
        batches = [nodes]
        try:
            results.update(_run_nodes(model, nodes, known))
            return results
        except Exception:  # fall back to one node at a time
            batches = [[n] for n in nodes]
        for batch in batches:
            feeds = {**known, **results}
            try:
                results.update(_run_nodes(model, batch, feeds))
            except Exception:  # fall back to one node at a time
                continue
        return results


#: Inputs of a layer that hold its weights and bias (constants the quantizer bakes in).
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}


def _is_weight(index: GraphIndex, name: str) -> bool:
    """Some consumer of ``name`` reads it as a layer's weights or bias."""
    return any(node.input[k] == name
               for node in index.consumers.get(name, ())
               for k in _WEIGHT_INPUTS.get(node.op_type, ()) if k < len(node.input))


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _run_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
               known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    produced = {o for n in nodes for o in n.output if o}
    needed = sorted({x for n in nodes for x in n.input if x and x not in produced})
    missing = [x for x in needed if x not in known]
    if missing:
        raise KeyError(missing)
    outputs = sorted(produced)
    graph = helper.make_graph(
        list(nodes), "fold",
        inputs=[],
        outputs=[helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(known[x]), x) for x in needed])
    sub = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    sess = ort.InferenceSession(sub.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    values = sess.run(outputs, {})
    return dict(zip(outputs, values, strict=True))
