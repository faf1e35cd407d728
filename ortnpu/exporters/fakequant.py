"""The ``fake-quant`` style: float32 ops on integer-valued tensors (N2D2's FakeQuantization).

Each NPU op becomes its float counterpart (Conv, MatMul, Add, Mul, MaxPool, AveragePool...)
applied to integer values held in float32, with integer-valued parameters, then the rescale as a
multiplication by the exact power-of-two-scaled multiplier and the target's rounding written with
Floor/Sign/Abs:

* ``half_up``, ``tflite_single``, ``tflite_int64``: ``floor(v + 0.5)`` (half up);
* ``tosa_double``: ``floor(v + 0.5 + sign(v)·2^(30-r))`` for right shifts r > 31, else half up;
* ``tflite_double``: ``floor(v·2^r + 0.5)`` (SaturatingRoundingDoublingHighMul rounds half up)
  then ``sign(t)·floor(|t|·2^-r + 0.5)`` (RoundingDivideByPOT rounds half away from zero).

This equals the simulator wherever float32 holds every intermediate exactly: accumulators below
2^24 and products ``accumulator × multiplier`` with at most 24 significant bits; the int32
wrap-around of a 32-bit accumulator is not represented. The export checks these bounds per node
and lists the nodes where they do not hold in the model's ``ortnpu.export.notes``.
"""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.conformance.edges import effective_factor
from ortnpu.exporters import integer
from ortnpu.exporters.builder import F32, Builder
from ortnpu.exporters.graph import Lowering, NodeContext, check_table, lower_model

_F24 = 1 << 24


class FakeQuantLowering:
    """The lowering table of one export, collecting where float32 cannot be exact."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    # ------------------------------------------------------------------ helpers
    def _inexact(self, ctx: NodeContext, why: str) -> None:
        self.notes.append(f"{ctx.node.name or ctx.output}: {why}")

    def _offset(self, b: Builder, x: str, zp: int) -> str:
        xf = b.cast(x, F32)
        return b.emit("Sub", [xf, b.const(zp, np.float32)], F32) if zp else xf

    def _check(self, ctx: NodeContext, bound: int, m: np.ndarray, s: np.ndarray) -> None:
        """Record the node when ``bound`` (largest |accumulator|) or the product with the
        multiplier's odd part leave float32's 24-bit significand, or the accumulator wraps."""
        odd = max((abs(int(v)) >> ((abs(int(v)) & -abs(int(v))).bit_length() - 1)
                   if v else 0) for v in np.asarray(m).reshape(-1))
        if bound >= _F24:
            self._inexact(ctx, f"accumulators up to {bound} exceed 2^24")
        elif bound * max(odd, 1) >= _F24:
            self._inexact(ctx, f"accumulator × multiplier (odd part {odd}) exceeds 2^24")
        if ctx.attrs.get("acc_bits") == 32 and bound > (1 << 31) - 1:
            self._inexact(ctx, "the int32 accumulator may wrap; float does not")
        if ctx.attrs.get("rounding") == "tflite_double" and np.any(np.asarray(s) > 0):
            self._inexact(ctx, "left shifts of tflite_double wrap in int32; float does not")

    def _rescale(self, b: Builder, ctx: NodeContext, v: str, m: np.ndarray,
                 s: np.ndarray, rounding: str | None = None) -> str:
        rule = rounding or ctx.attrs["rounding"]
        p, e = np.vectorize(lambda mm, ss: effective_factor(rule, int(mm), int(ss)))(m, s)
        p, e = np.asarray(p, np.float64), np.asarray(e, np.float64)
        if rule == "tflite_double":
            right = np.maximum(-np.asarray(s, np.int64), 0).astype(np.float64)
            scaled = b.mul(v, b.const(p * 2.0 ** (e + right), np.float32))
            t = self._floor_half(b, scaled)
            if not right.any():
                return t
            u = b.mul(t, b.const(2.0 ** -right, np.float32))
            mag = self._floor_half(b, b.emit("Abs", [u], F32))
            return b.mul(b.emit("Sign", [u], F32), mag)
        scaled = b.mul(v, b.const(p * 2.0 ** e, np.float32))
        right = np.maximum(-np.asarray(s, np.int64), 0)
        if rule == "tosa_double" and (right > 31).any():
            # TOSA's double rounding: the offset gains ±2^30 (i.e. ±2^(30-r) after the shift)
            extra = np.where(right > 31, 2.0 ** (30 - right.astype(np.float64)), 0.0)
            scaled = b.emit("Add", [scaled, b.mul(b.emit("Sign", [scaled], F32),
                                                  b.const(extra, np.float32))], F32)
        return self._floor_half(b, scaled)

    @staticmethod
    def _floor_half(b: Builder, v: str) -> str:
        return b.emit("Floor", [b.emit("Add", [v, b.const(0.5, np.float32)], F32)], F32)

    def _finish(self, b: Builder, ctx: NodeContext, y: str, y_zp: int = 0) -> None:
        if y_zp:
            y = b.emit("Add", [y, b.const(y_zp, np.float32)], F32)
        lo, hi = ctx.attrs["act_min"], ctx.attrs["act_max"]
        y = b.emit("Clip", [y, b.const(lo, np.float32), b.const(hi, np.float32)], F32)
        b.bounded[y] = ctx.out_type
        b.cast(y, ctx.out_type, output=ctx.output)

    # --------------------------------------------------------------- lowerings
    def conv(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        w, bias = ctx.const(1), ctx.const(2).astype(np.int64)
        x = self._offset(b, ctx.input(0), a["x_zp"])
        attrs = {"group": a["group"], "strides": [a["stride_h"], a["stride_w"]],
                 "dilations": [a["dilation_h"], a["dilation_w"]],
                 "pads": [a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]],
                 "kernel_shape": list(w.shape[2:])}
        acc = b.emit("Conv", [x, b.const(w, np.float32), b.const(bias, np.float32)], F32,
                     **attrs)
        m = integer.channel_shape(ctx.const(3), 4, 1)
        s = integer.channel_shape(ctx.const(4), 4, 1)
        span = _act_span(b, ctx.input(0), a["x_zp"])
        self._check(ctx, int(np.prod(w.shape[1:])) * span * 128 + int(np.abs(bias).max()), m, s)
        self._finish(b, ctx, self._rescale(b, ctx, acc, m, s), a["y_zp"])

    def fully_connected(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        w, bias = ctx.const(1), ctx.const(2).astype(np.int64)
        x = self._offset(b, ctx.input(0), a["x_zp"])
        acc = b.emit("MatMul", [x, b.const(w.T, np.float32)], F32)
        acc = b.emit("Add", [acc, b.const(bias, np.float32)], F32)
        m = integer.channel_shape(ctx.const(3), 1, -1)
        s = integer.channel_shape(ctx.const(4), 1, -1)
        span = _act_span(b, ctx.input(0), a["x_zp"])
        self._check(ctx, w.shape[1] * span * 128 + int(np.abs(bias).max()), m, s)
        self._finish(b, ctx, self._rescale(b, ctx, acc, m, s), a["y_zp"])

    def matmul(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        x = self._offset(b, ctx.input(0), a["a_zp"])
        y = self._offset(b, ctx.input(1), a["b_zp"])
        acc = b.emit("MatMul", [x, y], F32)
        m, s = ctx.const(2).reshape(()), ctx.const(3).reshape(())
        k = (ctx.shapes.get(ctx.input(0)) or [None])[-1] or 1 << 20
        bound = int(k) * _act_span(b, ctx.input(0), a["a_zp"]) * _act_span(b, ctx.input(1),
                                                                             a["b_zp"])
        self._check(ctx, bound, m, s)
        self._finish(b, ctx, self._rescale(b, ctx, acc, m, s), a["y_zp"])

    def add(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        parts = []
        for k, p in ((0, "a_"), (1, "b_")):
            v = self._offset(b, ctx.input(k), a[f"{p}zp"])
            span = _act_span(b, ctx.input(k), a[f"{p}zp"]) << a["left_shift"]
            m, s = np.int64(a[f"{p}multiplier"]), np.int64(a[f"{p}shift"])
            self._check(ctx, span, m, s)
            v = b.mul(v, b.const(2.0 ** a["left_shift"], np.float32))
            parts.append(self._rescale(b, ctx, v, m, s))
        total = b.emit("Add", parts, F32)
        m, s = np.int64(a["y_multiplier"]), np.int64(a["y_shift"])
        self._finish(b, ctx, self._rescale(b, ctx, total, m, s), a["y_zp"])

    def mul(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        x = self._offset(b, ctx.input(0), a["a_zp"])
        y = self._offset(b, ctx.input(1), a["b_zp"])
        bound = _act_span(b, ctx.input(0), a["a_zp"]) * _act_span(b, ctx.input(1), a["b_zp"])
        m, s = np.int64(a["multiplier"]), np.int64(a["shift"])
        self._check(ctx, bound, m, s)
        self._finish(b, ctx, self._rescale(b, ctx, b.emit("Mul", [x, y], F32), m, s),
                     a["y_zp"])

    def requantize(self, b: Builder, ctx: NodeContext) -> None:
        a = ctx.attrs
        m, s = ctx.const(1), ctx.const(2)
        if m.size > 1 or s.size > 1:
            channels = max(m.size, s.size)
            rank = ctx.rank(0) or 1
            m = integer.channel_shape(np.broadcast_to(m, (channels,)), rank, a["axis"])
            s = integer.channel_shape(np.broadcast_to(s, (channels,)), rank, a["axis"])
        else:
            m, s = m.reshape(()), s.reshape(())
        x = self._offset(b, ctx.input(0), a["x_zp"])
        self._check(ctx, _act_span(b, ctx.input(0), a["x_zp"]), m, s)
        self._finish(b, ctx, self._rescale(b, ctx, x, m, s), a["y_zp"])

    def max_pool(self, b: Builder, ctx: NodeContext) -> None:
        y = b.emit("MaxPool", [b.cast(ctx.input(0), F32)], F32,
                   **integer.window_attrs(ctx.attrs, dilation=True))
        self._finish(b, ctx, y)

    def _average(self, b: Builder, y: str) -> str:
        mag = self._floor_half(b, b.emit("Abs", [y], F32))
        return b.mul(b.emit("Sign", [y], F32), mag)

    def average_pool(self, b: Builder, ctx: NodeContext) -> None:
        y = b.emit("AveragePool", [b.cast(ctx.input(0), F32)], F32, count_include_pad=0,
                   **integer.window_attrs(ctx.attrs, dilation=False))
        a = ctx.attrs
        if a["kernel_h"] * a["kernel_w"] * (1 << 16) >= _F24:
            self._inexact(ctx, "window sums may exceed 2^24")
        self._finish(b, ctx, self._average(b, y))

    def global_average_pool(self, b: Builder, ctx: NodeContext) -> None:
        y = b.emit("GlobalAveragePool", [b.cast(ctx.input(0), F32)], F32)
        shape = ctx.shapes.get(ctx.input(0))
        if shape is None or None in shape[2:] or int(np.prod(shape[2:])) * (1 << 16) >= _F24:
            self._inexact(ctx, "window sums may exceed 2^24")
        self._finish(b, ctx, self._average(b, y))

    def table(self) -> dict[str, Lowering]:
        """Lowerings of every op (table lookups and layout ops are as in ``integer``)."""
        return {
            "Conv": self.conv, "FullyConnected": self.fully_connected, "MatMul": self.matmul,
            "Add": self.add, "Mul": self.mul, "Requantize": self.requantize,
            "Lut": integer.lower_lut, "MaxPool": self.max_pool,
            "AveragePool": self.average_pool, "GlobalAveragePool": self.global_average_pool,
            "Concat": integer.lower_concat, "Reshape": integer.lower_reshape,
            "Flatten": integer.lower_flatten, "Transpose": integer.lower_transpose,
            "Pad": integer.lower_pad, "Slice": integer.lower_slice,
            "Resize": integer.lower_resize,
            "Sub": integer.lower_sub, "Maximum": integer.lower_maximum,
            "Softmax": integer.lower_softmax,
            "Minimum": integer.lower_minimum,
            "SquaredDifference": integer.lower_squared_difference,
        }


def _act_span(b: Builder, x: str, zp: int) -> int:
    """Largest ``|x - zp|`` for the type of ``x``."""
    lo, hi = integer.RANGE.get(b.types.get(x, integer.I16), integer.RANGE[integer.I16])
    return max(abs(hi - zp), abs(lo - zp))


check_table(FakeQuantLowering().table(), "fake-quant")


def export_fake_quant(model: onnx.ModelProto, implicit_casting: bool = False) -> onnx.ModelProto:
    """Export in the fake-quant style; metadata says whether every node is exact in float32."""
    lowering = FakeQuantLowering()
    post = integer.drop_implicit_casts if implicit_casting else None
    # lower_model reads the metadata after lowering, so pass a dict filled in place.
    meta: dict[str, str] = {}

    def finalize(b: Builder, graph: onnx.GraphProto) -> None:
        if post is not None:
            post(b, graph)
        meta["ortnpu.export.exact"] = "false" if lowering.notes else "true"
        meta["ortnpu.export.notes"] = "; ".join(lowering.notes) or (
            "float32 holds every intermediate exactly")

    out = lower_model(model, lowering.table(), "fake-quant", finalize, meta)
    if lowering.notes:
        import logging

        logging.getLogger("ortnpu").warning(
            "fake-quant export is not exact on %d node(s): %s", len(lowering.notes),
            "; ".join(lowering.notes[:5]))
    return out


__all__ = ["FakeQuantLowering", "export_fake_quant"]
