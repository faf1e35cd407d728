"""Rewrite a patch-embedding convolution (kernel = stride) into space-to-depth and a 1x1 conv."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    all_tensor_names,
    attr,
    conv_operands,
    rebuild_nodes,
    replace_initializer,
    shapes_and_types,
    unique_name,
)
from ortnpu.passes.weight_links import link, patch_layout


def _patch(node: onnx.NodeProto, index: GraphIndex,
           shapes: dict[str, list | None]) -> tuple[int, int, int, int, int] | None:
    """``(C, H, W, kh, kw)`` when ``node`` is a 2-D Conv whose windows tile its input exactly
    (kernel = stride, no padding, no dilation, one group, static C/H/W divisible by the
    kernel, constant weights); else None."""
    found = conv_operands(node, "Conv", index, shapes)
    if found is None:
        return None
    w, (c, h, wd) = found
    kh, kw = int(w.shape[2]), int(w.shape[3])
    if list(attr(node, "kernel_shape", [kh, kw])) != [kh, kw] or \
            list(attr(node, "strides", [1, 1])) != [kh, kw] or \
            any(d != 1 for d in attr(node, "dilations", [1, 1])) or \
            any(p != 0 for p in attr(node, "pads", [0, 0, 0, 0])) or \
            int(attr(node, "group", 1)) != 1 or w.shape[1] != c or \
            attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return None
    if h % kh or wd % kw:
        return None
    return c, h, wd, kh, kw


class PatchifyConv(Pass):
    """``Conv(kernel k x l = stride, no padding)`` becomes ``Reshape → Transpose → Reshape →
    Transpose → Reshape`` (space-to-depth, at rank 4) and a 1x1 ``Conv`` on the ``C·k·l``
    channels, when the stride or kernel exceeds what the target's NPU runs.

    Why: a vision transformer's patch embedding (ViT: 16x16, stride 16) breaks the stride and
    kernel limits of every NPU, so it stayed a float convolution on the CPU between the image
    and the first NPU layer. The windows of such a convolution do not overlap and cover the
    input, so it is a matrix product over the rearranged patches, which is what NPU compilers
    emit for it. The 1x1 convolution multiplies and sums the same values with the same
    weights (in another order, so the integer result is the same and the float one differs by
    float32 rounding). Applied by ``ortnpu.evaluate`` and ``ortnpu.quantize`` alike, with the
    same target limits.

    Args:
        max_stride: the largest stride the target runs.
        max_kernel: the largest kernel side the target runs.
    """

    def __init__(self, max_stride: int, max_kernel: int) -> None:
        self.max_stride = max_stride
        self.max_kernel = max_kernel

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        shapes, _ = shapes_and_types(model)
        taken = all_tensor_names(graph)
        names = {n.name for n in graph.node}
        new: list[onnx.NodeProto] = []
        changes: list[str] = []
        dropped: set[str] = set()   # weights only the rewritten convolutions read
        for node in graph.node:
            found = _patch(node, index, shapes)
            if found is None or max(found[3:]) <= min(self.max_stride, self.max_kernel):
                new.append(node)
                continue
            c, h, w, kh, kw = found
            hb, wb = h // kh, w // kw
            base = node.name or node.output[0]
            weight = index.constant(node.input[1])
            steps = (("rows", [-1, kh, wb, kw], [0, 1, 3, 2]),
                     ("cells", [-1, hb, kh * kw, wb], [0, 2, 1, 3]),
                     ("depth", [-1, c * kh * kw, hb, wb], None))
            x = node.input[0]
            for what, dims, perm in steps:
                shape_name = unique_name(taken, f"{base}_{what}_shape")
                replace_initializer(graph, shape_name, np.array(dims, np.int64))
                shaped = unique_name(taken, f"{base}_{what}")
                new.append(helper.make_node("Reshape", [x, shape_name], [shaped],
                                            name=unique_name(names, f"{base}/{what}")))
                x = shaped
                if perm is not None:
                    moved = unique_name(taken, f"{base}_{what}_moved")
                    new.append(helper.make_node("Transpose", [x], [moved], perm=perm,
                                                name=unique_name(names, f"{base}/{what}_moved")))
                    x = moved
            w_name = unique_name(taken, f"{node.input[1]}_1x1")
            replace_initializer(graph, w_name, patch_layout(weight))
            inputs = [x, w_name, *node.input[2:]]
            conv = helper.make_node("Conv", inputs, list(node.output), name=node.name,
                                    kernel_shape=[1, 1])
            link(conv, node.input[1], "patch")
            new.append(conv)
            if len(index.consumers.get(node.input[1], [])) == 1:
                dropped.add(node.input[1])
            changes.append(f"Conv {node.name!r} ({kh}x{kw} windows at stride {kh}x{kw}) became "
                           f"space-to-depth and a 1x1 Conv over {c * kh * kw} channels")
        if changes:
            rebuild_nodes(graph, new, dropped)
        return changes
