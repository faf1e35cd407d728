"""Fuse a constant-mode Pad into the following Conv or pool."""

from __future__ import annotations

import math

import numpy as np
import onnx

from ortnpu.passes.base import NodeRewritePass
from ortnpu.passes.graph import GraphIndex, attr, remove_nodes, set_attr

_NONNEGATIVE_PRODUCERS = ("Relu", "Sigmoid", "Softplus", "Abs", "Exp")


class FusePad(NodeRewritePass):
    """Move the spatial padding of a ``Pad`` node into the ``pads`` of the next Conv or pool.

    Conditions, each needed for the same outputs: constant mode; no padding of the batch or
    channel axes; no negative pads; the consumer uses explicit pads (``auto_pad`` NOTSET).
    Per consumer:

    * Conv: pad value 0 (ConvTranspose is left alone: its pads crop the output).
    * AveragePool: pad value 0, and the pool either has no pads of its own or already counts
      padding (``count_include_pad=1``); the fused pool gets ``count_include_pad=1``.
    * MaxPool: pad value ``-inf``, or 0 when the input is known non-negative (produced by Relu,
      Sigmoid, a Clip with min >= 0...) and every window still overlaps real data.
    """

    def candidate(self, node: onnx.NodeProto) -> bool:
        return node.op_type == "Pad"

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex, shapes: dict,
                pad: onnx.NodeProto) -> str | None:
        consumer = index.only_consumer(pad.output[0])
        if consumer is None or consumer.op_type not in ("Conv", "AveragePool", "MaxPool"):
            return None
        if consumer.input[0] != pad.output[0] or attr(consumer, "auto_pad", "NOTSET") != "NOTSET":
            return None
        if attr(pad, "mode", "constant") != "constant":
            return None
        pads, value = self._pads_and_value(index, pad)
        if pads is None or len(pads) % 2:
            return None
        count = len(pads) // 2
        axes = self._axes(index, pad, count)
        if axes is None or len(axes) != count:
            return None
        shape = shapes.get(pad.input[0])
        data_rank = len(shape) if shape is not None else count
        if data_rank < 3 or any(not -data_rank <= a < data_rank for a in axes):
            return None
        full_begin, full_end = [0] * data_rank, [0] * data_rank
        for a, b, e in zip(axes, pads[:count], pads[count:], strict=True):
            a = a + data_rank if a < 0 else a
            full_begin[a], full_end[a] = b, e
        if any(full_begin[:2]) or any(full_end[:2]):
            return None
        if any(p < 0 for p in full_begin + full_end):
            return None
        spatial_begin, spatial_end = full_begin[2:], full_end[2:]
        op = consumer.op_type
        if op == "Conv" and value != 0.0:
            return None
        if op == "AveragePool":
            own = attr(consumer, "pads")
            if value != 0.0 or (own and any(own) and not attr(consumer, "count_include_pad", 0)):
                return None
        if op == "MaxPool":
            if len(consumer.output) > 1 and consumer.output[1]:
                return None
            if not (value == -math.inf or (value == 0.0 and self._nonnegative(index, pad)
                                            and self._windows_overlap(consumer, spatial_begin,
                                                                      spatial_end))):
                return None
        n = data_rank - 2
        own = list(attr(consumer, "pads") or [0] * (2 * n))
        new = [own[i] + spatial_begin[i] for i in range(n)] + \
              [own[n + i] + spatial_end[i] for i in range(n)]
        set_attr(consumer, "pads", new)
        if op == "AveragePool":
            set_attr(consumer, "count_include_pad", 1)
        consumer.input[0] = pad.input[0]
        remove_nodes(graph, [pad])
        return f"fused Pad {pad.name!r} into {op} {consumer.name!r} (pads {new})"

    @staticmethod
    def _pads_and_value(index: GraphIndex, pad: onnx.NodeProto) -> tuple[list[int] | None, float]:
        if len(pad.input) > 1 and pad.input[1]:
            pads = index.constant(pad.input[1])
            if pads is None:
                return None, 0.0
            pads_list = [int(p) for p in np.asarray(pads).reshape(-1)]
            value = 0.0
            if len(pad.input) > 2 and pad.input[2]:
                v = index.constant(pad.input[2])
                if v is None:
                    return None, 0.0
                value = float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else 0.0
            return pads_list, value
        pads_attr = attr(pad, "pads")
        if pads_attr is None:
            return None, 0.0
        return [int(p) for p in pads_attr], float(attr(pad, "value", 0.0))

    @staticmethod
    def _axes(index: GraphIndex, pad: onnx.NodeProto, count: int) -> list[int] | None:
        if len(pad.input) > 3 and pad.input[3]:
            axes = index.constant(pad.input[3])
            return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        return list(range(count))

    @staticmethod
    def _nonnegative(index: GraphIndex, pad: onnx.NodeProto) -> bool:
        producer = index.producer.get(pad.input[0])
        if producer is None:
            return False
        if producer.op_type in _NONNEGATIVE_PRODUCERS:
            return True
        if producer.op_type == "Clip":
            low = index.constant(producer.input[1]) if len(producer.input) > 1 and \
                producer.input[1] else attr(producer, "min")
            return low is not None and float(np.asarray(low).reshape(-1)[0]) >= 0.0
        return False

    @staticmethod
    def _windows_overlap(pool: onnx.NodeProto, begin: list[int], end: list[int]) -> bool:
        kernel = list(attr(pool, "kernel_shape") or [])
        dil = list(attr(pool, "dilations") or [1] * len(kernel))
        own = list(attr(pool, "pads") or [0] * (2 * len(kernel)))
        n = len(kernel)
        return all((own[i] + begin[i]) < (kernel[i] - 1) * dil[i] + 1
                   and (own[n + i] + end[i]) < (kernel[i] - 1) * dil[i] + 1 for i in range(n))
