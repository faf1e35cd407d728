"""Rewrite a ConvTranspose as zero insertion and a Conv with flipped weights."""

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
    opset_version,
    rebuild_nodes,
    replace_initializer,
    shapes_and_types,
    unique_name,
)
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


class ConvTransposeAsConv(Pass):
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

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        shapes, _ = shapes_and_types(model)
        taken = all_tensor_names(graph)
        names = {n.name for n in graph.node}
        pads_as_input = opset_version(model) >= 11
        new: list[onnx.NodeProto] = []
        changes: list[str] = []
        dropped: set[str] = set()
        for node in graph.node:
            geo = _geometry(node, index, shapes)
            if geo is None:
                new.append(node)
                continue
            c, h, wd, g = geo["c"], geo["h"], geo["w"], geo["g"]
            (sh, sw), w = geo["s"], geo["weight"]
            base = node.name or node.output[0]
            x = node.input[0]
            if any(geo["crop"]) and not self.crop:
                new.append(node)   # the target has no Slice to crop with
                continue
            if (sh, sw) != (1, 1):
                x = self._zero_insert(graph, new, taken, names, base, x, (c, h, wd), (sh, sw),
                                      pads_as_input)
            if any(geo["crop"]):
                x = self._crop(graph, new, taken, names, base, x, (h * sh, wd * sw),
                               geo["crop"], opset_version(model) >= 10)
            kh, kw = int(w.shape[2]), int(w.shape[3])
            w_name = unique_name(taken, f"{node.input[1]}_as_conv")
            replace_initializer(graph, w_name, transposed_layout(w, g))
            if len(index.consumers.get(node.input[1], [])) == 1:
                dropped.add(node.input[1])
            conv = helper.make_node(
                "Conv", [x, w_name, *node.input[2:]], list(node.output), name=node.name,
                kernel_shape=[kh, kw], dilations=list(geo["d"]), group=g, pads=geo["pads"])
            link(conv, node.input[1], "transposed", g)
            new.append(conv)
            changes.append(f"ConvTranspose {node.name!r} (stride {sh}x{sw}) became zero "
                           "insertion and a Conv with flipped weights")
        if changes:
            rebuild_nodes(graph, new, dropped)
        return changes

    @staticmethod
    def _crop(graph: onnx.GraphProto, new: list[onnx.NodeProto], taken: set[str],
              names: set[str], base: str, x: str, hw: tuple[int, int], crop: list[int],
              as_inputs: bool) -> str:
        """``x`` without ``crop`` = [top, left, bottom, right] rows and columns (a Slice)."""
        starts, ends = [crop[0], crop[1]], [hw[0] - crop[2], hw[1] - crop[3]]
        out = unique_name(taken, f"{base}_cropped")
        name = unique_name(names, f"{base}/crop")
        if not as_inputs:
            new.append(helper.make_node("Slice", [x], [out], name=name, starts=starts,
                                        ends=ends, axes=[2, 3]))
            return out
        consts = []
        for what, values in (("starts", starts), ("ends", ends), ("axes", [2, 3])):
            const = unique_name(taken, f"{base}_crop_{what}")
            replace_initializer(graph, const, np.array(values, np.int64))
            consts.append(const)
        new.append(helper.make_node("Slice", [x, *consts], [out], name=name))
        return out

    @staticmethod
    def _zero_insert(graph: onnx.GraphProto, new: list[onnx.NodeProto], taken: set[str],
                     names: set[str], base: str, x: str, chw: tuple[int, int, int],
                     stride: tuple[int, int], pads_as_input: bool) -> str:
        """``x`` [N, C, H, W] as [N, C, H·s_h, W·s_w] with each value followed by zeros, at
        rank 4: [N·C·H, 1, W, 1] padded at the end of axes 1 and 3."""
        c, h, w = chw
        sh, sw = stride

        def shape_const(what: str, dims: list[int]) -> str:
            name = unique_name(taken, f"{base}_{what}_shape")
            replace_initializer(graph, name, np.array(dims, np.int64))
            return name

        cells = unique_name(taken, f"{base}_cells")
        new.append(helper.make_node("Reshape", [x, shape_const("cells", [-1, 1, w, 1])],
                                    [cells], name=unique_name(names, f"{base}/cells")))
        padded = unique_name(taken, f"{base}_zeros")
        pads = [0, 0, 0, 0, 0, sh - 1, 0, sw - 1]
        if pads_as_input:
            pads_name = unique_name(taken, f"{base}_zeros_pads")
            replace_initializer(graph, pads_name, np.array(pads, np.int64))
            new.append(helper.make_node("Pad", [cells, pads_name], [padded],
                                        name=unique_name(names, f"{base}/zeros")))
        else:
            new.append(helper.make_node("Pad", [cells], [padded], pads=pads,
                                        name=unique_name(names, f"{base}/zeros")))
        out = unique_name(taken, f"{base}_upsampled")
        new.append(helper.make_node("Reshape", [padded, shape_const("up", [-1, c, h * sh,
                                                                           w * sw])],
                                    [out], name=unique_name(names, f"{base}/upsampled")))
        return out
