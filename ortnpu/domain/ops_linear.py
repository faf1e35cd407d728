"""Ops that accumulate products: Conv, FullyConnected, MatMul."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain import common as c
from ortnpu.domain.arith import accumulate_wrap, rescale
from ortnpu.domain.spec import Attr, Input, OpSpec
from ortnpu.errors import KernelError

_RESCALE_INPUTS = (
    Input("multiplier", "int32", "fixed-point multiplier per output channel ([C] or [1])"),
    Input("shift", "int32", "signed shift per output channel ([C] or [1]); positive = left"),
)


class Conv(OpSpec):
    """2-D convolution (grouped, depthwise) with the rescale and clamp fused into the output."""

    name = "Conv"
    tflite = ("CONV_2D and DEPTHWISE_CONV_2D (reference_integer_ops::ConvPerChannel, "
              "DepthwiseConvPerChannel): multiplier per channel from (double)s_in · s_w[c] "
              "/ s_out; fused RELU/RELU6 bounds zp + roundf(f / s_out) in float32; SAME "
              "padding puts the extra row/column last. On tflite targets MEAN over H×W (ONNX "
              "GlobalAveragePool) is a depthwise Conv with weights 1, x_zp = y_zp and "
              "TFLite's renormalized MEAN multiplier (arith.mean_multiplier).")
    doc = ("acc[n,c,h,w] = Σ (x - x_zp) · w[c] over the window + bias[c] (acc_bits wide); "
           "y = clamp(rescale(acc, multiplier[c], shift[c]) + y_zp, act_min, act_max). "
           "Padding contributes x_zp (i.e. zero after the offset).")
    inputs = (
        Input("x", "act", "input activations, NCHW"),
        Input("w", "int8", "weights [C_out, C_in/group, kH, kW], zero point 0"),
        Input("bias", "int64", "bias per output channel in accumulator units [C_out]"),
        *_RESCALE_INPUTS,
    )
    attrs = (
        c.zp_attr("x_zp", "input zero point"),
        c.zp_attr("y_zp", "output zero point"),
        c.ACT_MIN, c.ACT_MAX,
        *c.window_attrs(dilation=True),
        Attr("group", int, 1, "number of groups (C_in for depthwise)", lo=1, hi=1 << 20),
        c.ROUNDING, c.ACC_BITS,
    )

    @classmethod
    def geometry(cls, x_shape: Sequence[int], w_shape: Sequence[int], a: Mapping[str, Any],
                 where: str = "") -> tuple[int, int]:
        """Output height and width (validating the window)."""
        oh = c.window_out(x_shape[2], w_shape[2], a["stride_h"], a["dilation_h"], a["pad_top"],
                          a["pad_bottom"], where, cls.name, "vertical")
        ow = c.window_out(x_shape[3], w_shape[3], a["stride_w"], a["dilation_w"], a["pad_left"],
                          a["pad_right"], where, cls.name, "horizontal")
        return oh, ow

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, w, bias, mult, shift = arrays
        op = cls.name
        if x.ndim != 4 or w.ndim != 4:
            raise KernelError(f"{where}{op}: x and w must be 4-D (NCHW, OIHW); got shapes "
                              f"{list(x.shape)} and {list(w.shape)}")
        g = a["group"]
        cin, cout = x.shape[1], w.shape[0]
        if cin % g or cout % g or w.shape[1] * g != cin:
            raise KernelError(f"{where}{op}: {cin} input channels, weights {list(w.shape)} and "
                              f"group {g} do not fit (need C_in = w.shape[1] * group and C_out "
                              "divisible by group)")
        if bias.shape != (cout,):
            raise KernelError(f"{where}{op}: bias must have shape [{cout}], got "
                              f"{list(bias.shape)}")
        c.check_rescale_params(mult, shift, cout, a["rounding"], where, op)
        c.check_in_range(a["x_zp"], x.dtype, "x_zp", where, op)
        c.check_clamp(a, out_dtype, where, op)
        oh, ow = cls.geometry(x.shape, w.shape, a, where)
        c.check_elements(x.shape[0] * cout * oh * ow, where, op)
        c.check_elements(x.shape[0] * cin * w.shape[2] * w.shape[3] * oh * ow, where, op,
                         "the im2col buffer")
        # both kernel paths copy the input with its padding (pads of thousands are no NPU's)
        c.check_elements(x.shape[0] * cin * (x.shape[2] + a["pad_top"] + a["pad_bottom"]) *
                         (x.shape[3] + a["pad_left"] + a["pad_right"]), where, op,
                         "the padded input", c.MAX_PADDED_ELEMENTS)

    @classmethod
    def accumulate(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any]) -> np.ndarray:
        """Exact int64 accumulator [N, C_out, OH, OW] before the width wrap."""
        x, w, bias = arrays[0], arrays[1], arrays[2]
        n = x.shape[0]
        cout, cg, kh, kw = w.shape
        g = a["group"]
        oh, ow = cls.geometry(x.shape, w.shape, a)
        xs = x.astype(np.int64) - a["x_zp"]
        xp = np.pad(xs, ((0, 0), (0, 0), (a["pad_top"], a["pad_bottom"]),
                         (a["pad_left"], a["pad_right"])))
        sh, sw, dh, dw = a["stride_h"], a["stride_w"], a["dilation_h"], a["dilation_w"]
        taps = [xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                   j * dw: j * dw + sw * (ow - 1) + 1: sw]
                for i in range(kh) for j in range(kw)]
        cols = np.stack(taps, axis=2)                       # N, C_in, kh*kw, OH, OW
        cols = cols.reshape(n, g, cg * kh * kw, oh * ow)    # channel-major like the weights
        wm = w.astype(np.int64).reshape(g, cout // g, cg * kh * kw)
        bound = cg * kh * kw * c.max_abs(xs) * c.max_abs(w)
        acc = c.exact_matmul(wm[None], cols, bound)          # N, G, C_out/G, OH*OW
        acc = acc.reshape(n, cout, oh, ow)
        return acc + bias.astype(np.int64)[None, :, None, None]

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        acc = accumulate_wrap(cls.accumulate(arrays, a), a["acc_bits"])
        cout = arrays[1].shape[0]
        m = c.per_channel(arrays[3], cout)[None, :, None, None]
        s = c.per_channel(arrays[4], cout)[None, :, None, None]
        y = rescale(acc, m, s, a["rounding"]) + a["y_zp"]
        return c.clamp_to(y, a, out_dtype)


class FullyConnected(OpSpec):
    """Fully connected layer (constant int8 weights) with fused rescale and clamp."""

    name = "FullyConnected"
    tflite = ("FULLY_CONNECTED: one weight scale multiplies s_in · s_w in float32, then divides by "
              "s_out in double; per channel as Conv; the fixed-point rescale of TFLite Micro's "
              "FULLY_CONNECTED and LiteRT's optimized int8 kernel (32-bit for int8, the 15-bit "
              "int64 one for 16x8). LiteRT's reference kernel, and its 16x8 kernel with an "
              "int64 bias in every resolver, rescale in double instead, (int32)round((double)acc "
              "· ((double)s_in · s_w / s_out)): different on 0.1 % of int8 and 6.6 % of 16x8 "
              "outputs in the oracle (docs/oracle.md).")
    doc = ("acc[..., o] = Σ_k (x[..., k] - x_zp) · w[o, k] + bias[o]; "
           "y = clamp(rescale(acc, multiplier[o], shift[o]) + y_zp, act_min, act_max).")
    inputs = (
        Input("x", "act", "input activations [..., K]"),
        Input("w", "int8", "weights [N, K] (TFLite layout), zero point 0"),
        Input("bias", "int64", "bias per output [N] in accumulator units"),
        *_RESCALE_INPUTS,
    )
    attrs = (c.zp_attr("x_zp", "input zero point"), c.zp_attr("y_zp", "output zero point"),
             c.ACT_MIN, c.ACT_MAX, c.ROUNDING, c.ACC_BITS)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, w, bias, mult, shift = arrays
        op = cls.name
        if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[1]:
            raise KernelError(f"{where}{op}: x [..., K] and w [N, K] do not match: "
                              f"{list(x.shape)} and {list(w.shape)}")
        if bias.shape != (w.shape[0],):
            raise KernelError(f"{where}{op}: bias must have shape [{w.shape[0]}], got "
                              f"{list(bias.shape)}")
        c.check_rescale_params(mult, shift, w.shape[0], a["rounding"], where, op)
        c.check_in_range(a["x_zp"], x.dtype, "x_zp", where, op)
        c.check_clamp(a, out_dtype, where, op)
        c.check_elements(int(np.prod(x.shape[:-1])) * w.shape[0], where, op)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, w, bias, mult, shift = arrays
        xs = x.astype(np.int64) - a["x_zp"]
        bound = w.shape[1] * c.max_abs(xs) * c.max_abs(w)
        acc = c.exact_matmul(xs, w.astype(np.int64).T, bound) + bias.astype(np.int64)
        acc = accumulate_wrap(acc, a["acc_bits"])
        n = w.shape[0]
        y = rescale(acc, c.per_channel(mult, n), c.per_channel(shift, n), a["rounding"])
        return c.clamp_to(y + a["y_zp"], a, out_dtype)


class MatMul(OpSpec):
    """Product of two activation tensors (attention, dynamic weights), per-tensor rescale."""

    name = "MatMul"
    tflite = ("BATCH_MATMUL (reference_ops::BatchMatMul): both zero points subtracted, batch "
              "dimensions broadcast, adj_y as a transpose of b; multiplier from s_a · s_b in "
              "float32 divided by s_y in double (GetQuantizedConvolutionMultipler); int8 "
              "accumulates in int32 and rescales with the 32-bit rule, 16x8 (zero points 0) in "
              "int64 with tflite_int64; no fused activation.")
    doc = ("acc = (a - a_zp) @ (b - b_zp) with numpy broadcasting of batch dimensions; "
           "y = clamp(rescale(acc, multiplier, shift) + y_zp, act_min, act_max).")
    inputs = (
        Input("a", "act", "left operand [..., M, K]"),
        Input("b", "act", "right operand [..., K, N]"),
        Input("multiplier", "int32", "fixed-point multiplier [1]"),
        Input("shift", "int32", "signed shift [1]; positive = left"),
    )
    attrs = (c.zp_attr("a_zp", "zero point of a"), c.zp_attr("b_zp", "zero point of b"),
             c.zp_attr("y_zp", "output zero point"), c.ACT_MIN, c.ACT_MAX, c.ROUNDING, c.ACC_BITS)

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        x, y, mult, shift = arrays
        op = cls.name
        if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-2]:
            raise KernelError(f"{where}{op}: shapes {list(x.shape)} and {list(y.shape)} cannot "
                              "be multiplied ([..., M, K] @ [..., K, N])")
        try:
            batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        except ValueError:
            raise KernelError(f"{where}{op}: batch dimensions {list(x.shape[:-2])} and "
                              f"{list(y.shape[:-2])} do not broadcast") from None
        c.check_rescale_params(mult, shift, None, a["rounding"], where, op)
        c.check_in_range(a["a_zp"], x.dtype, "a_zp", where, op)
        c.check_in_range(a["b_zp"], y.dtype, "b_zp", where, op)
        c.check_clamp(a, out_dtype, where, op)
        c.check_elements(int(np.prod(batch)) * x.shape[-2] * y.shape[-1], where, op)

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        x, y, mult, shift = arrays
        xs = x.astype(np.int64) - a["a_zp"]
        ys = y.astype(np.int64) - a["b_zp"]
        acc = accumulate_wrap(c.exact_matmul(xs, ys, x.shape[-1] * c.max_abs(xs) * c.max_abs(ys)),
                              a["acc_bits"])
        out = rescale(acc, mult.astype(np.int64)[0], shift.astype(np.int64)[0], a["rounding"])
        return c.clamp_to(out + a["y_zp"], a, out_dtype)
