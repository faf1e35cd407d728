"""Replace division by a constant with multiplication by its reciprocal."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, all_tensor_names, replace_initializer, unique_name


class DivByConstantToMul(Pass):
    """Turn ``Div(x, c)`` with a constant float ``c`` into ``Mul(x, 1 / c)``.

    NPUs multiply but rarely divide; exported models divide by constants often (HardSwish as
    ``x * relu6(x + 3) / 6``, normalisations). The results differ from the division by at most
    one rounding of float32. Integer divisions and divisors containing 0 are left alone.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        taken = all_tensor_names(graph)
        changes: list[str] = []
        for node in graph.node:
            if node.op_type != "Div" or node.domain not in ("", "ai.onnx"):
                continue
            c = index.constant(node.input[1])
            if c is None or not np.issubdtype(c.dtype, np.floating) or np.any(c == 0):
                continue
            name = unique_name(taken, f"{node.name}_reciprocal")
            replace_initializer(graph, name, (1.0 / c.astype(np.float64)).astype(c.dtype))
            node.op_type = "Mul"
            node.input[1] = name
            changes.append(f"Div {node.name!r} by a constant became a Mul by its reciprocal")
        return changes
