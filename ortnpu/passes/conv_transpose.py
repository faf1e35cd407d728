"""Rewrite a ConvTranspose as zero insertion and a Conv with flipped weights."""

from __future__ import annotations

import onnx

from ortnpu.passes.graph import GraphIndex, attr, conv_operands
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
from ortnpu.passes.weight_links import link, transposed_layout


def _geometry(node: onnx.NodeProto, index: GraphIndex, shapes: dict[str, list | None]
              ) -> dict[str, object] | None:
    """The sizes of a 2-D ConvTranspose the rewrite handles (constant weights and bias, static
    C/H/W, explicit or VALID padding, no output_shape); else None."""
    found = conv_operands(node, "ConvTranspose", index, shapes)
    if found is None:
        return None
    w, (c, h, wd) = found
    g = int(attr(node, "group", 1))
    kh, kw = int(w.shape[2]), int(w.shape[3])
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID") or attr(node, "output_shape", None) is not None or \
            list(attr(node, "kernel_shape", [kh, kw])) != [kh, kw] or w.shape[0] != c or \
            c % g:
        return None
    sh, sw = (int(v) for v in attr(node, "strides", [1, 1]))
    dh, dw = (int(v) for v in attr(node, "dilations", [1, 1]))
    pads = [0, 0, 0, 0] if auto_pad == "VALID" else [int(v) for v in attr(node, "pads",
                                                                          [0, 0, 0, 0])]
    oph, opw = (int(v) for v in attr(node, "output_padding", [0, 0]))
    # the equivalent convolution's padding of the zero-inserted input (H * s rows, the last
    # s - 1 of them zeros already)
    top, left = dh * (kh - 1) - pads[0], dw * (kw - 1) - pads[1]
    bottom = dh * (kh - 1) - pads[2] + oph - (sh - 1)
    right = dw * (kw - 1) - pads[3] + opw - (sw - 1)
    if min(sh, sw, dh, dw) < 1:
        return None
    # a negative padding is a crop: pads beyond the kernel's reach, a kernel narrower than
    # its stride (fewer than the s - 1 trailing zeros are needed)
    edges = [top, left, bottom, right]
    crop = [max(0, -e) for e in edges]
    # the output size, = ConvTranspose's: zero-inserted size + padding - crop - kernel reach
    if h * sh + top + bottom - dh * (kh - 1) < 1 or wd * sw + left + right - dw * (kw - 1) < 1:
        return None
    return {"c": c, "h": h, "w": wd, "g": g, "s": (sh, sw), "d": (dh, dw),
            "pads": [max(0, e) for e in edges], "crop": crop, "weight": w}


class ConvTransposeAsConv(ReplaceNodesPass):
    """``ConvTranspose(stride s)`` becomes zero insertion (``Reshape → Pad → Reshape``: each
    input pixel followed by ``s - 1`` zeros along each axis) and a stride-1 ``Conv`` of the same
    name, with the weights flipped and their input and output channels swapped per group.

    Why: ortnpu has no integer TRANSPOSE_CONV, so a decoder's upsampling (PP-OCRv4 det's
    2x2 stride-2 ConvTransposes) stayed in float on the CPU. The convolution over the
    zero-inserted input multiplies each input pixel by the same weight taps as TFLite's
    TRANSPOSE_CONV scatters it with and adds nothing else (an inserted zero is the zero point:
    it contributes 0), so the integer sum is the same; NPU compilers lower it this way. The
    convolution does ``s_h · s_w`` times the multiply-adds, most of them with zeros. Handles
    2-D, explicit or VALID padding, dilation, groups and output_padding; a padding beyond the
    kernel's reach or a kernel narrower than its stride crops the zero-inserted input with a
    Slice (``crop``: the target runs Slice; else such a node is left alone); SAME padding or an
    ``output_shape`` leave the node alone. Applied by ``ortnpu.evaluate`` and
    ``ortnpu.quantize`` alike, for targets that run Conv, Pad and Reshape at rank 4.

    Args:
        crop: whether a Slice may crop the zero-inserted input.
    """

    def __init__(self, crop: bool = True) -> None:
        self.crop = crop

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        geo = _geometry(node, work.index, work.shapes)
        if geo is None or (any(geo["crop"]) and not self.crop):
            return None   # (a crop needs a Slice the target may not run)
        c, h, wd, g = geo["c"], geo["h"], geo["w"], geo["g"]
        (sh, sw), w = geo["s"], geo["weight"]
        base = node_base(node)
        x = node.input[0]
        if (sh, sw) != (1, 1):
            x = self._zero_insert(work, base, x, (c, h, wd), (sh, sw), work.opset >= 11)
        if any(geo["crop"]):
            x = self._crop(work, base, x, (h * sh, wd * sw), geo["crop"], work.opset >= 10)
        kh, kw = int(w.shape[2]), int(w.shape[3])
        w_name = work.constant(f"{node.input[1]}_as_conv", transposed_layout(w, g))
        work.retire(node.input[1])
        conv = work.add("Conv", [x, w_name, *node.input[2:]], node.output, node.name,
                        fresh_name=False, kernel_shape=[kh, kw], dilations=list(geo["d"]),
                        group=g, pads=geo["pads"])
        link(conv, node.input[1], "transposed", g)
        return (f"ConvTranspose {node.name!r} (stride {sh}x{sw}) became zero "
                "insertion and a Conv with flipped weights")

    @staticmethod
    def _crop(work: Replacement, base: str, x: str, hw: tuple[int, int], crop: list[int],
              as_inputs: bool) -> str:
        """``x`` without ``crop`` = [top, left, bottom, right] rows and columns (a Slice)."""
        starts, ends = [crop[0], crop[1]], [hw[0] - crop[2], hw[1] - crop[3]]
        out = work.tensor(f"{base}_cropped")
        if not as_inputs:
            work.add("Slice", [x], [out], f"{base}/crop", starts=starts, ends=ends, axes=[2, 3])
            return out
        consts = [work.int64(f"{base}_crop_{what}", values)
                  for what, values in (("starts", starts), ("ends", ends), ("axes", [2, 3]))]
        work.add("Slice", [x, *consts], [out], f"{base}/crop")
        return out

    @staticmethod
    def _zero_insert(work: Replacement, base: str, x: str, chw: tuple[int, int, int],
                     stride: tuple[int, int], pads_as_input: bool) -> str:
        """``x`` [N, C, H, W] as [N, C, H·s_h, W·s_w] with each value followed by zeros, at
        rank 4: [N·C·H, 1, W, 1] padded at the end of axes 1 and 3."""
        c, h, w = chw
        sh, sw = stride
        cells_shape = work.int64(f"{base}_cells_shape", [-1, 1, w, 1])
        cells = work.tensor(f"{base}_cells")
        work.add("Reshape", [x, cells_shape], [cells], f"{base}/cells")
        padded = work.tensor(f"{base}_zeros")
        pads = [0, 0, 0, 0, 0, sh - 1, 0, sw - 1]
        if pads_as_input:
            work.add("Pad", [cells, work.int64(f"{base}_zeros_pads", pads)], [padded],
                     f"{base}/zeros")
        else:
            work.add("Pad", [cells], [padded], f"{base}/zeros", pads=pads)
        up_shape = work.int64(f"{base}_up_shape", [-1, c, h * sh, w * sw])
        out = work.tensor(f"{base}_upsampled")
        work.add("Reshape", [padded, up_shape], [out], f"{base}/upsampled")
        return out
