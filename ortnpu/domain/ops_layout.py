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
           "point; the quantizer inserts Requantize where they differ. Registered per input "
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
        widths = [(int(pads[i]), int(pads[i + r])) for i in range(r)]
        return np.pad(x, widths, constant_values=a["value"]).astype(out_dtype)
