"""Rewrite a patch-embedding convolution (kernel = stride) into space-to-depth and a 1x1 conv."""

from __future__ import annotations

import onnx

from ortnpu.passes.graph import GraphIndex, attr, conv_operands
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
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


class PatchifyConv(ReplaceNodesPass):
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

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        found = _patch(node, work.index, work.shapes)
        if found is None or max(found[3:]) <= min(self.max_stride, self.max_kernel):
            return None
        c, h, w, kh, kw = found
        hb, wb = h // kh, w // kw
        base = node_base(node)
        weight = work.index.constant(node.input[1])
        steps = (("rows", [-1, kh, wb, kw], [0, 1, 3, 2]),
                 ("cells", [-1, hb, kh * kw, wb], [0, 2, 1, 3]),
                 ("depth", [-1, c * kh * kw, hb, wb], None))
        x = node.input[0]
        for what, dims, perm in steps:
            shape = work.int64(f"{base}_{what}_shape", dims)
            shaped = work.tensor(f"{base}_{what}")
            work.add("Reshape", [x, shape], [shaped], f"{base}/{what}")
            x = shaped
            if perm is not None:
                moved = work.tensor(f"{base}_{what}_moved")
                work.add("Transpose", [x], [moved], f"{base}/{what}_moved", perm=perm)
                x = moved
        w_name = work.constant(f"{node.input[1]}_1x1", patch_layout(weight))
        conv = work.add("Conv", [x, w_name, *node.input[2:]], node.output, node.name,
                        fresh_name=False, kernel_shape=[1, 1])
        link(conv, node.input[1], "patch")
        work.retire(node.input[1])
        return (f"Conv {node.name!r} ({kh}x{kw} windows at stride {kh}x{kw}) became "
                f"space-to-depth and a 1x1 Conv over {c * kh * kw} channels")
