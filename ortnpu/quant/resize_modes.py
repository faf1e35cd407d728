"""Which TFLite resize mode reproduces an ONNX Resize, decided on the node's own sizes.

ONNX describes a resize by a coordinate transformation (``asymmetric``, ``align_corners``,
``half_pixel``, ``pytorch_half_pixel``, ...), a nearest rounding (``nearest_mode``) and scales
or sizes; TFLite by two flags (``align_corners``, ``half_pixel_centers``). Instead of a table of
attribute pairs, which would be wrong on the corner cases (an output of size 1, a scale that is
not ``out / in``, ties of ``round_prefer_floor``), :func:`tflite_mode` computes, per axis and per
output index,

* nearest: the input index ONNX selects (exact rational arithmetic) and the index TFLite's
  kernel selects (its float32 arithmetic, :func:`ortnpu.domain.ops_resize.nearest_index`);
* linear: the ONNX source coordinate clamped to the input, and TFLite's real-valued coordinate
  clamped the same way (its kernel then rounds it to 1/1024, the TFLite detail ortnpu keeps);

and picks the first TFLite mode under which they agree everywhere. A Resize no mode reproduces
stays on the CPU, and the reason says which coordinates differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx

from ortnpu.domain.ops_resize import MAX_SIZE, axis_table, nearest_index, table_problem
from ortnpu.passes.graph import attr
from ortnpu.quant.context import GraphView

#: TFLite (align_corners, half_pixel_centers) tried first for each ONNX transformation; the
#: others are tried after it (a nearest resize may match several).
_NATURAL = {"asymmetric": (0, 0), "align_corners": (1, 0), "half_pixel": (0, 1),
            "pytorch_half_pixel": (0, 1), "tf_half_pixel_for_nn": (0, 1)}
_ALL_MODES = ((0, 0), (1, 0), (0, 1), (1, 1))
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class ResizePlan:
    """The ``com.ortnpu`` Resize attributes of a node."""

    mode: str
    align_corners: int
    half_pixel_centers: int
    out_h: int
    out_w: int

    def attrs(self) -> dict[str, object]:
        return {"mode": self.mode, "align_corners": self.align_corners,
                "half_pixel_centers": self.half_pixel_centers, "out_h": self.out_h,
                "out_w": self.out_w}


def onnx_coordinate(o: int, in_size: int, out_size: int, scale: Fraction,
                    transform: str) -> Fraction:
    """The ONNX source coordinate of output index ``o`` (the spec's formulas, exact)."""
    if transform == "half_pixel":
        return (o + Fraction(1, 2)) / scale - Fraction(1, 2)
    if transform == "pytorch_half_pixel":
        return (o + Fraction(1, 2)) / scale - Fraction(1, 2) if out_size > 1 else Fraction(0)
    if transform == "align_corners":
        return Fraction(o * (in_size - 1), out_size - 1) if out_size > 1 else Fraction(0)
    if transform == "tf_half_pixel_for_nn":
        return (o + Fraction(1, 2)) / scale
    return o / scale   # asymmetric


def onnx_nearest(coord: Fraction, nearest_mode: str, in_size: int) -> int:
    """The input index ONNX's ``nearest_mode`` picks for a coordinate, clamped to the input."""
    if nearest_mode == "floor":
        index = math.floor(coord)
    elif nearest_mode == "ceil":
        index = math.ceil(coord)
    elif coord - math.floor(coord) == Fraction(1, 2):   # a tie
        index = math.floor(coord) if nearest_mode == "round_prefer_floor" else math.ceil(coord)
    else:
        index = math.floor(coord + Fraction(1, 2))
    return min(max(index, 0), in_size - 1)


def tflite_coordinate(o: int, in_size: int, out_size: int, ac: int, hpc: int) -> Fraction:
    """TFLite's real-valued bilinear source coordinate (before its 10-bit rounding)."""
    if ac and out_size > 1:
        return Fraction(o * (in_size - 1), out_size - 1)
    scale = Fraction(in_size, out_size)
    return (o + Fraction(1, 2)) * scale - Fraction(1, 2) if hpc else o * scale


def _clamp(c: Fraction, in_size: int) -> Fraction:
    return min(max(c, Fraction(0)), Fraction(in_size - 1))


def _axis_matches(mode: str, in_size: int, out_size: int, scale: Fraction, transform: str,
                  nearest_mode: str, ac: int, hpc: int) -> bool:
    """Whether TFLite mode (ac, hpc) picks ONNX's sources on one axis."""
    outs = range(out_size)
    if mode == "nearest":
        want = [onnx_nearest(onnx_coordinate(o, in_size, out_size, scale, transform),
                             nearest_mode, in_size) for o in outs]
        return want == nearest_index(in_size, out_size, bool(ac), bool(hpc)).tolist()
    return all(_clamp(onnx_coordinate(o, in_size, out_size, scale, transform), in_size)
               == _clamp(tflite_coordinate(o, in_size, out_size, ac, hpc), in_size)
               for o in outs)


def _scales_and_sizes(node: onnx.NodeProto, view: GraphView, shape: Sequence[int]
                      ) -> tuple[list[Fraction], list[int]] | str:
    """Per-axis ONNX scale (as ONNX's formulas use it) and output size, or why unknown."""
    label = f"Resize '{node.name}'"
    scales_name = node.input[2] if len(node.input) > 2 else ""
    sizes_name = node.input[3] if len(node.input) > 3 else ""
    if sizes_name:
        sizes = view.const(sizes_name)
        if sizes is None:
            return f"{label}: the sizes are computed at run time"
        out = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(out) != len(shape):
            return f"{label}: {len(out)} sizes for a rank-{len(shape)} input"
        return [Fraction(o, i) for o, i in zip(out, shape, strict=True)], out
    scales = view.const(scales_name) if scales_name else None
    if scales is None:
        return f"{label}: the scales are {'computed at run time' if scales_name else 'missing'}"
    s32 = np.asarray(scales, np.float32).reshape(-1)
    if s32.size != len(shape) or not (np.isfinite(s32).all() and (s32 > 0).all()):
        return f"{label}: scales {s32.tolist()} are not one positive scale per axis"
    # onnxruntime's output size: the float32 product, truncated
    out = [int(np.floor(np.float32(s) * np.float32(i))) for s, i in zip(s32, shape, strict=True)]
    return [Fraction(float(s)) for s in s32], out


def tflite_mode(node: onnx.NodeProto, view: GraphView) -> ResizePlan | str:
    """The TFLite resize that reproduces ONNX Resize ``node``, or why there is none."""
    label = f"Resize '{node.name}'"
    if len(node.input) < 3:
        return (f"{label}: the opset-10 form (scales as the second input) is not lowered; "
                "re-export the model with opset 11 or later")
    mode = attr(node, "mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    transform = attr(node, "coordinate_transformation_mode", "half_pixel")
    transform = transform.decode() if isinstance(transform, bytes) else transform
    nearest_mode = attr(node, "nearest_mode", "round_prefer_floor")
    nearest_mode = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    if mode not in ("nearest", "linear"):
        return (f"{label}: mode {mode!r} has no TFLite kernel (TFLite resizes nearest and "
                "bilinear only)")
    if transform not in _NATURAL:
        return (f"{label}: coordinate_transformation_mode {transform!r} has no TFLite "
                "equivalent")
    if mode == "nearest" and nearest_mode not in _NEAREST_MODES:
        return f"{label}: unknown nearest_mode {nearest_mode!r}"
    if attr(node, "antialias", 0):
        return f"{label}: antialias has no TFLite equivalent"
    axes = attr(node, "axes", None)
    if axes is not None and sorted(int(a) % 4 for a in axes) != [2, 3]:
        return f"{label}: axes {list(axes)} are not the two spatial axes of an NCHW tensor"
    policy = attr(node, "keep_aspect_ratio_policy", "stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if policy != "stretch":
        return f"{label}: keep_aspect_ratio_policy {policy!r} is not lowered"
    shape = view.shapes.get(node.input[0])
    if shape is None or len(shape) != 4 or any(not isinstance(d, int) or d < 1
                                               for d in shape[1:]):
        return (f"{label}: TFLite resizes the H and W of a 4-D tensor of static size; the "
                f"input shape is {shape}")
    if axes is not None:   # scales/sizes list the listed axes only
        return f"{label}: scales or sizes given per listed axes are not lowered"
    found = _scales_and_sizes(node, view, [1 if d is None else d for d in shape])
    if isinstance(found, str):
        return found
    scales, out = found
    if scales[0] != 1 or scales[1] != 1:
        return (f"{label}: it resizes the batch or channel axis (output {out}); TFLite "
                "resizes height and width only")
    h, w, oh, ow = shape[2], shape[3], out[2], out[3]
    if not (1 <= oh <= MAX_SIZE and 1 <= ow <= MAX_SIZE):
        return f"{label}: output size {oh}x{ow} is outside [1, {MAX_SIZE}]"
    kind = "nearest" if mode == "nearest" else "bilinear"
    natural = _NATURAL[transform]
    for ac, hpc in (natural, *(m for m in _ALL_MODES if m != natural)):
        if kind == "bilinear" and ac and hpc:
            continue   # TFLite's bilinear kernel refuses the pair
        if all(_axis_matches(mode, i, o, s, transform, nearest_mode, ac, hpc)
               for i, o, s in ((h, oh, scales[2]), (w, ow, scales[3]))):
            if kind == "bilinear":
                for i, o, axis in ((h, oh, "vertical"), (w, ow, "horizontal")):
                    problem = table_problem(axis_table(kind, i, o, bool(ac), bool(hpc)), i, axis)
                    if problem:
                        return f"{label}: {problem}"
            return ResizePlan(kind, ac, hpc, oh, ow)
    what = (f"nearest_mode {nearest_mode!r}" if mode == "nearest" else "linear")
    return (f"{label}: no TFLite resize mode (align_corners, half_pixel_centers) picks the "
            f"same sources as {transform!r} {what} for {h}x{w} → {oh}x{ow} "
            f"(scales {float(scales[2]):g}, {float(scales[3]):g}); it runs on the CPU")
