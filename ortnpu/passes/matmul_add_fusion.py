"""Turn MatMul + Add(bias) into one fully connected layer."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.base import NodeRewritePass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    get_meta,
    remove_nodes,
    replace_initializer,
    set_meta,
    unique_name,
)

#: ``metadata_props`` key set on a MatMul whose bias Add is kept as a separate node.
FC_BIAS_KEY = "ortnpu.fc_bias"


class FuseMatMulAdd(NodeRewritePass):
    """Make ``MatMul(A, W) + b`` one fully connected candidate.

    ``W`` must be a constant 2-D matrix and ``b`` a constant that broadcasts along the last axis
    only (shape ``[N]`` or ``[1, N]``).

    * ``A`` of rank 2: the pair becomes a standard ``Gemm`` named after the MatMul, which takes
      over the Add's output tensor.
    * ``A`` of higher rank (e.g. ``[batch, tokens, features]``): ``Gemm`` does not apply, so the
      nodes stay and the MatMul gets ``metadata_props[ortnpu.fc_bias] = <Add name>``, telling
      the quantizer and the estimator that the Add is this layer's bias.
    """

    def candidate(self, node: onnx.NodeProto) -> bool:
        return node.op_type == "MatMul"

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex, shapes: dict,
                mm: onnx.NodeProto) -> str | None:
        w = index.constant(mm.input[1])
        add = index.only_consumer(mm.output[0])
        if w is None or w.ndim != 2 or add is None or add.op_type != "Add":
            return None
        other = add.input[1] if add.input[0] == mm.output[0] else add.input[0]
        b = index.constant(other)
        n = w.shape[1]
        if b is None or b.shape not in ((n,), (1, n)):
            return None
        a_shape = shapes.get(mm.input[0])
        if a_shape is None:
            return None
        if len(a_shape) != 2:
            if get_meta(mm, FC_BIAS_KEY) == add.name:
                return None
            set_meta(mm, FC_BIAS_KEY, add.name)
            return (f"marked MatMul {mm.name!r} + Add {add.name!r} as one fully connected layer "
                    f"(input rank {len(a_shape)}: kept as two standard nodes)")
        bias_name = other
        if b.ndim != 1:
            bias_name = unique_name(all_tensor_names(graph), f"{mm.name}_bias")
            replace_initializer(graph, bias_name, np.asarray(b).reshape(-1))
        mm.op_type = "Gemm"
        del mm.input[2:]
        mm.input.append(bias_name)
        mm.output[0] = add.output[0]
        remove_nodes(graph, [add])
        return f"fused MatMul {mm.name!r} + Add {add.name!r} into Gemm {mm.name!r}"
