"""Resize: TFLite's RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on stored integers.

Both TFLite kernels work on the stored values (the output keeps the input's scale and zero
point) and decide every output pixel from two per-axis tables: which input rows/columns it reads
and, for bilinear, with which weight. :func:`axis_table` computes those tables exactly as the
reference kernels do, and is the one definition used by the numpy reference, the C kernel
(which receives the tables), the integer export and the lowering's mode check:

* nearest (``resize_nearest_neighbor.h``): float32 ``scale = in / out`` (``(in - 1) / (out - 1)``
  with align_corners), ``(o + offset) * scale`` in float32 with offset 0.5 for
  half_pixel_centers, then ``round`` half away from zero (align_corners) or ``floor``, clamped to
  ``in - 1`` (and to 0 with half_pixel_centers).
* bilinear int8/int16 (``resize_bilinear.h``, the integer kernel): 10-bit fixed-point
  coordinates: ``scale_10 = (1024 * in + out / 2) / out`` (C integer division), the coordinate
  ``o * scale_10`` (``+ scale_10 / 2 - 512`` with half_pixel_centers), rows ``max(c / 1024, 0)``
  and ``min((c + 1023) / 1024, in - 1)`` (C division truncates), the four products summed in 64
  bits over 2^20 and rounded half away from zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain import common as c
from ortnpu.domain.spec import Attr, Input, OpSpec
from ortnpu.errors import KernelError

#: Largest input or output height/width: ``1024 * in`` and ``o * scale_10`` stay in int32, as
#: the reference kernel computes them.
MAX_SIZE = 1 << 16

ONE_10 = 1 << 10   # 1.0 in the bilinear kernel's 10-bit coordinates
#: Output elements the bilinear reference computes at once (its int64 buffers stay ~32 MiB).
BLOCK = 1 << 22


def _div_trunc(a: np.ndarray | int, d: int) -> np.ndarray:
    """C's integer division (rounds towards zero) of int64 values by a positive ``d``."""
    a = np.asarray(a, dtype=np.int64)
    return np.where(a >= 0, a // d, -((-a) // d))


def nearest_index(in_size: int, out_size: int, align_corners: bool,
                  half_pixel_centers: bool) -> np.ndarray:
    """The input index of every output index along one axis (TFLite's GetNearestNeighbor)."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel_centers else f32(0.0)
    pos = (np.arange(out_size, dtype=np.float32) + offset) * scale   # float32 throughout
    wide = pos.astype(np.float64)   # exact; rounding below in float64 cannot double-round
    # align_corners: TfLiteRound (half away from zero); otherwise floor
    index = np.sign(wide) * np.floor(np.abs(wide) + 0.5) if align_corners else np.floor(wide)
    index = np.minimum(index.astype(np.int64), in_size - 1)
    if half_pixel_centers:
        index = np.maximum(index, 0)
    return index


def bilinear_table(in_size: int, out_size: int, align_corners: bool,
                   half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower, upper, weight)`` per output index along one axis: the two input indices and
    the upper one's weight in 1/1024 (the lower one's is ``1024 - weight``), as the integer
    RESIZE_BILINEAR kernel computes them. The weight is negative where the coordinate lies
    before the first input (half_pixel_centers); lower and upper are then the same index."""
    if align_corners and out_size > 1:
        scale = (ONE_10 * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = (ONE_10 * in_size + out_size // 2) // out_size
    o = np.arange(out_size, dtype=np.int64)
    coord = o * scale + (scale // 2 - (1 << 9) if half_pixel_centers else 0)
    lower = np.maximum(_div_trunc(coord, ONE_10), 0)
    upper = np.minimum(_div_trunc(coord + ONE_10 - 1, ONE_10), in_size - 1)
    return lower, upper, coord - ONE_10 * lower


def axis_table(mode: str, in_size: int, out_size: int, align_corners: bool,
               half_pixel_centers: bool) -> np.ndarray:
    """The int32 ``[3, out_size]`` table of one axis: lower index, upper index, upper weight
    (nearest: the index twice and weight 0). The C kernel and the export read this table."""
    if mode == "nearest":
        idx = nearest_index(in_size, out_size, align_corners, half_pixel_centers)
        rows = (idx, idx, np.zeros_like(idx))
    else:
        rows = bilinear_table(in_size, out_size, align_corners, half_pixel_centers)
    return np.ascontiguousarray(np.stack(rows).astype(np.int32))


def tables(x_shape: Sequence[int], a: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The row and column tables of a Resize of an NCHW input ``x_shape``."""
    ac, hpc = bool(a["align_corners"]), bool(a["half_pixel_centers"])
    return (axis_table(a["mode"], int(x_shape[2]), a["out_h"], ac, hpc),
            axis_table(a["mode"], int(x_shape[3]), a["out_w"], ac, hpc))


def table_problem(table: np.ndarray, in_size: int, axis: str) -> str | None:
    """Why a table cannot be run (an index outside the input), or None.

    TFLite's 10-bit bilinear scale is rounded; over thousands of output pixels its error can
    carry the lower index past the last input row, which TFLite reads out of bounds."""
    if table.size and (int(table[:2].min()) < 0 or int(table[:2].max()) >= in_size):
        return (f"the {axis} coordinates of TFLite's 10-bit bilinear kernel leave the input "
                f"(size {in_size}) for this output size")
    return None


class Resize(OpSpec):
    """Spatial resize of an NCHW tensor, TFLite's nearest-neighbour or 10-bit bilinear."""

    name = "Resize"
    tflite = ("RESIZE_NEAREST_NEIGHBOR (float32 scale, floor or round half away, clamps) and "
              "RESIZE_BILINEAR int8/int16 (10-bit fixed-point coordinates and weights, "
              "64-bit sum rounded half away from zero over 2^20); the output keeps the input's "
              "scale and zero point.")
    doc = ("y[n, c, i, j] = x[n, c, r(i), s(j)] (nearest), or for bilinear "
           "round_half_away((x[y0,x0]·(1024-wy)·(1024-wx) + x[y1,x0]·wy·(1024-wx) + "
           "x[y0,x1]·(1024-wy)·wx + x[y1,x1]·wy·wx) / 2^20) on the stored integers, where "
           "(y0, y1, wy) and (x0, x1, wx) are TFLite's per-axis tables for align_corners / "
           "half_pixel_centers (see ops_resize.py).")
    inputs = (Input("x", "act", "input [N, C, H, W]"),)
    attrs = (
        Attr("mode", str, "nearest", "interpolation", ("nearest", "bilinear")),
        Attr("align_corners", int, 0, "TFLite's align_corners", (0, 1)),
        Attr("half_pixel_centers", int, 0, "TFLite's half_pixel_centers", (0, 1)),
        Attr("out_h", int, 1, "output height", lo=1, hi=MAX_SIZE),
        Attr("out_w", int, 1, "output width", lo=1, hi=MAX_SIZE),
    )
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        (x,) = arrays
        if x.ndim != 4:
            raise KernelError(f"{where}{cls.name}: input must be NCHW (rank 4), got shape "
                              f"{list(x.shape)}")
        n, ch, h, w = x.shape
        if h < 1 or w < 1 or h > MAX_SIZE or w > MAX_SIZE:
            raise KernelError(f"{where}{cls.name}: input height and width must lie in "
                              f"[1, {MAX_SIZE}], got {h}x{w}")
        if a["mode"] == "bilinear" and a["align_corners"] and a["half_pixel_centers"]:
            raise KernelError(f"{where}{cls.name}: TFLite's bilinear kernel does not combine "
                              "align_corners and half_pixel_centers")
        c.check_elements(n * ch * a["out_h"] * a["out_w"], where, cls.name)
        rows, cols = tables(x.shape, a)
        for table, size, axis in ((rows, h, "vertical"), (cols, w, "horizontal")):
            problem = table_problem(table, size, axis)
            if problem:
                raise KernelError(f"{where}{cls.name}: {problem}")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        (x,) = arrays
        rows, cols = tables(x.shape, a)
        if a["mode"] == "nearest":
            return np.ascontiguousarray(x[:, :, rows[0]][:, :, :, cols[0]]).astype(out_dtype)
        # rows first (a plane of out_h x in_w), then columns, in blocks of output planes and
        # rows: the int64 intermediates stay at BLOCK elements, so an upsample to the 2^31
        # outputs validation allows neither needs 16-byte-per-output buffers (which made a
        # 165M-output case run out of memory or minutes, issue 12's re-verification) nor
        # differs: (t·(1024-wy) + b·wy)·(1024-wx) + (t'·(1024-wy) + b'·wy)·wx is the sum of
        # the four products, in the same integers
        n, ch, h, w = x.shape
        oh, ow = a["out_h"], a["out_w"]
        planes = x.reshape(n * ch, h, w).astype(np.int64)
        y = np.empty((n * ch, oh, ow), out_dtype)
        wx = cols[2].astype(np.int64)
        rb = max(1, min(oh, BLOCK // ow))
        pb = max(1, BLOCK // (rb * ow))
        half = 1 << 19
        for p in range(0, n * ch, pb):
            v = planes[p:p + pb]
            for r in range(0, oh, rb):
                wy = rows[2][r:r + rb].astype(np.int64)[:, None]
                mix = v[:, rows[0][r:r + rb]] * (ONE_10 - wy) + v[:, rows[1][r:r + rb]] * wy
                acc = mix[..., cols[0]] * (ONE_10 - wx) + mix[..., cols[1]] * wx
                y[p:p + pb, r:r + rb] = _div_trunc(acc + np.where(acc > 0, half, -half),
                                                   1 << 20)
        return y.reshape(n, ch, oh, ow)
