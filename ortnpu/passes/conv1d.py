"""Run a 1-D convolution as a 2-D one of height 1, as TFLite's converter does."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.graph import GraphIndex, attr, conv_operands
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
from ortnpu.passes.weight_links import link, mark_moves_output


def _length_out(length: int, k: int, stride: int, dilation: int, pads: list[int],
                auto_pad: str) -> int:
    """Output length of a 1-D convolution (ONNX Conv's formula)."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-length // stride)
    reach = dilation * (k - 1) + 1
    if auto_pad == "VALID":
        return (length - reach) // stride + 1
    return (length + pads[0] + pads[1] - reach) // stride + 1


class Conv1dAsConv2d(ReplaceNodesPass):
    """``Conv`` over ``[N, C, L]`` (weights ``[O, C/g, k]``) becomes ``Reshape [N, C, 1, L] →
    Conv (weights [O, C/g, 1, k], kernel 1 x k) → Reshape [N, O, L']``.

    Why: ortnpu lowers 2-D convolutions only, so an audio model's 1-D convolutions (Silero VAD's
    STFT and encoder, temporal convolutional networks) stayed in float on the CPU. TFLite's
    converter runs CONV_1D as CONV_2D of height 1 between two reshapes; the products and sums
    are the same. The 2-D Conv keeps the node's name. Needs a static channel count and length
    (fix them with ``--input-shape``); applied by ``ortnpu.evaluate`` and ``ortnpu.quantize``
    alike, for targets that run Conv and Reshape.
    """

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        geo = self._geometry(node, work.index, work.shapes)
        if geo is None:
            return None
        w, c, length, auto_pad = geo
        base = node_base(node)
        k = int(w.shape[2])
        stride = int(attr(node, "strides", [1])[0])
        dilation = int(attr(node, "dilations", [1])[0])
        pads = [int(v) for v in attr(node, "pads", [0, 0])]
        out_len = _length_out(length, k, stride, dilation, pads, auto_pad)
        if out_len < 1:
            return None
        to_2d = work.int64(f"{base}_in_shape", [-1, c, 1, length])
        rows = work.tensor(f"{base}_as_2d")
        work.add("Reshape", [node.input[0], to_2d], [rows], f"{base}/to_2d")
        w_name = work.constant(f"{node.input[1]}_2d", w[:, :, None, :])
        work.retire(node.input[1])
        out2d = work.tensor(f"{base}_2d_out")
        extra = {"auto_pad": auto_pad} if auto_pad != "NOTSET" else \
            {"pads": [0, pads[0], 0, pads[1]]}
        conv = work.add("Conv", [rows, w_name, *node.input[2:]], [out2d], node.name,
                        fresh_name=False, kernel_shape=[1, k], strides=[1, stride],
                        dilations=[1, dilation], group=int(attr(node, "group", 1)), **extra)
        link(conv, node.input[1], "conv1d")
        to_1d = work.int64(f"{base}_out_shape", [-1, int(w.shape[0]), out_len])
        back = work.add("Reshape", [out2d, to_1d], node.output, f"{base}/to_1d")
        mark_moves_output(back)   # the 2-D output takes the layer's given parameters
        return (f"Conv {node.name!r} (1-D, kernel {k}) became a 2-D Conv of height 1 "
                "between two Reshapes")

    @staticmethod
    def _geometry(node: onnx.NodeProto, index: GraphIndex, shapes: dict
                  ) -> tuple[np.ndarray, int, int, str] | None:
        """``(weights, C, L, auto_pad)`` of a 1-D Conv with constant weights (and bias) and a
        static channel count and length; else None."""
        found = conv_operands(node, "Conv", index, shapes, spatial=1)
        if found is None:
            return None
        w, (c, length) = found
        auto_pad = attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        return w, c, length, auto_pad
