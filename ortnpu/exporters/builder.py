"""A small graph builder for lowerings: unique names, deduplicated constants, tracked types.

Lowerings write standard ONNX nodes through :class:`Builder`, which remembers the element type of
every tensor it creates, so helpers such as :meth:`Builder.cast` only add a Cast when the type
really changes, and so the implicit-casting pass can reason about the graph it built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

I64 = TensorProto.INT64
I32 = TensorProto.INT32
F32 = TensorProto.FLOAT
BOOL = TensorProto.BOOL

NP_OF_ONNX = {
    TensorProto.INT8: np.dtype(np.int8), TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.INT16: np.dtype(np.int16), TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT64: np.dtype(np.int64), TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.BOOL: np.dtype(np.bool_), TensorProto.UINT64: np.dtype(np.uint64),
    TensorProto.DOUBLE: np.dtype(np.float64),
}
ONNX_OF_NP = {v: k for k, v in NP_OF_ONNX.items()}


@dataclass
class Builder:
    """Collects the nodes and constants of one exported graph.

    Attributes:
        types: element type of every known tensor (graph tensors and created ones).
        nodes: nodes in topological order.
        initializers: constants created by lowerings.
        bounded: tensors known to hold values inside the range of a narrower type (the result
            of a clamp), mapped to that type; the implicit-casting pass uses it.
    """

    types: dict[str, int] = field(default_factory=dict)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    bounded: dict[str, int] = field(default_factory=dict)
    prefix: str = ""
    _count: int = 0
    _consts: dict[tuple[str, tuple[int, ...], bytes], str] = field(default_factory=dict)

    def fresh(self, hint: str) -> str:
        """A new unique tensor name inside the current node's prefix."""
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}" if self.prefix else f"{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        """An initializer holding ``value`` (deduplicated across the graph)."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = f"ortnpu_const_{len(self._consts)}"
            self._consts[key] = name
            self.initializers.append(numpy_helper.from_array(arr, name))
            self.types[name] = ONNX_OF_NP[arr.dtype]
        return self._consts[key]

    def emit(self, op_type: str, inputs: Sequence[str], out_type: int, output: str | None = None,
             **attrs: Any) -> str:
        """Append one node; return its (single) output name."""
        out = output or self.fresh(op_type.lower())
        name = self.fresh(op_type) if self.prefix else ""
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        self.types[out] = out_type
        return out

    # ------------------------------------------------------------------ casts
    def cast(self, x: str, to: int, output: str | None = None) -> str:
        """Cast ``x`` to ``to``; no node when it already has that type (and no output name)."""
        if self.types.get(x) == to and output is None:
            return x
        return self.emit("Cast", [x], to, output, to=to)

    def i64(self, x: str) -> str:
        """``x`` as int64."""
        return self.cast(x, I64)

    # ------------------------------------------------------------- int64 math
    def add(self, a: str, b: str) -> str:
        """``a + b`` (same type)."""
        return self.emit("Add", [a, b], self.types[a])

    def sub(self, a: str, b: str) -> str:
        """``a - b`` (same type)."""
        return self.emit("Sub", [a, b], self.types[a])

    def mul(self, a: str, b: str) -> str:
        """``a * b`` (same type)."""
        return self.emit("Mul", [a, b], self.types[a])

    def add_c(self, a: str, value: Any) -> str:
        """``a + constant`` (int64), skipped when the constant is all zeros (constants always
        broadcast into ``a``'s shape here)."""
        v = np.asarray(value, dtype=np.int64)
        return a if not v.any() else self.add(a, self.const(v))

    def mul_c(self, a: str, value: Any) -> str:
        """``a * constant`` (int64), skipped when the constant is all ones."""
        v = np.asarray(value, dtype=np.int64)
        return a if (v == 1).all() else self.mul(a, self.const(v))

    def mod_c(self, a: str, divisor: Any) -> str:
        """Floor modulo by positive constants (``Mod`` with ``fmod=0``: sign of the divisor)."""
        return self.emit("Mod", [a, self.const(divisor)], self.types[a], fmod=0)

    def div_c(self, a: str, divisor: Any) -> str:
        """Integer division truncating toward zero (ONNX ``Div`` on integers)."""
        return self.emit("Div", [a, self.const(divisor)], self.types[a])

    def floor_pow2(self, a: str, exponent: np.ndarray) -> str:
        """``floor(a / 2**exponent)``, exact for every int64 ``a`` (exponents 0..62)."""
        e = np.asarray(exponent, dtype=np.int64)
        if not e.any():
            return a
        p = np.left_shift(np.int64(1), e)
        rem = self.mod_c(a, p)
        return self.div_c(self.sub(a, rem), p)

    def wrap32(self, a: str) -> str:
        """Two's-complement wrap of int64 values to the int32 range (like ``arith.wrap_int32``)."""
        shifted = self.add_c(a, 1 << 31)
        return self.add_c(self.mod_c(shifted, np.int64(1) << np.int64(32)), -(1 << 31))

    def clip(self, a: str, lo: int | None, hi: int | None) -> str:
        """Clamp an int64 tensor to ``[lo, hi]`` (either bound may be None)."""
        if lo is None and hi is None:
            return a
        inputs = [a, self.const(lo) if lo is not None else "", self.const(hi) if hi is not None
                  else ""]
        while inputs and inputs[-1] == "":
            inputs.pop()
        return self.emit("Clip", inputs, self.types[a])

    def compare(self, op: str, a: str, b: str) -> str:
        """``Less``/``Greater``/``Equal``... giving a bool tensor."""
        return self.emit(op, [a, b], BOOL)

    def where(self, cond: str, a: str, b: str) -> str:
        """``cond ? a : b``."""
        return self.emit("Where", [cond, a, b], self.types[a])

    def finish(self, a: str, lo: int, hi: int, out_type: int, output: str) -> str:
        """Clamp to ``[lo, hi]`` and cast to the output type under the node's output name."""
        clamped = self.clip(a, lo, hi)
        self.bounded[clamped] = out_type
        return self.cast(clamped, out_type, output=output)
