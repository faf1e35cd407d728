"""Elementwise ops: Add, Sub, SquaredDifference, Mul (each with its own rescale), Maximum,
Minimum, Requantize, Lut."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ortnpu.domain import common as c
from ortnpu.domain.arith import SUB_NEGATE_MODES, rescale, wrap_int32
from ortnpu.domain.spec import Attr, Input, OpSpec
from ortnpu.errors import KernelError


def _mult_attrs(prefix: str, what: str) -> tuple[Attr, Attr]:
    return (Attr(f"{prefix}multiplier", int, 0, f"fixed-point multiplier of {what}",
                 lo=-(1 << 31), hi=(1 << 31) - 1),
            Attr(f"{prefix}shift", int, 0, f"signed shift of {what}; positive = left",
                 lo=-62, hi=31))


def _broadcast(x: np.ndarray, y: np.ndarray, where: str, op: str) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise KernelError(f"{where}{op}: shapes {list(x.shape)} and {list(y.shape)} do not "
                          "broadcast") from None


def _check_operands(op: str, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                    out_dtype: np.dtype, where: str) -> None:
    """Checks shared by the binary ops: broadcastable shapes, zero points, output clamp."""
    x, y = arrays
    shape = _broadcast(x, y, where, op)
    c.check_elements(math.prod(shape), where, op)
    c.check_in_range(a["a_zp"], x.dtype, "a_zp", where, op)
    c.check_in_range(a["b_zp"], y.dtype, "b_zp", where, op)
    c.check_clamp(a, out_dtype, where, op)


class Add(OpSpec):
    """Elementwise addition with TFLite's common-scale scheme (left shift, three rescales)."""

    name = "Add"
    tflite = ("ADD (reference_integer_ops::Add): twice_max = 2·max(s_a, s_b), left shift 20 "
              "(15 for 16x8), multipliers s_a/twice_max, s_b/twice_max, twice_max/(2^left·s_y).")
    doc = ("a' = rescale((a - a_zp) << left_shift, a_multiplier, a_shift); b' likewise; "
           "y = clamp(rescale(a' + b', y_multiplier, y_shift) + y_zp, act_min, act_max). "
           "All intermediates are int32 (wrapping). Inputs broadcast like numpy.")
    inputs = (Input("a", "act", "first operand"), Input("b", "act", "second operand"))
    attrs = (
        c.zp_attr("a_zp", "zero point of a"), c.zp_attr("b_zp", "zero point of b"),
        c.zp_attr("y_zp", "output zero point"),
        Attr("left_shift", int, 20, "common left shift (TFLite: 20 for 8 bits, 15 for 16)",
             lo=0, hi=31),
        *_mult_attrs("a_", "a"), *_mult_attrs("b_", "b"), *_mult_attrs("y_", "the sum"),
        c.ACT_MIN, c.ACT_MAX, c.ROUNDING,
    )
    #: sign of b's multiplier in the kernel (-1: TFLite's SUB)
    b_sign: ClassVar[int] = 1

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        _check_operands(cls.name, arrays, a, out_dtype, where)
        for p in ("a_", "b_", "y_"):
            c.check_scalar_rescale(a[f"{p}multiplier"], a[f"{p}shift"], a["rounding"],
                                   f"{p}multiplier/{p}shift", where, cls.name)

    @classmethod
    def rescaled(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Both operands shifted left (int32 wrap) and rescaled to the common scale."""
        r = a["rounding"]
        x = wrap_int32((arrays[0].astype(np.int64) - a["a_zp"]) << a["left_shift"])
        y = wrap_int32((arrays[1].astype(np.int64) - a["b_zp"]) << a["left_shift"])
        return (rescale(x, a["a_multiplier"], a["a_shift"], r),
                rescale(y, cls.b_sign * a["b_multiplier"], a["b_shift"], r))

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        xs, ys = cls.rescaled(arrays, a)
        total = wrap_int32(xs + ys)
        out = rescale(total, a["y_multiplier"], a["y_shift"], a["rounding"]) + a["y_zp"]
        return c.clamp_to(out, a, out_dtype)


class Sub(Add):
    """Elementwise difference: TFLite's SUB, which is its ADD kernel with b's multiplier negated."""

    name = "Sub"
    tflite = ("SUB int8 and 16x8 general (PrepareGeneralSubOp, op_sign -1): the ADD scheme "
              "(twice_max, left shift 20 or 15, three multipliers) with input2_multiplier "
              "negated, run by reference_integer_ops::Add; SaturatingRoundingDoublingHighMul and "
              "the rounding shift then see the negative multiplier.")
    doc = ("As Add with b negated. negate = 'multiplier' (TFLite): b' = rescale((b - b_zp) << "
           "left_shift, -b_multiplier, b_shift); negate = 'result' (TOSA's RESCALE then SUB): "
           "b' = -rescale((b - b_zp) << left_shift, b_multiplier, b_shift), which differs where "
           "b's rescale rounds a tie; y = clamp(rescale(a' + b', y_multiplier, y_shift) + y_zp). "
           "`b_multiplier` holds the magnitude (non-negative, as the rules require).")
    attrs = (*Add.attrs,
             Attr("negate", str, "multiplier", "where b is negated: its multiplier (TFLite's "
                  "SUB) or its rescaled value (TOSA); the target's `sub_negate`",
                  SUB_NEGATE_MODES))
    b_sign = -1

    @classmethod
    def rescaled(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """As Add's; with ``negate = 'result'`` b is rescaled first and negated after."""
        if a["negate"] == "multiplier":
            return super().rescaled(arrays, a)
        xs, ys = Add.rescaled(arrays, a)
        return xs, -ys


class SquaredDifference(Add):
    """Squared difference of two operands: TFLite's int8 SQUARED_DIFFERENCE (a LayerNorm's
    ``(x - mean)²`` before the variance's MEAN)."""

    name = "SquaredDifference"
    tflite = ("SQUARED_DIFFERENCE int8 (squared_difference.cc; LiteRT has no int16 kernel): "
              "left shift 7, twice_max = 2·max(s_a, s_b), input multipliers s/twice_max and "
              "output multiplier twice_max² / (2^14 · s_y), each QuantizeMultiplierSmallerThan"
              "OneExp in double; the int32 difference of the rescaled inputs is squared and "
              "rescaled with MultiplyByQuantizedMultiplierSmallerThanOneExp (the 32-bit "
              "double-rounding rule).")
    doc = ("a' = rescale((a - a_zp) << left_shift, a_multiplier, a_shift); b' likewise; "
           "y = clamp(rescale((a' - b')², y_multiplier, y_shift) + y_zp, act_min, act_max). "
           "The difference and its square are int32 (wrapping). Inputs broadcast like numpy.")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        xs, ys = cls.rescaled(arrays, a)
        d = wrap_int32(xs - ys)
        out = rescale(wrap_int32(d * d), a["y_multiplier"], a["y_shift"], a["rounding"])
        return c.clamp_to(out + a["y_zp"], a, out_dtype)


class Mul(OpSpec):
    """Elementwise product with one rescale (TFLite's Mul)."""

    name = "Mul"
    tflite = ("MUL: s_a · s_b / s_y computed wholly in float32.")
    doc = ("y = clamp(rescale((a - a_zp) · (b - b_zp), multiplier, shift) + y_zp, act_min, "
           "act_max); the product is int32 (wrapping). Inputs broadcast like numpy.")
    inputs = (Input("a", "act", "first operand"), Input("b", "act", "second operand"))
    attrs = (
        c.zp_attr("a_zp", "zero point of a"), c.zp_attr("b_zp", "zero point of b"),
        c.zp_attr("y_zp", "output zero point"), *_mult_attrs("", "the product"),
        c.ACT_MIN, c.ACT_MAX, c.ROUNDING,
    )

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        _check_operands(cls.name, arrays, a, out_dtype, where)
        c.check_scalar_rescale(a["multiplier"], a["shift"], a["rounding"], "multiplier/shift",
                               where, cls.name)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        prod = wrap_int32((arrays[0].astype(np.int64) - a["a_zp"])
                          * (arrays[1].astype(np.int64) - a["b_zp"]))
        out = rescale(prod, a["multiplier"], a["shift"], a["rounding"]) + a["y_zp"]
        return c.clamp_to(out, a, out_dtype)


class Maximum(OpSpec):
    """Elementwise maximum of two operands on the output's scale and zero point."""

    name = "Maximum"
    tflite = ("MAXIMUM (maximum_minimum.cc): compares the stored integers, so both inputs and "
              "the output share one scale and zero point; the quantizer requantizes an input "
              "on other parameters first.")
    doc = ("y = max(a, b) on the integers; a, b and y have one type and one scale and zero "
           "point. Inputs broadcast like numpy.")
    inputs = (Input("a", "act", "first operand"), Input("b", "act", "second operand"))
    same_type = True
    function: ClassVar[Any] = staticmethod(np.maximum)

    @classmethod
    def act_types(cls, count: int, out_dtype: np.dtype) -> list[tuple[np.dtype, ...]]:
        return [(np.dtype(out_dtype),)] * 2   # both operands have the output's type (check)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, y = arrays
        if y.dtype != out_dtype:
            raise KernelError(f"{where}{cls.name}: input b has type {y.dtype}, the output "
                              f"{out_dtype}; requantize it first")
        c.check_elements(math.prod(_broadcast(x, y, where, cls.name)), where, cls.name)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        return np.ascontiguousarray(cls.function(arrays[0], arrays[1])).astype(out_dtype)


class Minimum(Maximum):
    """Elementwise minimum of two operands on the output's scale and zero point."""

    name = "Minimum"
    tflite = ("MINIMUM: as MAXIMUM.")
    doc = ("y = min(a, b) on the integers; a, b and y have one type and one scale and zero "
           "point. Inputs broadcast like numpy.")
    function = staticmethod(np.minimum)


class Requantize(OpSpec):
    """Change scale, zero point or bit width: ``y = clamp(rescale(x - x_zp) + y_zp)``."""

    name = "Requantize"
    tflite = ("QUANTIZE int8 → int8 (multiplier from (double)s_in / s_out); RELU and RELU6 with a "
              "scale change (ReluX: float32 s_in / s_out, requantize first, then clamp to "
              "[max(qmin, zp), min(qmax, zp + roundf(6 / s_out))]).")
    doc = ("y = clamp(rescale(x - x_zp, multiplier[k], shift[k]) + y_zp, act_min, act_max) "
           "where k is the index along `axis` for per-channel parameters.")
    inputs = (
        Input("x", "act", "input"),
        Input("multiplier", "int32", "fixed-point multiplier ([1] or [C] along axis)"),
        Input("shift", "int32", "signed shift ([1] or [C] along axis); positive = left"),
    )
    attrs = (c.zp_attr("x_zp", "input zero point"), c.zp_attr("y_zp", "output zero point"),
             Attr("axis", int, 1, "channel axis of per-channel parameters", lo=-8, hi=7),
             c.ACT_MIN, c.ACT_MAX, c.ROUNDING)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, mult, shift = arrays
        channels = None
        if mult.size > 1 or shift.size > 1:
            if not -x.ndim <= a["axis"] < x.ndim:
                raise KernelError(f"{where}{cls.name}: axis {a['axis']} is outside the rank "
                                  f"{x.ndim} of x")
            channels = x.shape[a["axis"]]
        c.check_rescale_params(mult, shift, channels, a["rounding"], where, cls.name)
        c.check_in_range(a["x_zp"], x.dtype, "x_zp", where, cls.name)
        c.check_clamp(a, out_dtype, where, cls.name)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, mult, shift = arrays
        m, s = mult.astype(np.int64), shift.astype(np.int64)
        if m.size > 1 or s.size > 1:
            axis = a["axis"] % x.ndim
            shape = [1] * x.ndim
            shape[axis] = x.shape[axis]
            m = np.broadcast_to(m, (x.shape[axis],)).reshape(shape)
            s = np.broadcast_to(s, (x.shape[axis],)).reshape(shape)
        else:
            m, s = m.reshape(()), s.reshape(())
        out = rescale(x.astype(np.int64) - a["x_zp"], m, s, a["rounding"]) + a["y_zp"]
        return c.clamp_to(out, a, out_dtype)


class Lut(OpSpec):
    """Table lookup (sigmoid, tanh, hard-swish, exp, ...): ``y = table[x - min(type of x)]``."""

    name = "Lut"
    tflite = ("int8 LOGISTIC and TANH: LUTPopulate, the function in float32 on every input value "
              "(LOGISTIC output fixed at 1/256, -128). int8 HARD_SWISH: the table holds the "
              "reference kernel's 16-bit fixed-point result for every input value "
              "(quant/tables.py). int16 LOGISTIC/TANH (output 2^-15): the table holds "
              "reference_integer_ops::Logistic/Tanh for every input value: the input rescaled "
              "to 1/(3*4096) (or multiplied by 3 << shift for a power-of-two scale), linear "
              "interpolation of 256 nodes of sigmoid(i/24) in 0.16 fixed point, mirrored for "
              "negative inputs, rounded back to 16 bits. int16 GELU: LUTPopulate<int16_t> (513 "
              "float32 samples, each lowered by half the midpoint interpolation error) and "
              "LUTLookup's 9-bit index / 7-bit interpolation, for every input value.")
    doc = ("y = table[x - min(x.dtype)]: the table has one entry per input value (256 for "
           "8-bit inputs, 65536 for int16) and the output's type.")
    inputs = (Input("x", "act", "input"),
              Input("table", "act", "lookup table, one entry per input value, output type"))

    @classmethod
    def act_types(cls, count: int, out_dtype: np.dtype) -> list[tuple[np.dtype, ...]]:
        x, _ = super().act_types(count, out_dtype)
        return [x, (np.dtype(out_dtype),)]   # the table has the output's type (check)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, table = arrays
        want = 1 << (8 * x.dtype.itemsize)
        if table.shape != (want,):
            raise KernelError(f"{where}{cls.name}: a {x.dtype} input needs a table of {want} "
                              f"entries, got shape {list(table.shape)}")
        if table.dtype != out_dtype:
            raise KernelError(f"{where}{cls.name}: table type {table.dtype} must equal the "
                              f"output type {out_dtype}")

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, table = arrays
        index = x.astype(np.int64) - int(np.iinfo(x.dtype).min)
        return table[index].astype(out_dtype)
