"""Attribute sets, checks and helpers shared by several ops of the domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain.arith import ROUNDING_RULES, rescale_bounds
from ortnpu.domain.spec import Attr
from ortnpu.errors import KernelError

#: Largest number of elements an op may produce or materialise (im2col); protects memory.
MAX_ELEMENTS = 1 << 31

ROUNDING = Attr("rounding", str, "tflite_double", "rescale rule (see arith.py)", ROUNDING_RULES)
ACC_BITS = Attr("acc_bits", int, 32, "accumulator width: 32 wraps like int32 hardware, 64 exact",
                (32, 64))
ACT_MIN = Attr("act_min", int, -128, "lower output clamp (fused ReLU/ReLU6/Clip)",
               lo=-(1 << 15), hi=(1 << 16) - 1)
ACT_MAX = Attr("act_max", int, 127, "upper output clamp (fused ReLU/ReLU6/Clip)",
               lo=-(1 << 15), hi=(1 << 16) - 1)


def zp_attr(name: str, doc: str) -> Attr:
    """A zero-point attribute."""
    return Attr(name, int, 0, doc, lo=-(1 << 15), hi=(1 << 16) - 1)


def window_attrs(dilation: bool) -> tuple[Attr, ...]:
    """Strides, dilations and explicit pads of a 2-D sliding window."""
    attrs = [
        Attr("stride_h", int, 1, "vertical stride", lo=1, hi=1 << 16),
        Attr("stride_w", int, 1, "horizontal stride", lo=1, hi=1 << 16),
    ]
    if dilation:
        attrs += [Attr("dilation_h", int, 1, "vertical dilation", lo=1, hi=1 << 16),
                  Attr("dilation_w", int, 1, "horizontal dilation", lo=1, hi=1 << 16)]
    attrs += [Attr(f"pad_{s}", int, 0, f"{s} padding", lo=0, hi=1 << 16)
              for s in ("top", "left", "bottom", "right")]
    return tuple(attrs)


def dtype_range(dtype: np.dtype) -> tuple[int, int]:
    """Smallest and largest value of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def check_in_range(value: int, dtype: np.dtype, what: str, where: str, op: str) -> None:
    """Raise unless ``value`` fits ``dtype``."""
    lo, hi = dtype_range(dtype)
    if not lo <= value <= hi:
        raise KernelError(f"{where}{op}: {what} = {value} is outside the {dtype} range "
                          f"[{lo}, {hi}]")


def check_clamp(attrs: Mapping[str, Any], out_dtype: np.dtype, where: str, op: str) -> None:
    """Output zero point and clamp bounds must fit the output type, with min ≤ max."""
    check_in_range(attrs["act_min"], out_dtype, "act_min", where, op)
    check_in_range(attrs["act_max"], out_dtype, "act_max", where, op)
    if attrs["act_min"] > attrs["act_max"]:
        raise KernelError(f"{where}{op}: act_min {attrs['act_min']} > act_max {attrs['act_max']}")
    if "y_zp" in attrs:
        check_in_range(attrs["y_zp"], out_dtype, "y_zp", where, op)


def check_rescale_params(multiplier: np.ndarray, shift: np.ndarray, channels: int | None,
                         rounding: str, where: str, op: str) -> None:
    """Per-channel multiplier/shift: length 1 or ``channels``, values inside the rule's range."""
    for arr, what in ((multiplier, "multiplier"), (shift, "shift")):
        if arr.ndim != 1 or (arr.size != 1 and arr.size != channels):
            want = "1" if channels is None else f"1 or {channels}"
            raise KernelError(f"{where}{op}: {what} must be a 1-D tensor of length {want}, got "
                              f"shape {list(arr.shape)}")
    (mlo, mhi), (slo, shi) = rescale_bounds(rounding)
    if multiplier.size and (multiplier.min() < mlo or multiplier.max() > mhi):
        raise KernelError(f"{where}{op}: multiplier values must lie in [{mlo}, {mhi}] for "
                          f"rounding {rounding!r}")
    if shift.size and (shift.min() < slo or shift.max() > shi):
        raise KernelError(f"{where}{op}: shift values must lie in [{slo}, {shi}] for rounding "
                          f"{rounding!r}, got [{int(shift.min())}, {int(shift.max())}]")


def check_scalar_rescale(m: int, s: int, rounding: str, what: str, where: str, op: str) -> None:
    """Scalar multiplier/shift attributes inside the rule's range."""
    check_rescale_params(np.array([m], np.int64), np.array([s], np.int64), None, rounding,
                         where, f"{op} ({what})")


#: Elements of a zero-point padded input copy (the numpy reference holds it as int64: 2 GiB).
MAX_PADDED_ELEMENTS = 1 << 28


def check_elements(count: int, where: str, op: str, what: str = "output",
                   limit: int = MAX_ELEMENTS) -> None:
    """Refuse work whose size would exhaust memory."""
    if count > limit:
        raise KernelError(f"{where}{op}: {what} would have {count} elements, more than the "
                          f"{limit} ortnpu allows")


def window_out(size: int, k: int, stride: int, dilation: int, pad0: int, pad1: int,
               where: str, op: str, axis: str) -> int:
    """Output length of a sliding window; at least 1 or an error."""
    if k < 1:  # an empty kernel (a weight of shape [C, Cg, 0, kw]) has no window to slide
        raise KernelError(f"{where}{op}: the {axis} kernel size is {k}; it must be at least 1")
    span = dilation * (k - 1) + 1
    padded = size + pad0 + pad1
    if span > padded:
        raise KernelError(f"{where}{op}: {axis} window {span} is larger than the padded input "
                          f"{padded}")
    return (padded - span) // stride + 1


def clamp_to(y: np.ndarray, attrs: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
    """Apply ``act_min``/``act_max`` and cast to the output type."""
    return np.clip(y, attrs["act_min"], attrs["act_max"]).astype(out_dtype)


def exact_matmul(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """Integer matmul of int64 arrays; float64 BLAS when every partial sum is exact.

    Args:
        a, b: int64 operands (broadcasting like ``np.matmul``).
        bound: an upper bound of ``K * max|a| * max|b|``; below 2^53 float64 is exact.
    """
    if bound < (1 << 53):
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a, b)


def max_abs(a: np.ndarray) -> int:
    """Largest magnitude in an integer array (0 when empty)."""
    return int(np.abs(a).max()) if a.size else 0


def per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    """Broadcast a length-1 or length-``channels`` parameter to ``channels`` entries (int64)."""
    v = values.astype(np.int64)
    return np.broadcast_to(v, (channels,)) if v.size == 1 else v


def as_int64(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Widen every array to int64."""
    return [np.asarray(a, dtype=np.int64) for a in arrays]
