"""Cross-layer weight equalization of Conv -> ReLU -> Conv pairs (Nagel et al., 2019)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    attr,
    clip_bounds,
    get_meta,
    set_meta,
    unique_name,
)

#: metadata key of the channels equalization divided: ``{tensor: [factor per channel]}``
#: (the tensor of the equalized model times the factor is the original one); it reaches the
#: NPU graph with the model's other metadata, and ``ortnpu.compare`` scales its float
#: reference by it, so that it compares like with like
META_EQUALIZED = "ortnpu.equalized"


def equalized_channels(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The per-channel factors ``model``'s equalization divided its tensors by (none: {})."""
    import json

    raw = get_meta(model, META_EQUALIZED)
    if not raw:
        return {}
    try:
        return {t: np.asarray(v, np.float64) for t, v in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def record_equalized(model: onnx.ModelProto, factors: Mapping[str, np.ndarray]) -> None:
    """Add ``factors`` to the model's record of divided channels (a second equalization of a
    tensor multiplies its factors)."""
    import json

    merged = equalized_channels(model)
    for t, f in factors.items():
        f = np.asarray(f, np.float64)
        merged[t] = merged[t] * f if t in merged and merged[t].shape == f.shape else f
    set_meta(model, META_EQUALIZED,
             json.dumps({t: [float(x) for x in f] for t, f in merged.items()}))


class EqualizeWeights(Pass):
    """Balance per-channel weight ranges of consecutive convolutions.

    For a pair ``Conv1 -> [Relu] -> Conv2`` and each channel ``i`` between them, with
    ``r1[i]`` the largest ``|W1|`` of output channel ``i`` and ``r2[i]`` the largest ``|W2|``
    reading channel ``i``, the pass divides channel ``i`` of ``W1`` and ``b1`` by
    ``s[i] = sqrt(r1[i] / r2[i])`` and multiplies what ``Conv2`` reads from it by ``s[i]``.
    ReLU is positively homogeneous (``relu(x / s) = relu(x) / s`` for ``s > 0``), so the outputs
    are unchanged while both layers end with ranges ``sqrt(r1 * r2)``: per-tensor quantization
    loses far less. ``Conv2`` must be an ordinary (group 1) or depthwise convolution.

    A bounded activation ``Clip(0, c)`` (ReLU6 of MobileNetV2) is not homogeneous:
    ``clip(x / s, 0, c) = clip(x, 0, c) / s`` only where ``x`` stays below ``c·min(s, 1)``.
    With ``channel_max`` (each Conv1 output channel's largest value on calibration data) such
    pairs are equalized too, under the condition that keeps the bound where the data put it:
    a channel the data clip keeps ``s = 1``; any other channel takes a total ``s`` no smaller
    than ``headroom · max / c`` (its values stay below the bound with that margin).

    Args:
        iterations: rounds over all pairs (chains converge in a few).
        channel_max: Conv output tensor -> per-channel maximum on calibration data; enables
            pairs through ``Clip(0, c)``.
        headroom: margin of the Clip condition (a channel whose maximum times ``headroom``
            reaches the bound counts as clipped).
    """

    def __init__(self, iterations: int = 8,
                 channel_max: Mapping[str, np.ndarray] | None = None,
                 headroom: float = 1.25) -> None:
        self.iterations = iterations
        self.channel_max = dict(channel_max or {})
        self.headroom = headroom
        self._bounds: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        #: per pair, the tensors whose channels it divides (Conv1's output, its activation's)
        self._tensors: dict[tuple[str, str], list[str]] = {}

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        pairs = self.pairs(graph)
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
        total = {pair: np.ones(index.constant(nodes[pair[0]].input[1]).shape[0])
                 for pair in pairs}
        for _ in range(self.iterations):
            for c1, c2 in pairs:
                total[(c1, c2)] = self._equalize(weights, names, c1, c2, nodes,
                                                 total[(c1, c2)])
        dtype_of = {t.name: numpy_helper.to_array(t).dtype for t in graph.initializer}
        keep = [t for t in graph.initializer if t.name not in weights]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        for name, value in weights.items():
            dtype = dtype_of.get(name, np.float32)
            graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
        record_equalized(model, {t: total[pair] for pair in pairs for t in self._tensors[pair]})
        changes = []
        for pair in pairs:
            after = self._spread(weights, names, *pair, nodes)
            changes.append(f"equalized Conv {pair[0]!r} -> Conv {pair[1]!r}: largest/smallest "
                           f"channel range of {pair[0]!r} went from {before[pair]:.3g} to "
                           f"{after:.3g}")
        return changes

    def pairs(self, graph: onnx.GraphProto) -> list[tuple[str, str]]:
        """The (Conv1, Conv2) node-name pairs this pass would equalize in ``graph``."""
        index = GraphIndex(graph)
        pairs = []
        self._bounds = {}
        self._tensors = {}
        for c1 in graph.node:
            if c1.op_type != "Conv" or index.constant(c1.input[1]) is None:
                continue
            if len(c1.input) > 2 and c1.input[2] and index.constant(c1.input[2]) is None:
                continue
            nxt = index.only_consumer(c1.output[0])
            bound = None
            scaled = [c1.output[0]]   # the tensors whose channels the pair divides
            if nxt is not None and nxt.op_type in ("Relu", "Clip"):
                scaled.append(nxt.output[0])
            if nxt is not None and nxt.op_type == "Relu":
                nxt = index.only_consumer(nxt.output[0])
            elif nxt is not None and nxt.op_type == "Clip":
                bound = self._clip_bound(index, nxt)
                seen = self.channel_max.get(c1.output[0])
                channels = index.constant(c1.input[1]).shape[0]
                if bound is None or seen is None or np.shape(seen) != (channels,):
                    continue
                nxt = index.only_consumer(nxt.output[0])
            if nxt is None or nxt.op_type != "Conv" or index.constant(nxt.input[1]) is None:
                continue
            w2 = index.constant(nxt.input[1])
            channels = index.constant(c1.input[1]).shape[0]
            group = int(attr(nxt, "group", 1))
            depthwise = group == channels and w2.shape[0] == channels and w2.shape[1] == 1
            if (group == 1 and w2.shape[1] == channels) or depthwise:
                pairs.append((c1.name, nxt.name))
                self._tensors[(c1.name, nxt.name)] = scaled
                if bound is not None:
                    seen = np.asarray(self.channel_max[c1.output[0]], np.float64)
                    clipped = seen * self.headroom >= bound
                    self._bounds[(c1.name, nxt.name)] = (clipped,
                                                         seen * self.headroom / bound)
        return pairs

    @staticmethod
    def _clip_bound(index: GraphIndex, clip: onnx.NodeProto) -> float | None:
        """The upper bound ``c`` of a ``Clip(0, c)`` with constant bounds, else None."""
        bounds = clip_bounds(index, clip)
        if bounds is None:
            return None
        low, high = bounds
        if low not in (None, 0.0) or high is None or not 0 < high < np.inf:
            return None
        return high

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

    def _equalize(self, weights: dict, names: dict, c1: str, c2: str, nodes: dict,
                  total: np.ndarray) -> np.ndarray:
        """One equalization step of a pair; returns the channels' total scale so far."""
        r1, r2, depthwise = self._ranges(weights, names, c1, c2, nodes)
        ok = (r1 > 0) & (r2 > 0)
        s = np.ones_like(r1)
        s[ok] = np.sqrt(r1[ok] / r2[ok])
        if (c1, c2) in self._bounds:  # Clip(0, c) between: keep the bound where data put it
            clipped, least = self._bounds[(c1, c2)]
            wanted = np.where(clipped, 1.0, np.maximum(total * s, least))
            s = wanted / total
        w1 = names[(c1, 1)]
        weights[w1] = weights[w1] / s.reshape((-1,) + (1,) * (weights[w1].ndim - 1))
        if (c1, 2) in names:
            weights[names[(c1, 2)]] = weights[names[(c1, 2)]] / s
        w2 = names[(c2, 1)]
        shape = (-1,) + (1,) * (weights[w2].ndim - 1) if depthwise else \
            (1, -1) + (1,) * (weights[w2].ndim - 2)
        weights[w2] = weights[w2] * s.reshape(shape)
        return total * s

    def _spread(self, weights: dict, names: dict, c1: str, c2: str, nodes: dict) -> float:
        r1, _, _ = self._ranges(weights, names, c1, c2, nodes)
        positive = r1[r1 > 0]
        return float(positive.max() / positive.min()) if positive.size else 1.0

