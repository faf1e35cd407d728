"""Fold a constant per-channel ``Mul`` / ``Add`` after a Conv into the Conv's weights and bias."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.batchnorm_folding import FoldBatchNorm
from ortnpu.passes.graph import GraphIndex, all_tensor_names, remove_nodes


class FoldConvAffine(Pass):
    """``Conv -> Mul(a) -> Add(c)`` with constant per-channel (or scalar) ``a`` and ``c``
    becomes one Conv with ``W' = W·a`` and ``b' = b·a + c``; the same for a ConvTranspose
    (scaled along its output channels, axis 1 per group: Paddle exports its bias as an Add).

    Why: PaddlePaddle's PP-LCNetV3 (the PP-OCRv4 detector's backbone) ends every convolution with
    a learnable affine pair (``mobile_one_block_*.w_0`` times, ``w_1`` plus), which the ONNX
    export keeps as two elementwise nodes; quantized, each is a layer of its own with its own
    8-bit output range, two requantizations per convolution that the float model never had. The
    fold is exact in real arithmetic, like :class:`~ortnpu.passes.FoldBatchNorm`. The Mul or
    Add must be the Conv output's only reader; a shared weight is copied, never changed under
    another node.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        changes: list[str] = []
        graph = model.graph
        folded = True
        while folded:
            folded = False
            index = GraphIndex(graph)
            for node in graph.node:
                msg = self._fold(graph, index, node)
                if msg:
                    changes.append(msg)
                    folded = True
                    break
        return changes

    @staticmethod
    def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
        """``value`` as a vector over the channel axis (1) of a rank-``rank`` output, or None
        when it varies along another axis or would broadcast the output to a larger shape."""
        v = np.asarray(value, np.float64)
        if v.ndim > rank:
            return None
        full = v.reshape((1,) * (rank - v.ndim) + v.shape)
        if any(d != 1 for k, d in enumerate(full.shape) if k != 1) or \
                full.shape[1] not in (1, channels):
            return None
        return np.broadcast_to(full.reshape(-1), (channels,)).copy()

    def _fold(self, graph: onnx.GraphProto, index: GraphIndex,
              node: onnx.NodeProto) -> str | None:
        if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx") or \
                len(node.input) != 2:
            return None
        consts = [index.constant(i) for i in node.input]
        if (consts[0] is None) == (consts[1] is None):
            return None
        k = 0 if consts[0] is not None else 1
        value, data = consts[k], node.input[1 - k]
        conv = index.producer.get(data)
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or \
                conv.domain not in ("", "ai.onnx") or index.only_consumer(data) is not node:
            return None
        w = index.constant(conv.input[1])
        if w is None or not np.issubdtype(w.dtype, np.floating) or \
                not np.issubdtype(np.asarray(value).dtype, np.floating) or w.ndim < 3:
            return None
        transposed = conv.op_type == "ConvTranspose"
        group = int(next((a.i for a in conv.attribute if a.name == "group"), 1))
        if transposed and w.shape[0] % group:
            return None
        # output channels: axis 0 of a Conv's weights; group x axis 1 of a ConvTranspose's
        channels = w.shape[1] * group if transposed else w.shape[0]
        vec = self._per_channel(value, channels, w.ndim)
        if vec is None:
            return None
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        b = index.constant(conv.input[2]) if has_bias else np.zeros(channels)
        if b is None:
            return None
        b = np.asarray(b, np.float64)
        taken = all_tensor_names(graph)
        if node.op_type == "Mul":
            if transposed:   # weight [c, j] feeds output (c // (C / group)) * (O / group) + j
                per_in = vec.reshape(group, -1)[np.arange(w.shape[0]) // (w.shape[0] // group)]
                scale = per_in.reshape(w.shape[:2] + (1,) * (w.ndim - 2))
            else:
                scale = vec.reshape((-1,) + (1,) * (w.ndim - 1))
            w_new = w.astype(np.float64) * scale
            FoldBatchNorm._set_weight(graph, index, conv, 1, w_new.astype(w.dtype), taken,
                                      "weight")
            b_new = b * vec
        else:
            b_new = b + vec
        if has_bias or node.op_type == "Add":
            FoldBatchNorm._set_weight(graph, index, conv, 2, b_new.astype(w.dtype), taken,
                                      "bias")
        conv.output[0] = node.output[0]
        remove_nodes(graph, [node])
        return f"folded constant {node.op_type} {node.name!r} into {conv.op_type} {conv.name!r}"
