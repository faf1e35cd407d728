"""Give every layer its own copy of a weight tensor that several layers share."""

from __future__ import annotations

import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, all_tensor_names, iter_weight_inputs, unique_name


class DuplicateSharedWeights(Pass):
    """Copy a weight or bias initializer read by several layers so each has its own.

    Not part of :func:`~ortnpu.passes.optimize`: the passes that change a layer's weights copy
    a shared tensor on write, and the quantizer emits each layer's integer weights itself (one
    initializer for identical ones), so tied weights (an unrolled LSTM reads the same matrices
    at every time step) stay one tensor. Use this pass only for a tool of your own that edits
    weights in place. The first reader keeps the original name, later ones read
    ``<tensor>_<node name>``.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        taken = all_tensor_names(graph)
        seen: dict[str, str] = {}
        changes: list[str] = []
        for node in graph.node:
            for pos, name in iter_weight_inputs(node):
                if name not in index.initializers or name in index.graph_inputs:
                    continue
                if name not in seen:
                    seen[name] = node.name
                    continue
                copy = onnx.TensorProto()
                copy.CopyFrom(index.initializers[name])
                copy.name = unique_name(taken, f"{name}_{node.name}")
                graph.initializer.append(copy)
                node.input[pos] = copy.name
                changes.append(f"gave {node.op_type} {node.name!r} its own copy {copy.name!r} "
                               f"of weight {name!r} shared with {seen[name]!r}")
        return changes
