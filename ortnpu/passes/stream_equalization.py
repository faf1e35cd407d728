"""Per-channel scaling of residual streams: the tensors that residual sums tie together.

Cross-layer equalization (:class:`~ortnpu.passes.EqualizeWeights`) balances a pair of
convolutions through the tensor between them, which only one layer reads. The residual stream
of an inverted-residual network (MobileNetV2's linear bottlenecks, ``x + proj(expand(x))``
repeated through a stage) is read by every block of the stage and by the sums, so no pair owns
it: its channels keep the spread training gave them, and one 8-bit per-tensor grid covers a few
channels that reach ±10 and many that stay within ±0.5 (MobileNetV2's residual sums and
bottleneck outputs alone cost it 10 points of top-1 agreement with float, measured with
``scripts/accuracy_ablation.py``).

The stream is linear between its writers and its readers (convolutions without an activation
write it, sums combine it, convolutions read it), so dividing channel ``c`` of *every* tensor of
the stream by ``s[c]`` and multiplying what every reader takes from channel ``c`` by ``s[c]``
keeps the float outputs. With each channel's typical magnitude ``r[c]`` on calibration data
(its root mean square over the stream's tensors), ``s[c] = (r[c] / median(r)) ** alpha`` brings
the channels towards one scale (``alpha = 1``: all to the median; the default ``0.5`` halves the
spread in decibels, as SmoothQuant splits the difficulty between activations and weights: the
readers' per-channel weight ranges grow by the same factors). The RMS, not the largest value:
64 calibration crops estimate it well, while factors from their maxima fitted those crops and
not others (EfficientNet-Lite0: output SQNR +0.41 dB on the calibration crops, -0.47 dB on the
evaluation crops; with the RMS the equalization choice leaves that network alone, and
MobileNetV2 gains as much as with the maxima). Per-tensor weights would pay for the factors in
every reader, so the quantizer applies the pass on per-channel targets only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    attr,
    replace_initializer,
    unique_name,
)
from ortnpu.passes.weight_equalization import record_equalized

#: default strength: 0.5 halves each channel's distance to the median range (in dB)
ALPHA = 0.5


@dataclass(frozen=True)
class Stream:
    """One residual stream: its tensors, the convolutions writing and reading it."""

    tensors: tuple[str, ...]
    writers: tuple[str, ...]   # Conv nodes whose output is a stream tensor
    readers: tuple[str, ...]   # Conv nodes whose data input is a stream tensor
    channels: int              # the writers' output channels


def find_streams(graph: onnx.GraphProto) -> list[Stream]:
    """The residual streams of ``graph`` that can be scaled per channel.

    A stream is the set of tensors that ``Add`` nodes tie together (inputs and output of each
    sum). It is scalable when every tensor is written by a ``Conv`` with constant weights or by
    a sum inside the stream, is no graph output, and is read only by sums inside the stream and
    by ordinary (group 1) or depthwise ``Conv`` nodes with constant weights; anything else (an
    activation, a pooling, a constant added in, a graph input) would see the scaled values.
    """
    index = GraphIndex(graph)
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    for node in graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and len(node.output) == 1:
            for name in node.input:
                parent[root(name)] = root(node.output[0])
    members: dict[str, list[str]] = {}
    for t in parent:
        members.setdefault(root(t), []).append(t)
    streams = []
    for tensors in members.values():
        stream = _scalable(index, set(tensors))
        if stream is not None:
            streams.append(stream)
    return streams


def _scalable(index: GraphIndex, tensors: set[str]) -> Stream | None:
    """The stream of ``tensors`` when every writer and reader keeps the float outputs under
    per-channel scaling, else None."""
    writers, readers = [], []
    channels = None
    for t in sorted(tensors):
        node = index.producer.get(t)
        if node is None or t in index.graph_outputs:
            return None
        if node.op_type == "Conv":
            w = index.constant(node.input[1])
            if w is None or (len(node.input) > 2 and node.input[2]
                             and index.constant(node.input[2]) is None):
                return None
            channels = channels or w.shape[0]
            if w.shape[0] != channels:
                return None
            writers.append(node.name)
        elif not (node.op_type == "Add" and all(i in tensors for i in node.input)):
            return None
        for reader in index.consumers.get(t, []):
            if reader.op_type == "Add" and reader.output[0] in tensors:
                continue
            if reader.op_type != "Conv" or reader.input[0] != t or t in reader.input[1:]:
                return None
            w = index.constant(reader.input[1])
            if w is None:
                return None
            group = int(attr(reader, "group", 1))
            depthwise = group == w.shape[0] and w.shape[1] == 1
            if not (group == 1 or depthwise):
                return None
            readers.append(reader.name)
    if not writers or not readers:
        return None
    return Stream(tuple(sorted(tensors)), tuple(writers), tuple(dict.fromkeys(readers)),
                  channels)


class EqualizeStreams(Pass):
    """Bring the channels of each residual stream towards one range (see the module doc).

    Args:
        channel_rms: stream tensor -> each channel's root mean square on calibration data (a
            stream takes the largest over its tensors); streams without it are left alone.
        alpha: strength, 0 (nothing) to 1 (every channel to the median range).
    """

    def __init__(self, channel_rms: Mapping[str, np.ndarray], alpha: float = ALPHA) -> None:
        self.channel_rms = dict(channel_rms)
        self.alpha = alpha

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        nodes = {n.name: n for n in graph.node}
        # (node, input position) -> its weights so far: a Conv may write one stream and read
        # another, and both scalings apply to the same weights
        values: dict[tuple[str, int], np.ndarray] = {}

        def current(name: str, pos: int) -> np.ndarray:
            key = (name, pos)
            if key not in values:
                values[key] = index.constant(nodes[name].input[pos]).astype(np.float64)
            return values[key]

        changes, factors = [], {}
        for stream in find_streams(graph):
            seen = [np.asarray(self.channel_rms[t], np.float64) for t in stream.tensors
                    if t in self.channel_rms]
            channels = stream.channels
            if len(seen) != len(stream.tensors) or any(v.shape != (channels,) for v in seen):
                continue
            r = np.max(seen, axis=0)
            live = r > 0
            if not live.any():
                continue
            s = np.ones(channels)
            s[live] = (r[live] / np.median(r[live])) ** self.alpha
            for name in stream.writers:
                for pos in (1, 2):
                    if len(nodes[name].input) > pos and nodes[name].input[pos]:
                        w = current(name, pos)
                        values[(name, pos)] = w / s.reshape((-1,) + (1,) * (w.ndim - 1))
            for name in stream.readers:
                w = current(name, 1)
                shape = (-1,) + (1,) * (w.ndim - 1) if int(attr(nodes[name], "group", 1)) > 1 \
                    else (1, -1) + (1,) * (w.ndim - 2)
                values[(name, 1)] = w * s.reshape(shape)
            factors.update({t: s for t in stream.tensors})
            after = r[live] / s[live]
            changes.append(f"equalized the residual stream {stream.tensors[-1]!r} "
                           f"({len(stream.tensors)} tensors, {len(stream.writers)} writers, "
                           f"{len(stream.readers)} readers): largest/smallest channel RMS "
                           f"went from {r[live].max() / r[live].min():.3g} to "
                           f"{after.max() / after.min():.3g}")
        self._write(graph, index, nodes, values)
        if factors:
            record_equalized(model, factors)
        return changes

    @staticmethod
    def _write(graph: onnx.GraphProto, index: GraphIndex, nodes: dict[str, onnx.NodeProto],
               values: Mapping[tuple[str, int], np.ndarray]) -> None:
        """Give each (node, input position) its new constant, in the original's dtype: in
        place when the node is its only reader, else as a tensor of the node's own."""
        taken = all_tensor_names(graph)
        for (name, pos), value in values.items():
            node = nodes[name]
            original = node.input[pos]
            value = value.astype(index.constant(original).dtype)
            if len(index.consumers.get(original, [])) == 1 and original in index.initializers:
                replace_initializer(graph, original, value)
            else:
                node.input[pos] = unique_name(taken, f"{original}_{name}")
                graph.initializer.append(numpy_helper.from_array(value, node.input[pos]))


__all__ = ["ALPHA", "EqualizeStreams", "Stream", "find_streams"]
