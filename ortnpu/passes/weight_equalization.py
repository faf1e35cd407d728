"""Cross-layer weight equalization of Conv -> ReLU -> Conv pairs (Nagel et al., 2019)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, all_tensor_names, attr, unique_name


class EqualizeWeights(Pass):
    """Balance per-channel weight ranges of consecutive convolutions.

    For a pair ``Conv1 -> [Relu] -> Conv2`` and each channel ``i`` between them, with
    ``r1[i]`` the largest ``|W1|`` of output channel ``i`` and ``r2[i]`` the largest ``|W2|``
    reading channel ``i``, the pass divides channel ``i`` of ``W1`` and ``b1`` by
    ``s[i] = sqrt(r1[i] / r2[i])`` and multiplies what ``Conv2`` reads from it by ``s[i]``.
    ReLU is positively homogeneous (``relu(x / s) = relu(x) / s`` for ``s > 0``), so the outputs
    are unchanged while both layers end with ranges ``sqrt(r1 * r2)``: per-tensor quantization
    loses far less. ``Conv2`` must be an ordinary (group 1) or depthwise convolution.

    Args:
        iterations: rounds over all pairs (chains converge in a few).
    """

    def __init__(self, iterations: int = 8) -> None:
        self.iterations = iterations

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        pairs = self._pairs(graph)
        if not pairs:
            return []
        index = GraphIndex(graph)
        taken = all_tensor_names(graph)
        weights: dict[str, np.ndarray] = {}
        names: dict[tuple[str, int], str] = {}
        nodes = {n.name: n for n in graph.node}
        for c1, c2 in pairs:
            for node in (nodes[c1], nodes[c2]):
                for pos in (1, 2):
                    if (node.name, pos) in names or len(node.input) <= pos or \
                            not node.input[pos]:
                        continue
                    original = node.input[pos]
                    value = index.constant(original)
                    name = original
                    if len(index.consumers.get(original, [])) != 1 or \
                            original not in index.initializers:
                        name = unique_name(taken, f"{original}_{node.name}")
                        node.input[pos] = name
                    weights[name] = np.asarray(value, dtype=np.float64)
                    names[(node.name, pos)] = name
        before = {pair: self._spread(weights, names, *pair, nodes) for pair in pairs}
        for _ in range(self.iterations):
            for c1, c2 in pairs:
                self._equalize(weights, names, c1, c2, nodes)
        dtype_of = {t.name: numpy_helper.to_array(t).dtype for t in graph.initializer}
        keep = [t for t in graph.initializer if t.name not in weights]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        for name, value in weights.items():
            dtype = dtype_of.get(name, np.float32)
            graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
        changes = []
        for pair in pairs:
            after = self._spread(weights, names, *pair, nodes)
            changes.append(f"equalized Conv {pair[0]!r} -> Conv {pair[1]!r}: largest/smallest "
                           f"channel range of {pair[0]!r} went from {before[pair]:.3g} to "
                           f"{after:.3g}")
        return changes

    @staticmethod
    def _pairs(graph: onnx.GraphProto) -> list[tuple[str, str]]:
        index = GraphIndex(graph)
        pairs = []
        for c1 in graph.node:
            if c1.op_type != "Conv" or index.constant(c1.input[1]) is None:
                continue
            if len(c1.input) > 2 and c1.input[2] and index.constant(c1.input[2]) is None:
                continue
            nxt = index.only_consumer(c1.output[0])
            if nxt is not None and nxt.op_type == "Relu":
                nxt = index.only_consumer(nxt.output[0])
            if nxt is None or nxt.op_type != "Conv" or index.constant(nxt.input[1]) is None:
                continue
            w2 = index.constant(nxt.input[1])
            channels = index.constant(c1.input[1]).shape[0]
            group = int(attr(nxt, "group", 1))
            depthwise = group == channels and w2.shape[0] == channels and w2.shape[1] == 1
            if (group == 1 and w2.shape[1] == channels) or depthwise:
                pairs.append((c1.name, nxt.name))
        return pairs

    @staticmethod
    def _ranges(weights: dict, names: dict, c1: str, c2: str,
                nodes: dict) -> tuple[np.ndarray, np.ndarray, bool]:
        w1, w2 = weights[names[(c1, 1)]], weights[names[(c2, 1)]]
        r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
        depthwise = int(attr(nodes[c2], "group", 1)) > 1
        if depthwise:
            r2 = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1)
        else:
            r2 = np.abs(np.moveaxis(w2, 1, 0)).reshape(w2.shape[1], -1).max(axis=1)
        return r1, r2, depthwise

    def _equalize(self, weights: dict, names: dict, c1: str, c2: str, nodes: dict) -> None:
        r1, r2, depthwise = self._ranges(weights, names, c1, c2, nodes)
        ok = (r1 > 0) & (r2 > 0)
        s = np.ones_like(r1)
        s[ok] = np.sqrt(r1[ok] / r2[ok])
        w1 = names[(c1, 1)]
        weights[w1] = weights[w1] / s.reshape((-1,) + (1,) * (weights[w1].ndim - 1))
        if (c1, 2) in names:
            weights[names[(c1, 2)]] = weights[names[(c1, 2)]] / s
        w2 = names[(c2, 1)]
        shape = (-1,) + (1,) * (weights[w2].ndim - 1) if depthwise else \
            (1, -1) + (1,) * (weights[w2].ndim - 2)
        weights[w2] = weights[w2] * s.reshape(shape)

    def _spread(self, weights: dict, names: dict, c1: str, c2: str, nodes: dict) -> float:
        r1, _, _ = self._ranges(weights, names, c1, c2, nodes)
        positive = r1[r1 > 0]
        return float(positive.max() / positive.min()) if positive.size else 1.0

