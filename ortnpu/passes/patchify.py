"""Rewrite a patch-embedding convolution (kernel = stride) into space-to-depth and a 1x1 conv."""

from __future__ import annotations

import onnx

from ortnpu.passes.graph import GraphIndex, attr, conv_operands
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
from ortnpu.passes.weight_links import link, patch_layout


def _patch(node: onnx.NodeProto, index: GraphIndex, shapes: dict[str, list | None]
           ) -> tuple[int, int, int, int, int, int, int] | None:
    """``(C, H, W, kh, kw, sh, sw)`` when ``node`` is a 2-D Conv whose kernel is a whole number
    of strides on each axis and whose input is a whole number of strides (no padding, no
    dilation, one group, static C/H/W, constant weights); else None."""
    found = conv_operands(node, "Conv", index, shapes)
    if found is None:
        return None
    w, (c, h, wd) = found
    kh, kw = int(w.shape[2]), int(w.shape[3])
    sh, sw = (int(v) for v in attr(node, "strides", [1, 1]))
    if list(attr(node, "kernel_shape", [kh, kw])) != [kh, kw] or min(sh, sw) < 1 or \
            kh % sh or kw % sw or h % sh or wd % sw or h < kh or wd < kw or \
            any(d != 1 for d in attr(node, "dilations", [1, 1])) or \
            any(p != 0 for p in attr(node, "pads", [0, 0, 0, 0])) or \
            int(attr(node, "group", 1)) != 1 or w.shape[1] != c or \
            attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return None
    return c, h, wd, kh, kw, sh, sw


class PatchifyConv(ReplaceNodesPass):
    """``Conv(kernel k x l = m·s x n·t, stride s x t, no padding)`` becomes ``Reshape →
    Transpose → Reshape → Transpose → Reshape`` (space-to-depth by s x t, at rank 4, the batch
    kept on axis 0, channels in TFLite's SPACE_TO_DEPTH order) and a
    stride-1 ``Conv`` with an m x n kernel on the ``C·s·t`` channels, when the stride or
    kernel exceeds what the target's NPU runs and m x n does not.

    Why: a vision transformer's patch embedding (ViT: 16x16, stride 16) breaks the stride and
    kernel limits of every NPU, so it stayed a float convolution on the CPU between the image
    and the first NPU layer. The windows of such a convolution do not overlap and cover the
    input, so it is a matrix product over the rearranged patches, which is what NPU compilers
    emit for it. The 1x1 convolution multiplies and sums the same values with the same
    weights (in another order, so the integer result is the same and the float one differs by
    float32 rounding). The same holds for a kernel of several strides (an STFT front end as a
    1-D convolution: Silero VAD's 256 taps at stride 128 become a 2-tap convolution over
    128-sample blocks): each window is m x n whole blocks. Applied by ``ortnpu.evaluate`` and
    ``ortnpu.quantize`` alike, with the same target limits.

    Args:
        max_stride: the largest stride the target runs.
        max_kernel: the largest kernel side the target runs.
    """

    def __init__(self, max_stride: int, max_kernel: int) -> None:
        self.max_stride = max_stride
        self.max_kernel = max_kernel

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        found = _patch(node, work.index, work.shapes)
        if found is None:
            return None
        c, h, w, kh, kw, sh, sw = found
        mh, mw = kh // sh, kw // sw
        if (max(sh, sw) <= self.max_stride and max(kh, kw) <= self.max_kernel) or \
                max(mh, mw) > self.max_kernel or (sh, sw) == (1, 1):
            return None   # the target runs it as it is, or would not run the rewrite either
        hb, wb = h // sh, w // sw
        base = node_base(node)
        weight = work.index.constant(node.input[1])
        # [N, C, H, W] in memory is n, c, (hb, ky), (wx, kx): three Reshapes and two
        # Transposes at rank 4 bring it to [N, (ky, kx, c), hb, wx] (TFLite's SPACE_TO_DEPTH
        # order) with the batch on axis 0 throughout, so a dynamic batch stays free and a
        # compiled program runs one sample at a time
        steps = (("rows", [0, c, h * wb, sw], [0, 3, 1, 2]),       # n, kx, c, (hb, ky, wx)
                 ("cells", [0, sw * c * hb, sh, wb], [0, 2, 1, 3]),  # n, ky, (kx, c, hb), wx
                 ("depth", [0, sh * sw * c, hb, wb], None))          # n, (ky, kx, c), hb, wx
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
        suffix = "1x1" if (mh, mw) == (1, 1) else "blocks"
        w_name = work.constant(f"{node.input[1]}_{suffix}", patch_layout(weight, (sh, sw)))
        conv = work.add("Conv", [x, w_name, *node.input[2:]], node.output, node.name,
                        fresh_name=False, kernel_shape=[mh, mw])
        link(conv, node.input[1], "patch", block=(sh, sw))
        work.retire(node.input[1])
        if (mh, mw) == (1, 1):
            return (f"Conv {node.name!r} ({kh}x{kw} windows at stride {sh}x{sw}) became "
                    f"space-to-depth and a 1x1 Conv over {c * sh * sw} channels")
        return (f"Conv {node.name!r} ({kh}x{kw} windows at stride {sh}x{sw}) became "
                f"space-to-depth by {sh}x{sw} and a {mh}x{mw} Conv at stride 1 over "
                f"{c * sh * sw} channels")
