"""Layout ops: no arithmetic, the values are moved, never changed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain import common as c
from ortnpu.domain.spec import MAX_VARIADIC, Attr, Input, OpSpec
from ortnpu.errors import KernelError


class Concat(OpSpec):
    """Concatenation of inputs that share one scale and zero point (TFLite's rule): a copy."""

    name = "Concat"
    tflite = ("CONCATENATION (int8: one scale and zero point on every input and the output).")
    doc = ("y = concatenate(x0, x1, ..., axis). Inputs must share the output's scale and zero "
           "point; the quantizer inserts Requantize where they differ and quantizes a constant "
           "input (a class token) with them. Registered per input "
           f"count 2..{MAX_VARIADIC}: Concat2_i8, Concat3_i8, ...")
    inputs = (Input("x", "act", "inputs (repeated)"),)
    attrs = (Attr("axis", int, 1, "concatenation axis", lo=-8, hi=7),)
    variadic = tuple(range(2, MAX_VARIADIC + 1))

    @classmethod
    def act_types(cls, count: int, out_dtype: np.dtype) -> list[tuple[np.dtype, ...]]:
        return [(np.dtype(out_dtype),)] * count   # every input has the output's type (check)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        first = arrays[0]
        if not -first.ndim <= a["axis"] < first.ndim:
            raise KernelError(f"{where}{cls.name}: axis {a['axis']} is outside rank {first.ndim}")
        ax = a["axis"] % first.ndim
        for k, arr in enumerate(arrays):
            if arr.dtype != out_dtype:
                raise KernelError(f"{where}{cls.name}: input x{k} has type {arr.dtype}, the "
                                  f"output {out_dtype}; requantize it first")
            if arr.ndim != first.ndim or any(arr.shape[d] != first.shape[d]
                                             for d in range(first.ndim) if d != ax):
                raise KernelError(f"{where}{cls.name}: input x{k} shape {list(arr.shape)} does "
                                  f"not match {list(first.shape)} outside axis {ax}")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        return np.concatenate(arrays, axis=a["axis"]).astype(out_dtype)


class Reshape(OpSpec):
    """ONNX Reshape (0 keeps a dimension, -1 infers one) on an integer tensor."""

    name = "Reshape"
    tflite = ("RESHAPE.")
    doc = "y = x reshaped to `shape` with ONNX's rules (0 copies the input dimension, -1 infers)."
    inputs = (Input("x", "act", "input"), Input("shape", "int64", "target shape"))
    same_type = True

    @classmethod
    def target_shape(cls, x: np.ndarray, shape: np.ndarray, where: str = "") -> tuple[int, ...]:
        """Resolve 0 and -1 entries; raise when the element count does not match."""
        dims = [int(d) for d in shape.reshape(-1)]
        out = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
        if out.count(-1) > 1 or any(d < -1 for d in out):
            raise KernelError(f"{where}{cls.name}: invalid shape {dims}")
        if -1 in out:
            known = math.prod(d for d in out if d != -1)  # Python ints: no int64 wrap
            if known == 0 or x.size % known:
                raise KernelError(f"{where}{cls.name}: cannot reshape {list(x.shape)} to {dims}")
            out[out.index(-1)] = x.size // known
        if math.prod(out) != x.size:
            raise KernelError(f"{where}{cls.name}: cannot reshape {list(x.shape)} "
                              f"({x.size} elements) to {dims}")
        return tuple(out)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        if arrays[1].ndim != 1 or arrays[1].size > 8:
            raise KernelError(f"{where}{cls.name}: shape must be a 1-D tensor of at most 8 "
                              f"entries, got shape {list(arrays[1].shape)}")
        cls.target_shape(arrays[0], arrays[1], where)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        return arrays[0].reshape(cls.target_shape(arrays[0], arrays[1])).astype(out_dtype)


class Flatten(OpSpec):
    """ONNX Flatten: dimensions before `axis` become rows, the rest columns."""

    name = "Flatten"
    tflite = ("RESHAPE.")
    doc = "y = x reshaped to [prod(shape[:axis]), prod(shape[axis:])]."
    inputs = (Input("x", "act", "input"),)
    attrs = (Attr("axis", int, 1, "first dimension of the columns", lo=-8, hi=8),)
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        if not -arrays[0].ndim <= a["axis"] <= arrays[0].ndim:
            raise KernelError(f"{where}{cls.name}: axis {a['axis']} is outside rank "
                              f"{arrays[0].ndim}")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x = arrays[0]
        axis = a["axis"] + x.ndim if a["axis"] < 0 else a["axis"]   # ONNX: axis in [-r, r]
        rows = int(np.prod(x.shape[:axis]))
        return x.reshape(rows, int(np.prod(x.shape[axis:]))).astype(out_dtype)


class Transpose(OpSpec):
    """Permutation of the axes."""

    name = "Transpose"
    tflite = ("TRANSPOSE.")
    doc = "y = transpose(x, perm)."
    inputs = (Input("x", "act", "input"), Input("perm", "int64", "permutation of the axes"))
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        perm = arrays[1].reshape(-1).tolist() if arrays[1].size <= 8 else None
        if perm is None or sorted(perm) != list(range(arrays[0].ndim)):
            raise KernelError(f"{where}{cls.name}: perm must be a permutation of "
                              f"0..{arrays[0].ndim - 1}")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        perm = [int(p) for p in arrays[1].reshape(-1)]
        return np.ascontiguousarray(np.transpose(arrays[0], perm)).astype(out_dtype)


class Pad(OpSpec):
    """Constant padding with an integer value (the zero point, so the padding means 0.0)."""

    name = "Pad"
    tflite = ("PAD: fills with the output zero point (the input's).")
    doc = ("y = x padded with `value` ; pads = [begin_0, ..., begin_r-1, end_0, ..., end_r-1] "
           "(ONNX order), all non-negative.")
    inputs = (Input("x", "act", "input"), Input("pads", "int64", "pads in ONNX order"))
    attrs = (Attr("value", int, 0, "pad value (the zero point)", lo=-(1 << 15),
                  hi=(1 << 16) - 1),)
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, pads = arrays
        if pads.shape != (2 * x.ndim,):
            raise KernelError(f"{where}{cls.name}: pads must have {2 * x.ndim} entries for a "
                              f"rank-{x.ndim} input, got shape {list(pads.shape)}")
        if pads.size and (pads.min() < 0 or pads.max() > (1 << 16)):
            raise KernelError(f"{where}{cls.name}: pads must lie in [0, 65536]")
        c.check_in_range(a["value"], x.dtype, "value", where, cls.name)
        out = [d + int(pads[i]) + int(pads[i + x.ndim]) for i, d in enumerate(x.shape)]
        c.check_elements(math.prod(out), where, cls.name)  # Python ints: no int64 wrap

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, pads = arrays
        r = x.ndim
        if r == 0:   # a scalar has no axis to pad (numpy's pad refuses the empty widths)
            return np.array(x, dtype=out_dtype)
        widths = [(int(pads[i]), int(pads[i + r])) for i in range(r)]
        return np.pad(x, widths, constant_values=a["value"]).astype(out_dtype)


def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice's clamping of one axis: ``(first index, stop)`` for ``range(first, stop, step)``.

    Negative ``start``/``end`` count from the end; with a positive step both are clamped to
    ``[0, dim]``, with a negative step to ``[0, dim - 1]`` and ``[-1, dim - 1]`` (``-1`` then
    means "before the first element", not "the last one" as in a numpy slice).
    """
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


class Slice(OpSpec):
    """ONNX Slice with constant starts, ends, axes and steps (TFLite STRIDED_SLICE, SLICE and
    the outputs of SPLIT): a strided copy, values unchanged."""

    name = "Slice"
    tflite = ("STRIDED_SLICE / SLICE / SPLIT / SPLIT_V (a copy: the output keeps the input's "
              "scale and zero point).")
    doc = ("y = x[starts[i]:ends[i]:steps[i] on axis axes[i]], with ONNX's rules: negative "
           "starts/ends count from the end and are clamped to the axis (for a negative step, "
           "to [-1, dim-1]); axes not listed are copied whole.")
    inputs = (Input("x", "act", "input"), Input("starts", "int64", "first index per axis"),
              Input("ends", "int64", "end (exclusive) per axis"),
              Input("axes", "int64", "the axes sliced (distinct, negative counts from the end)"),
              Input("steps", "int64", "step per axis, non-zero"))
    same_type = True

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, starts, ends, axes, steps = arrays
        n = axes.size
        if any(v.ndim != 1 or v.size != n for v in (starts, ends, steps)) or axes.ndim != 1:
            raise KernelError(f"{where}{cls.name}: starts, ends, axes and steps must be 1-D "
                              f"tensors of one length, got shapes {list(starts.shape)}, "
                              f"{list(ends.shape)}, {list(axes.shape)}, {list(steps.shape)}")
        if n > x.ndim:
            raise KernelError(f"{where}{cls.name}: {n} axes for a rank-{x.ndim} input")
        norm = [int(k) + x.ndim if int(k) < 0 else int(k) for k in axes]
        if any(not 0 <= k < x.ndim for k in norm) or len(set(norm)) != n:
            raise KernelError(f"{where}{cls.name}: axes {axes.tolist()} must be distinct axes "
                              f"of a rank-{x.ndim} input")
        if (steps == 0).any():
            raise KernelError(f"{where}{cls.name}: a step is 0")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, starts, ends, axes, steps = arrays
        index: list[Any] = [slice(None)] * x.ndim
        for k, axis in enumerate(int(v) for v in axes):
            dim, step = x.shape[axis], int(steps[k])
            # int64 extremes (INT64_MAX for "to the end") clamp like any other value
            first, stop = slice_bounds(dim, int(starts[k]), int(ends[k]), step)
            index[axis] = slice(first, None if stop < 0 else stop, step)
        return np.ascontiguousarray(x[tuple(index)]).astype(out_dtype)
