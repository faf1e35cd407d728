"""Pooling ops: MaxPool, AveragePool, GlobalAveragePool (output scale = input scale)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain import common as c
from ortnpu.domain.spec import Attr, Input, OpSpec
from ortnpu.errors import KernelError

_KERNEL = (Attr("kernel_h", int, 1, "window height", lo=1, hi=1 << 16),
           Attr("kernel_w", int, 1, "window width", lo=1, hi=1 << 16))


def _windows(x: np.ndarray, a: Mapping[str, Any], fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack the window taps: values [N, C, kh*kw, OH, OW] and in-bounds mask [kh*kw, OH, OW]."""
    h, w = x.shape[2], x.shape[3]
    kh, kw, sh, sw = a["kernel_h"], a["kernel_w"], a["stride_h"], a["stride_w"]
    dh, dw = a.get("dilation_h", 1), a.get("dilation_w", 1)
    pads = (a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])
    oh = c.window_out(h, kh, sh, dh, *pads[0], "", "pool", "vertical")
    ow = c.window_out(w, kw, sw, dw, *pads[1], "", "pool", "horizontal")
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), *pads), constant_values=fill)
    inside = np.pad(np.ones((h, w), dtype=bool), pads, constant_values=False)
    vals, masks = [], []
    for i in range(kh):
        for j in range(kw):
            rs = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cs = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            vals.append(xp[:, :, rs, cs])
            masks.append(inside[rs, cs])
    return np.stack(vals, axis=2), np.stack(masks, axis=0)


def _check_window(cls: type[OpSpec], x: np.ndarray, a: Mapping[str, Any], out_dtype: np.dtype,
                  where: str) -> None:
    if x.ndim != 4:
        raise KernelError(f"{where}{cls.name}: x must be 4-D (NCHW), got shape {list(x.shape)}")
    if x.shape[2] == 0 or x.shape[3] == 0:   # every window would hold only padding
        raise KernelError(f"{where}{cls.name}: x has an empty spatial axis, shape "
                          f"{list(x.shape)}; a pool needs at least one input pixel per window")
    oh = c.window_out(x.shape[2], a["kernel_h"], a["stride_h"], a.get("dilation_h", 1),
                      a["pad_top"], a["pad_bottom"], where, cls.name, "vertical")
    ow = c.window_out(x.shape[3], a["kernel_w"], a["stride_w"], a.get("dilation_w", 1),
                      a["pad_left"], a["pad_right"], where, cls.name, "horizontal")
    for name, pad, k in (("pad_top", a["pad_top"], a["kernel_h"]),
                         ("pad_bottom", a["pad_bottom"], a["kernel_h"]),
                         ("pad_left", a["pad_left"], a["kernel_w"]),
                         ("pad_right", a["pad_right"], a["kernel_w"])):
        if pad >= k:
            raise KernelError(f"{where}{cls.name}: {name} {pad} must be smaller than the "
                              f"kernel {k}, or a window would hold only padding")
    c.check_elements(x.shape[0] * x.shape[1] * a["kernel_h"] * a["kernel_w"] * oh * ow, where,
                     cls.name, "the window buffer")
    c.check_clamp(a, out_dtype, where, cls.name)


class _WindowPool(OpSpec):
    """What MaxPool and AveragePool share: one NCHW input, a 2-D window, same type out."""

    inputs = (Input("x", "act", "input activations, NCHW"),)
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        _check_window(cls, arrays[0], a, out_dtype, where)


class MaxPool(_WindowPool):
    """Maximum over the in-bounds part of each window, then the clamp."""

    name = "MaxPool"
    tflite = ("MAX_POOL_2D.")
    doc = "y = clamp(max of the in-bounds window elements, act_min, act_max)."
    attrs = (*_KERNEL, *c.window_attrs(dilation=True), c.ACT_MIN, c.ACT_MAX)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        vals, _ = _windows(arrays[0], a, fill=np.iinfo(np.int64).min)
        return c.clamp_to(vals.max(axis=2), a, out_dtype)


def _rounded_average(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """TFLite's average: ``(acc ± count/2) / count`` with C's truncating division."""
    half = count // 2
    num = np.where(total > 0, total + half, total - half)
    q = np.abs(num) // count
    return np.where(num >= 0, q, -q)


class AveragePool(_WindowPool):
    """TFLite's integer average pool: raw in-bounds sum divided by the in-bounds count."""

    name = "AveragePool"
    tflite = ("AVERAGE_POOL_2D: the raw in-bounds sum, divided by the in-bounds count with "
              "rounding half away from zero.")
    doc = ("acc = Σ x over the in-bounds window (padding is not counted); "
           "y = clamp((acc ± count/2) / count, act_min, act_max) with C's truncating division, "
           "i.e. rounding half away from zero.")
    attrs = (*_KERNEL, *c.window_attrs(dilation=False), c.ACT_MIN, c.ACT_MAX)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        vals, mask = _windows(arrays[0], a, fill=0)
        total = vals.sum(axis=2)
        count = mask.sum(axis=0).astype(np.int64)[None, None]
        return c.clamp_to(_rounded_average(total, count), a, out_dtype)


class GlobalAveragePool(OpSpec):
    """Average over all of H×W with AveragePool's rounding; output [N, C, 1, 1]."""

    name = "GlobalAveragePool"
    tflite = ("AVERAGE_POOL_2D with a window of the whole H×W. TFLite converters emit MEAN for a "
              "global average pool, which rounds differently: tflite targets lower it as MEAN "
              "(see Conv); this op serves the other targets.")
    doc = "y[n,c] = clamp((Σ_hw x ± HW/2) / HW, act_min, act_max) (truncating division)."
    inputs = (Input("x", "act", "input activations, NCHW"),)
    attrs = (c.ACT_MIN, c.ACT_MAX)
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x = arrays[0]
        if x.ndim != 4 or x.shape[2] * x.shape[3] == 0:
            raise KernelError(f"{where}{cls.name}: x must be 4-D (NCHW) with a non-empty "
                              f"H×W, got shape {list(x.shape)}")
        if x.shape[2] * x.shape[3] > (1 << 16):
            raise KernelError(f"{where}{cls.name}: H×W = {x.shape[2] * x.shape[3]} exceeds "
                              "65536; the int32 sum could overflow")
        c.check_clamp(a, out_dtype, where, cls.name)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x = arrays[0].astype(np.int64)
        total = x.sum(axis=(2, 3), keepdims=True)
        count = np.int64(x.shape[2] * x.shape[3])
        return c.clamp_to(_rounded_average(total, count), a, out_dtype)
