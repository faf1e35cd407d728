"""Fold inference-mode BatchNormalization into the preceding Conv, ConvTranspose, Gemm or MatMul."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    attr,
    remove_nodes,
    set_attr,
    shapes_and_types,
    unique_name,
)


class FoldBatchNorm(Pass):
    """Fold ``BatchNormalization`` into the weights and bias of the op that produces its input.

    With ``s = scale / sqrt(var + eps)`` per channel: ``W' = W * s`` (along the output-channel
    axis of the weights) and ``b' = (b - mean) * s + B``. The producer keeps its name and takes
    over the BatchNormalization's output tensor, so the rest of the graph is unchanged.

    * Conv, ConvTranspose: output channel axis of the weights (grouped convs included).
    * Gemm: columns of ``B`` (rows when ``transB=1``); ``C`` becomes the folded bias.
    * MatMul with a constant 2-D right operand and a 2-D output: the columns of the right
      operand are scaled and the BatchNormalization becomes an ``Add`` of the folded bias (which
      :class:`~ortnpu.passes.matmul_add_fusion.FuseMatMulAdd` turns into a Gemm).

    A weight shared with other nodes is copied first, never changed under another node.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        changes: list[str] = []
        graph = model.graph
        done = True
        while done:
            done = False
            index = GraphIndex(graph)
            shapes, _ = shapes_and_types(model)
            for bn in graph.node:
                if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                    continue
                msg = self._fold(model, index, shapes, bn)
                if msg:
                    changes.append(msg)
                    done = True
                    break
        return changes

    def _fold(self, model: onnx.ModelProto, index: GraphIndex, shapes: dict,
              bn: onnx.NodeProto) -> str | None:
        graph = model.graph
        if attr(bn, "training_mode", 0) or any(o for o in bn.output[1:]):
            return None
        params = [index.constant(x) for x in bn.input[1:5]]
        if any(p is None for p in params):
            return None
        scale, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
        eps = float(attr(bn, "epsilon", 1e-5))
        s = scale / np.sqrt(var + eps)
        shift = beta - mean * s
        producer = index.producer.get(bn.input[0])
        if producer is None or index.only_consumer(bn.input[0]) is not bn:
            return None
        op = producer.op_type
        if producer.domain not in ("", "ai.onnx") or op not in (
                "Conv", "ConvTranspose", "Gemm", "MatMul"):
            return None
        w = index.constant(producer.input[1]) if len(producer.input) > 1 else None
        if w is None or not np.issubdtype(w.dtype, np.floating):
            return None
        w64 = w.astype(np.float64)
        channels = s.shape[0]
        taken = all_tensor_names(graph)
        if op in ("Conv", "ConvTranspose"):
            if w.ndim < 3:
                return None
            group = int(attr(producer, "group", 1))
            if op == "Conv":
                if w.shape[0] != channels:
                    return None
                w_new = w64 * s.reshape((-1,) + (1,) * (w.ndim - 1))
            else:
                cin, cout_g = w.shape[0], w.shape[1]
                if cout_g * group != channels or cin % group:
                    return None
                view = w64.reshape((group, cin // group, cout_g, *w.shape[2:]))
                view = view * s.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))
                w_new = view.reshape(w.shape)
            b = index.constant(producer.input[2]) if len(producer.input) > 2 and \
                producer.input[2] else np.zeros(channels)
            if b is None:
                return None
            b_new = np.asarray(b, dtype=np.float64) * s + shift
            self._set_weight(graph, index, producer, 1, w_new.astype(w.dtype), taken, "weight")
            self._set_weight(graph, index, producer, 2, b_new.astype(w.dtype), taken, "bias")
        elif op == "Gemm":
            trans_b = int(attr(producer, "transB", 0))
            n = w.shape[0] if trans_b else w.shape[1]
            if w.ndim != 2 or n != channels:
                return None
            w_new = w64 * (s[:, None] if trans_b else s[None, :])
            alpha = float(attr(producer, "alpha", 1.0))
            beta_g = float(attr(producer, "beta", 1.0))
            c = index.constant(producer.input[2]) if len(producer.input) > 2 and \
                producer.input[2] else np.zeros(channels)
            if c is None:
                return None
            c_new = (beta_g * np.asarray(c, dtype=np.float64)) * s + shift
            if alpha != 1.0:
                w_new = w_new * alpha
                set_attr(producer, "alpha", 1.0)
            set_attr(producer, "beta", 1.0)
            self._set_weight(graph, index, producer, 1, w_new.astype(w.dtype), taken, "weight")
            self._set_weight(graph, index, producer, 2, c_new.astype(w.dtype), taken, "bias")
        else:  # MatMul
            out_shape = shapes.get(producer.output[0])
            if w.ndim != 2 or w.shape[1] != channels or out_shape is None or len(out_shape) != 2:
                return None
            w_new = w64 * s[None, :]
            self._set_weight(graph, index, producer, 1, w_new.astype(w.dtype), taken, "weight")
            bias_name = unique_name(taken, f"{producer.name}_bias")
            graph.initializer.append(numpy_helper.from_array(shift.astype(w.dtype), bias_name))
            bn.op_type = "Add"
            del bn.attribute[:]
            del bn.input[1:]
            bn.input.append(bias_name)
            del bn.output[1:]
            return (f"folded the scale of BatchNormalization {bn.name!r} into MatMul "
                    f"{producer.name!r}; its shift became Add {bn.name!r}")
        producer.output[0] = bn.output[0]
        remove_nodes(graph, [bn])
        return f"folded BatchNormalization {bn.name!r} into {op} {producer.name!r}"

    @staticmethod
    def _set_weight(graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto, pos: int,
                    value: np.ndarray, taken: set[str], kind: str) -> None:
        """Set input ``pos`` of ``node`` to ``value``; in place only if nobody else reads it."""
        while len(node.input) <= pos:
            node.input.append("")
        old = node.input[pos]
        private = (old and old in index.initializers and len(index.consumers.get(old, [])) == 1
                   and old not in index.graph_inputs and old not in index.graph_outputs)
        if private:
            for t in graph.initializer:
                if t.name == old:
                    t.CopyFrom(numpy_helper.from_array(value, old))
            return
        name = unique_name(taken, f"{node.name}_{kind}")
        graph.initializer.append(numpy_helper.from_array(value, name))
        node.input[pos] = name
