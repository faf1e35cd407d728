"""Remove layout ops that do nothing, and merge chains of them."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.base import NodeRewritePass
from ortnpu.passes.graph import (
    GraphIndex,
    attr,
    is_static,
    remove_nodes,
    set_attr,
)
from ortnpu.passes.identity_elimination import bypass

_RESHAPE_LIKE = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


class RemoveNoOpReshapeTranspose(NodeRewritePass):
    """Remove no-op layout ops and collapse chains.

    * ``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze`` whose output shape equals its input
      shape (both fully known) are removed.
    * ``Transpose`` with the identity permutation is removed.
    * ``Reshape`` feeding only another ``Reshape`` is skipped (the second one decides the shape).
    * Two ``Transpose`` in a row become one with the composed permutation (removed if identity).
    """

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex, shapes: dict,
             node: onnx.NodeProto) -> str | None:
        op = node.op_type
        if op in _RESHAPE_LIKE:
            src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
            if is_static(src) and is_static(dst) and src == dst and bypass(graph, index, node):
                return f"removed {op} {node.name!r}: its output shape {dst} equals its input's"
            if op == "Reshape":
                upstream = index.producer.get(node.input[0])
                if (upstream is not None and upstream.op_type == "Reshape"
                        and index.only_consumer(upstream.output[0]) is node
                        and not attr(node, "allowzero", 0)
                        and self._has_no_copy_dims(index, node)):
                    node.input[0] = upstream.input[0]
                    remove_nodes(graph, [upstream])
                    return (f"merged Reshape {upstream.name!r} into the following Reshape "
                            f"{node.name!r}")
        if op == "Transpose":
            perm = attr(node, "perm")
            if perm is not None and list(perm) == list(range(len(perm))) and bypass(
                    graph, index, node):
                return f"removed Transpose {node.name!r}: identity permutation"
            upstream = index.producer.get(node.input[0])
            if (upstream is not None and upstream.op_type == "Transpose" and perm is not None
                    and attr(upstream, "perm") is not None
                    and index.only_consumer(upstream.output[0]) is node):
                first = list(attr(upstream, "perm"))
                composed = [first[p] for p in perm]
                node.input[0] = upstream.input[0]
                set_attr(node, "perm", composed)
                remove_nodes(graph, [upstream])
                return (f"merged Transpose {upstream.name!r} into {node.name!r} "
                        f"(perm {composed})")
        return None

    @staticmethod
    def _has_no_copy_dims(index: GraphIndex, node: onnx.NodeProto) -> bool:
        """True if the Reshape's target shape is constant and has no 0 (copy-from-input) dim."""
        target = index.constant(node.input[1]) if len(node.input) > 1 else None
        return target is not None and not np.any(np.asarray(target) == 0)
