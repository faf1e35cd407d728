"""Fuzz case generators: valid seeds of every op, model, target and calibration set, mutated.

Every generator takes a ``numpy.random.Generator`` and returns plain values, so a case is fully
determined by ``(seed, index)`` and can be replayed alone. Mutations favour the values that break
integer kernels: boundaries of each attribute's range and one past them, zero, negative and huge
sizes, wrong ranks, dtypes and lengths, non-contiguous views, NaN and infinity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu.domain import OPS_BY_NAME
from ortnpu.domain.arith import ROUNDING_RULES, SUB_NEGATE_MODES, rescale_bounds
from ortnpu.domain.spec import DOMAIN, DOMAIN_VERSION, ONNX_OF_DTYPE, OpSpec, op_type_name

ACT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))
#: Every dtype a mutation may swap in.
ANY_DTYPES = (*ACT_DTYPES, np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32))
#: Upper bound of elements of any generated array (keeps one case well under a second).
MAX_CASE_ELEMENTS = 1 << 20
INT64_EDGES = (-(1 << 63), -(1 << 31) - 1, -(1 << 31), -65537, -1, 0, 1, 2, 7, 8, 31, 32, 63,
               64, 255, 256, 65535, 65536, (1 << 31) - 1, 1 << 31, (1 << 63) - 1)


@dataclass
class OpCase:
    """One call of one op: the arrays (activations first), attributes and output type."""

    spec: type[OpSpec]
    arrays: list[np.ndarray]
    attrs: dict[str, Any]
    out_dtype: np.dtype
    mutations: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Short text for reports: op, shapes, dtypes, mutations."""
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"{self.spec.name}->{self.out_dtype} ({shapes}) {'; '.join(self.mutations)}"


# ----------------------------------------------------------------------------- helpers
def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def rand_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Uniform values over the whole range of an integer dtype (or floats with specials)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.standard_normal(shape).astype(dtype) * 10
        if x.size and rng.random() < 0.3:
            flat = x.reshape(-1)
            flat[rng.integers(flat.size)] = _pick(rng, (np.nan, np.inf, -np.inf))
        return x
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max), shape, endpoint=True, dtype=dtype)


def _range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _zp(rng: np.random.Generator, dtype: np.dtype) -> int:
    lo, hi = _range(dtype)
    return int(rng.integers(lo, hi + 1)) if rng.random() < 0.5 else int(_pick(rng, (lo, 0, hi)))


def _clamp_attrs(rng: np.random.Generator, out: np.dtype) -> dict[str, int]:
    lo, hi = _range(out)
    if rng.random() < 0.5:
        return {"act_min": lo, "act_max": hi}
    a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, 2))
    return {"act_min": a, "act_max": b}


def _rescale(rng: np.random.Generator, rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    (mlo, mhi), (slo, shi) = rescale_bounds(rule)
    if rng.random() < 0.6:  # realistic: normalised multipliers, small right shifts
        m = rng.integers(max(mlo, 1 << 30), mhi + 1, n)
        s = rng.integers(max(slo, -20), min(shi, 0) + 1, n)
    else:
        m = rng.integers(mlo, mhi + 1, n)
        s = rng.integers(slo, shi + 1, n)
    return m.astype(np.int32), s.astype(np.int32)


def _scalar_rescale(rng: np.random.Generator, rule: str, prefix: str) -> dict[str, int]:
    m, s = _rescale(rng, rule, 1)
    return {f"{prefix}multiplier": int(m[0]), f"{prefix}shift": int(s[0])}


def _common(rng: np.random.Generator) -> dict[str, Any]:
    return {"rounding": _pick(rng, ROUNDING_RULES), "acc_bits": _pick(rng, (32, 64))}


def _dims(rng: np.random.Generator, rank: int, hi: int = 6) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, hi + 1, rank))


# ------------------------------------------------------------------------ valid op seeds
def _conv(rng: np.random.Generator) -> OpCase:
    xdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    g = int(_pick(rng, (1, 1, 2, 3)))
    depthwise = rng.random() < 0.3
    cg = 1 if depthwise else int(rng.integers(1, 4))
    cin = cg * g
    cout = g * (1 if depthwise else int(rng.integers(1, 4)))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    a: dict[str, Any] = {"group": g, **_common(rng), **_clamp_attrs(rng, out),
                         "x_zp": _zp(rng, xdt), "y_zp": _zp(rng, out)}
    for k in ("stride_h", "stride_w", "dilation_h", "dilation_w"):
        a[k] = int(_pick(rng, (1, 1, 2, 3)))
    for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"):
        a[k] = int(_pick(rng, (0, 0, 1, 2)))
    h = int(rng.integers(a["dilation_h"] * (kh - 1) + 1, 12))
    w = int(rng.integers(a["dilation_w"] * (kw - 1) + 1, 12))
    x = rand_array(rng, (int(rng.integers(1, 3)), cin, h, w), xdt)
    wt = rand_array(rng, (cout, cg, kh, kw), np.dtype(np.int8))
    bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int64)
    m, s = _rescale(rng, a["rounding"], cout if rng.random() < 0.7 else 1)
    return OpCase(OPS_BY_NAME["Conv"], [x, wt, bias, m, s], a, out)


def _fc(rng: np.random.Generator) -> OpCase:
    xdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    k, n = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    lead = _dims(rng, int(rng.integers(0, 3)))
    a = {**_common(rng), **_clamp_attrs(rng, out), "x_zp": _zp(rng, xdt), "y_zp": _zp(rng, out)}
    x = rand_array(rng, (*lead, k), xdt)
    w = rand_array(rng, (n, k), np.dtype(np.int8))
    bias = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int64)
    m, s = _rescale(rng, a["rounding"], n if rng.random() < 0.7 else 1)
    return OpCase(OPS_BY_NAME["FullyConnected"], [x, w, bias, m, s], a, out)


def _matmul(rng: np.random.Generator) -> OpCase:
    adt, bdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    mm, k, n = (int(v) for v in rng.integers(1, 12, 3))
    batch = _dims(rng, int(rng.integers(0, 3)), 3)
    bbatch = tuple(1 if rng.random() < 0.3 else d for d in batch)
    a = {**_common(rng), **_clamp_attrs(rng, out), "a_zp": _zp(rng, adt), "b_zp": _zp(rng, bdt),
         "y_zp": _zp(rng, out)}
    m, s = _rescale(rng, a["rounding"], 1)
    return OpCase(OPS_BY_NAME["MatMul"], [rand_array(rng, (*batch, mm, k), adt),
                                          rand_array(rng, (*bbatch, k, n), bdt), m, s], a, out)


def _broadcast_pair(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = _dims(rng, int(rng.integers(0, 5)), 5)
    other = tuple(1 if rng.random() < 0.3 else d for d in shape)
    if rng.random() < 0.3:
        other = other[int(rng.integers(0, len(other) + 1)):]
    return (shape, other) if rng.random() < 0.5 else (other, shape)


def _add(rng: np.random.Generator) -> OpCase:
    adt, bdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    sa, sb = _broadcast_pair(rng)
    rule = _pick(rng, ROUNDING_RULES)
    a = {"rounding": rule, **_clamp_attrs(rng, out), "a_zp": _zp(rng, adt),
         "b_zp": _zp(rng, bdt), "y_zp": _zp(rng, out), "left_shift": int(rng.integers(0, 32)),
         **_scalar_rescale(rng, rule, "a_"), **_scalar_rescale(rng, rule, "b_"),
         **_scalar_rescale(rng, rule, "y_")}
    return OpCase(OPS_BY_NAME["Add"], [rand_array(rng, sa, adt), rand_array(rng, sb, bdt)], a,
                  out)


def _mul(rng: np.random.Generator) -> OpCase:
    adt, bdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    sa, sb = _broadcast_pair(rng)
    rule = _pick(rng, ROUNDING_RULES)
    a = {"rounding": rule, **_clamp_attrs(rng, out), "a_zp": _zp(rng, adt),
         "b_zp": _zp(rng, bdt), "y_zp": _zp(rng, out), **_scalar_rescale(rng, rule, "")}
    return OpCase(OPS_BY_NAME["Mul"], [rand_array(rng, sa, adt), rand_array(rng, sb, bdt)], a,
                  out)


def _requantize(rng: np.random.Generator) -> OpCase:
    xdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    shape = _dims(rng, int(rng.integers(1, 5)))
    axis = int(rng.integers(-len(shape), len(shape)))
    rule = _pick(rng, ROUNDING_RULES)
    m, s = _rescale(rng, rule, shape[axis] if rng.random() < 0.5 else 1)
    a = {"rounding": rule, **_clamp_attrs(rng, out), "x_zp": _zp(rng, xdt),
         "y_zp": _zp(rng, out), "axis": axis}
    return OpCase(OPS_BY_NAME["Requantize"], [rand_array(rng, shape, xdt), m, s], a, out)


def _lut(rng: np.random.Generator) -> OpCase:
    xdt, out = _pick(rng, ACT_DTYPES), _pick(rng, ACT_DTYPES)
    table = rand_array(rng, (1 << (8 * xdt.itemsize),), out)
    return OpCase(OPS_BY_NAME["Lut"], [rand_array(rng, _dims(rng, int(rng.integers(0, 4))), xdt),
                                       table], {}, out)


def _pool(name: str) -> Callable[[np.random.Generator], OpCase]:
    def build(rng: np.random.Generator) -> OpCase:
        xdt = _pick(rng, ACT_DTYPES)
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        a: dict[str, Any] = {"kernel_h": kh, "kernel_w": kw, **_clamp_attrs(rng, xdt)}
        for k in ("stride_h", "stride_w"):
            a[k] = int(_pick(rng, (1, 1, 2, 3)))
        if name == "MaxPool":
            a["dilation_h"], a["dilation_w"] = (int(_pick(rng, (1, 1, 2))) for _ in range(2))
        a["pad_top"] = a["pad_bottom"] = int(rng.integers(0, kh))
        a["pad_left"] = a["pad_right"] = int(rng.integers(0, kw))
        dh, dw = a.get("dilation_h", 1), a.get("dilation_w", 1)
        x = rand_array(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                             int(rng.integers(dh * (kh - 1) + 1, 12)),
                             int(rng.integers(dw * (kw - 1) + 1, 12))), xdt)
        return OpCase(OPS_BY_NAME[name], [x], a, xdt)

    return build


def _gap(rng: np.random.Generator) -> OpCase:
    xdt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, (int(rng.integers(1, 3)), *_dims(rng, 3, 9)), xdt)
    return OpCase(OPS_BY_NAME["GlobalAveragePool"], [x], _clamp_attrs(rng, xdt), xdt)


def _concat(rng: np.random.Generator) -> OpCase:
    dt = _pick(rng, ACT_DTYPES)
    shape = list(_dims(rng, int(rng.integers(1, 5))))
    axis = int(rng.integers(-len(shape), len(shape)))
    xs = []
    for _ in range(int(rng.integers(2, 9))):
        shape[axis] = int(rng.integers(1, 5))
        xs.append(rand_array(rng, tuple(shape), dt))
    return OpCase(OPS_BY_NAME["Concat"], xs, {"axis": axis}, dt)


def _reshape(rng: np.random.Generator) -> OpCase:
    dt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, _dims(rng, int(rng.integers(1, 5))), dt)
    target = list(rng.permutation(x.shape))
    if target and rng.random() < 0.5:
        target[int(rng.integers(len(target)))] = -1
    return OpCase(OPS_BY_NAME["Reshape"], [x, np.array(target, np.int64)], {}, dt)


def _flatten(rng: np.random.Generator) -> OpCase:
    dt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, _dims(rng, int(rng.integers(0, 5))), dt)
    return OpCase(OPS_BY_NAME["Flatten"], [x], {"axis": int(rng.integers(-x.ndim, x.ndim + 1))},
                  dt)


def _transpose(rng: np.random.Generator) -> OpCase:
    dt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, _dims(rng, int(rng.integers(1, 5))), dt)
    return OpCase(OPS_BY_NAME["Transpose"], [x, rng.permutation(x.ndim).astype(np.int64)], {},
                  dt)


def _pad(rng: np.random.Generator) -> OpCase:
    dt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, _dims(rng, int(rng.integers(1, 5))), dt)
    pads = rng.integers(0, 3, 2 * x.ndim).astype(np.int64)
    return OpCase(OPS_BY_NAME["Pad"], [x, pads], {"value": _zp(rng, dt)}, dt)


def _sub(rng: np.random.Generator) -> OpCase:
    """Sub: Add's attributes (its rescales and left shift), operands in either order, b
    negated through its multiplier (TFLite) or after its rescale (TOSA)."""
    case = _add(rng)
    attrs = {**case.attrs, "negate": _pick(rng, SUB_NEGATE_MODES)}
    return OpCase(OPS_BY_NAME["Sub"], case.arrays, attrs, case.out_dtype)


def _min_max(name: str) -> Callable[[np.random.Generator], OpCase]:
    """Maximum/Minimum: operands and output of one type, broadcast either way."""
    def build(rng: np.random.Generator) -> OpCase:
        dt = _pick(rng, ACT_DTYPES)
        sa, sb = _broadcast_pair(rng)
        return OpCase(OPS_BY_NAME[name], [rand_array(rng, sa, dt), rand_array(rng, sb, dt)], {},
                      dt)

    return build


def _slice(rng: np.random.Generator) -> OpCase:
    """Slice with steps of either sign, starts/ends out of range, counted from the end or
    "to the end" as exporters write it (±2^62, ±2^63-1), axes negative or not."""
    dt = _pick(rng, ACT_DTYPES)
    x = rand_array(rng, _dims(rng, int(rng.integers(1, 5)), 7), dt)
    n = int(rng.integers(1, x.ndim + 1))
    axes = rng.permutation(x.ndim)[:n] - (x.ndim if rng.random() < 0.3 else 0)
    steps = rng.choice([1, 1, 2, 3, -1, -2, 1 << 40], n)
    ends_pos = [1 << 62, (1 << 63) - 1, -1, 0, 3, 9]
    ends_neg = [-(1 << 62), -(1 << 63), 0, 1, -9]
    starts = np.where(steps > 0, rng.choice([0, 0, 1, 2, -3, -9, 1 << 62], n),
                      rng.choice([-1, -1, (1 << 63) - 1, 3, -2], n))
    ends = np.where(steps > 0, rng.choice(ends_pos, n), rng.choice(ends_neg, n))
    return OpCase(OPS_BY_NAME["Slice"], [x, starts.astype(np.int64), ends.astype(np.int64),
                                         axes.astype(np.int64), steps.astype(np.int64)], {}, dt)


def _resize(rng: np.random.Generator) -> OpCase:
    """Resize of NCHW: nearest or bilinear, every align_corners/half_pixel_centers pair
    (bilinear refuses both at once), 1-pixel inputs and outputs, down- and up-sampling."""
    dt = _pick(rng, ACT_DTYPES)
    h, w = (int(_pick(rng, (1, 1, 2, 3, 5, 8))) for _ in range(2))
    x = rand_array(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w), dt)
    a = {"mode": _pick(rng, ("nearest", "bilinear")),
         "align_corners": int(rng.integers(0, 2)), "half_pixel_centers": int(rng.integers(0, 2)),
         "out_h": int(_pick(rng, (1, h, 2 * h, 3 * h + 1, max(1, h // 2), 17))),
         "out_w": int(_pick(rng, (1, w, 2 * w, 3 * w + 1, max(1, w // 2), 17)))}
    if a["mode"] == "bilinear" and a["align_corners"]:
        a["half_pixel_centers"] = 0   # TFLite's bilinear refuses both (a mutation may set it)
    return OpCase(OPS_BY_NAME["Resize"], [x], a, dt)


def _softmax(rng: np.random.Generator) -> OpCase:
    """Softmax over the last axis: TFLite's parameters for an input scale, or random valid
    ones; rows of 1 value, of the deepest 8-bit row (511) and constant rows."""
    from ortnpu.domain.ops_softmax import MAX_DEPTH, softmax_params

    dt = _pick(rng, ACT_DTYPES)
    depth = int(_pick(rng, (1, 2, 7, 16, 100, MAX_DEPTH[dt.itemsize] if dt.itemsize == 1
                            else 600)))
    x = rand_array(rng, (*_dims(rng, int(rng.integers(0, 3)), 4), depth), dt)
    if rng.random() < 0.1:
        x[...] = _pick(rng, _range(dt))
    params = softmax_params(float(rng.uniform(0.001, 0.5)), dt)
    if isinstance(params, str) or rng.random() < 0.2:
        shift = int(rng.integers(0, 32) if dt.itemsize == 1 else rng.integers(-31, 32))
        # 8-bit: diff_min shifted must stay in int32 (a mutation may push it out)
        reach = min(1 << 16, ((1 << 31) - 1) >> max(shift, 0))
        params = {"multiplier": int(rng.integers(1 << 30, 1 << 31)), "shift": shift,
                  "diff_min": -int(rng.integers(0, reach + 1)) if dt.itemsize == 1 else 0}
    return OpCase(OPS_BY_NAME["Softmax"], [x], params, dt)


OP_SEEDS: dict[str, Callable[[np.random.Generator], OpCase]] = {
    "Conv": _conv, "FullyConnected": _fc, "MatMul": _matmul, "Add": _add, "Mul": _mul,
    "Requantize": _requantize, "Lut": _lut, "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AveragePool"), "GlobalAveragePool": _gap, "Concat": _concat,
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Pad": _pad,
    "Sub": _sub, "Maximum": _min_max("Maximum"), "Minimum": _min_max("Minimum"),
    "Slice": _slice, "Resize": _resize, "Softmax": _softmax,
}


# ------------------------------------------------------------------------------ mutations
def _attr_value(rng: np.random.Generator, decl: Any, current: Any) -> Any:
    if decl.kind is str:
        return _pick(rng, ("", "bogus", "tflite_double", "half_up", "tflite_int64", "\x00",
                           str(current) * 3, *(decl.choices or ())))
    edges = [v for v in (decl.lo, decl.hi) if v is not None]
    pool = [*INT64_EDGES, *edges, *(e - 1 for e in edges), *(e + 1 for e in edges)]
    if decl.choices:
        pool += list(decl.choices)
    if rng.random() < 0.3 and decl.lo is not None and decl.hi is not None:
        return int(rng.integers(decl.lo, decl.hi + 1))
    return int(_pick(rng, pool))


def mutate_attr(rng: np.random.Generator, case: OpCase) -> None:
    """Set one attribute to a boundary, out-of-range or random value."""
    decl = _pick(rng, [a for a in case.spec.all_attrs() if a.name != "node_name"] or [None])
    if decl is None:
        return
    value = _attr_value(rng, decl, case.attrs.get(decl.name, decl.default))
    case.attrs[decl.name] = value
    case.mutations.append(f"attr {decl.name}={value!r}")


def _reshaped(rng: np.random.Generator, arr: np.ndarray) -> tuple[np.ndarray, str]:
    shape = list(arr.shape)
    how = int(rng.integers(4))
    if how == 0 and shape:
        del shape[int(rng.integers(len(shape)))]
    elif how == 1:
        shape.insert(int(rng.integers(len(shape) + 1)), int(_pick(rng, (0, 1, 2, 3))))
    elif shape:
        k = int(rng.integers(len(shape)))
        shape[k] = int(_pick(rng, (0, 1, shape[k] - 1 if shape[k] > 1 else 2, shape[k] + 1,
                                   shape[k] * 2, 255, 256, 257, 1000)))
    if int(np.prod(shape, dtype=np.int64)) > MAX_CASE_ELEMENTS:
        return arr, "shape unchanged (too big)"
    return rand_array(rng, tuple(shape), arr.dtype), f"shape {list(arr.shape)}->{shape}"


def mutate_array(rng: np.random.Generator, case: OpCase, direct: bool) -> None:
    """Change the shape, dtype or values of one input (or make it non-contiguous)."""
    k = int(rng.integers(len(case.arrays)))
    arr = case.arrays[k]
    how = int(rng.integers(5 if direct else 4))
    if how == 0:
        case.arrays[k], what = _reshaped(rng, arr)
    elif how == 1:
        dt = _pick(rng, ANY_DTYPES)
        case.arrays[k] = rand_array(rng, arr.shape, dt)
        what = f"dtype {arr.dtype}->{dt}"
    elif how in (2, 3):
        new = arr.copy()
        if new.size and new.dtype.kind in "iu":
            lo, hi = _range(new.dtype)
            vals = [v for v in INT64_EDGES if lo <= v <= hi] + [lo, hi]
            flat = new.reshape(-1)
            for _ in range(int(rng.integers(1, 4))):
                flat[int(rng.integers(flat.size))] = _pick(rng, vals)
        case.arrays[k] = new
        what = "extreme values"
    else:
        big = np.repeat(arr, 2, axis=-1) if arr.ndim else arr
        case.arrays[k] = big[..., ::2] if arr.ndim else arr
        what = "non-contiguous view"
    case.mutations.append(f"input {k}: {what}")


def mutate_arity(rng: np.random.Generator, case: OpCase) -> None:
    """Drop or duplicate an input (direct kernel calls only: onnxruntime checks arity)."""
    if rng.random() < 0.5 and len(case.arrays) > 1:
        del case.arrays[int(rng.integers(len(case.arrays)))]
        case.mutations.append("input dropped")
    else:
        case.arrays.append(case.arrays[int(rng.integers(len(case.arrays)))])
        case.mutations.append("input duplicated")


def op_case(rng: np.random.Generator, direct: bool) -> OpCase:
    """A valid op call with 0..3 mutations (30% stay valid, to check results too)."""
    name = _pick(rng, sorted(OP_SEEDS))
    case = OP_SEEDS[name](rng)
    if rng.random() < 0.3:
        return case
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        if r < 0.45:
            mutate_attr(rng, case)
        elif r < 0.95 or not direct:
            mutate_array(rng, case, direct)
        else:
            mutate_arity(rng, case)
    if rng.random() < 0.1:
        case.out_dtype = _pick(rng, ACT_DTYPES)
        case.mutations.append(f"out dtype {case.out_dtype}")
    return case


def op_model(case: OpCase) -> tuple[onnx.ModelProto, dict[str, np.ndarray]] | None:
    """A one-node NPU graph of ``case``: activations fed, parameters as initializers."""
    count = len(case.arrays) - (len(case.spec.inputs) - 1) if case.spec.variadic else 0
    kinds = case.spec.input_kinds(count) if count >= 0 else []
    if len(kinds) != len(case.arrays) or (case.spec.variadic and count not in case.spec.variadic):
        return None
    if any(a.dtype not in ONNX_OF_DTYPE for a in case.arrays):
        return None
    names = [f"in{k}" for k in range(len(case.arrays))]
    feeds, inits, inputs = {}, [], []
    for name, kind, arr in zip(names, kinds, case.arrays, strict=True):
        if kind == "act":
            feeds[name] = arr
            inputs.append(helper.make_tensor_value_info(name, ONNX_OF_DTYPE[arr.dtype], None))
        else:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    attrs = {"node_name": "fuzz_node"}
    for decl in case.spec.attrs:
        value = case.attrs.get(decl.name, decl.default)
        if decl.kind is int and not -(1 << 63) <= int(value) < (1 << 63):
            return None
        attrs[decl.name] = value
    node = helper.make_node(op_type_name(case.spec.name, case.out_dtype, count), names, ["y"],
                            name="fuzz_node", domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], "fuzz_op", inputs,
                              [helper.make_tensor_value_info("y", ONNX_OF_DTYPE[case.out_dtype],
                                                             None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 8
    return model, feeds


# --------------------------------------------------------------------- float models, data
def tiny_cnn(seed: int = 0, batch: int | str = "N") -> onnx.ModelProto:
    """A small float CNN (Conv+Relu, MaxPool, depthwise, residual Add, swish, GAP, Gemm)."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    inits = [init("w1", 6, 3, 3, 3), init("b1", 6, scale=0.1), init("w2", 6, 1, 3, 3),
             init("b2", 6, scale=0.1), init("wf", 4, 6), init("bf", 4, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1],
                         group=6),
        helper.make_node("Add", ["c2", "p1"], ["a1"], name="add1"),
        helper.make_node("Sigmoid", ["a1"], ["s1"], name="sig"),
        helper.make_node("Mul", ["a1", "s1"], ["m1"], name="swish"),
        helper.make_node("GlobalAveragePool", ["m1"], ["g1"], name="gap"),
        helper.make_node("Flatten", ["g1"], ["f1"], name="flat"),
        helper.make_node("Gemm", ["f1", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth random images in [0, 1] for the tiny CNN."""
    x = rng.random((n, 3, 8, 8)).astype(np.float32)
    return ((x + np.roll(x, 1, axis=-1)) / 2).astype(np.float32)


def ort_qdq(act: str) -> onnx.ModelProto:
    """The tiny CNN (batch 1) through onnxruntime's own ``quantize_static`` (QDQ format);
    ``act`` is ``QInt8`` or ``QUInt8``."""
    from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds

    calib = images(np.random.default_rng(4321), 8)
    return quantize_with_onnxruntime(tiny_cnn(batch=1), sample_feeds("x", calib),
                                     activation_type=act)


_BAD_SCALES = (0.0, -0.5, float("nan"), float("inf"), 1e-30, 1e30)


def mutate_qdq_model(rng: np.random.Generator, model: onnx.ModelProto) -> list[str]:
    """Mutate a QDQ model in place: a scale, a zero point, an attribute, an op type, the
    wiring, or a node removed."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    ops = [n for n in g.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    how = int(rng.integers(8))
    if how <= 1:
        # an earlier mutation of the same model may have rewired a scale to an activation
        node = _pick(rng, [n for n in qdq if len(n.input) > 1 and n.input[1] in inits] or qdq)
        if len(node.input) < 2 or node.input[1] not in inits:
            return [f"{node.name} has no scale initializer"]
        t = inits[node.input[1]]
        arr = numpy_helper.to_array(t).astype(np.float32)
        value = _pick(rng, _BAD_SCALES) if rng.random() < 0.6 else \
            float(arr.reshape(-1)[0] * rng.uniform(0.1, 10))
        t.CopyFrom(numpy_helper.from_array(np.full(arr.shape, value, np.float32), t.name))
        return [f"{node.name} scale {t.name}={value}"]
    if how == 2:
        node = _pick(rng, [n for n in qdq if len(n.input) > 2 and n.input[2] in inits] or qdq)
        if len(node.input) < 3 or node.input[2] not in inits:
            return [f"{node.name} has no zero point initializer"]
        t = inits[node.input[2]]
        arr = numpy_helper.to_array(t)
        if rng.random() < 0.5:
            dtype = np.dtype(_pick(rng, ("int16", "int32", "uint8", "int8")))
            new = arr.astype(dtype)
        else:
            new = np.full(arr.shape, int(rng.integers(-200, 300)), np.int64).astype(arr.dtype)
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
        return [f"{node.name} zero point {t.name}={new.reshape(-1)[:2]} {new.dtype}"]
    if how == 3:
        node = _pick(rng, g.node)
        if rng.random() < 0.5 and node.attribute:
            attr = _pick(rng, list(node.attribute))
            node.attribute.remove(attr)
            return [f"{node.name}.{attr.name} removed"]
        name = _pick(rng, ("axis", "pads", "strides", "group", "kernel_shape", "transB"))
        value = int(rng.integers(-3, 5))
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(
            name, [value] * 4 if name in ("pads", "strides", "kernel_shape") else value))
        return [f"{node.name}.{name}={value}"]
    if how == 4:
        node = _pick(rng, ops)
        node.op_type = _pick(rng, ("Cos", "Tanh", "Relu", "Softmax", "Identity", "MaxPool"))
        return [f"{node.name} op_type {node.op_type}"]
    if how == 5:
        node = _pick(rng, g.node)
        k = int(rng.integers(len(node.input)))
        node.input[k] = _pick(rng, [*(n.output[0] for n in g.node), "x", "dangling"])
        return [f"{node.name} input {k} rewired to {node.input[k]}"]
    node = _pick(rng, g.node)
    g.node.remove(node)
    return [f"{node.name} removed"]


def mutate_npu_model(rng: np.random.Generator, model: onnx.ModelProto) -> list[str]:
    """Mutate ``model`` in place (a com.ortnpu node's attribute, parameter, type or wiring)."""
    g = model.graph
    ours = [n for n in g.node if n.domain == DOMAIN]
    node = _pick(rng, ours)
    inits = {t.name: t for t in g.initializer}
    how = int(rng.integers(8))
    if how <= 2 and node.attribute:
        attr = _pick(rng, list(node.attribute))
        decl = next((a for a in OPS_BY_NAME[node.op_type.rpartition("_")[0].rstrip("0123456789")]
                     .all_attrs() if a.name == attr.name), None)
        if decl is not None and decl.kind is int and rng.random() < 0.8:
            value = _attr_value(rng, decl, attr.i)
            if -(1 << 63) <= value < (1 << 63):
                attr.i = value
            return [f"{node.name}.{attr.name}={value}"]
        node.attribute.remove(attr)
        if rng.random() < 0.5:
            node.attribute.append(helper.make_attribute(attr.name, 1.5))
            return [f"{node.name}.{attr.name} float"]
        return [f"{node.name}.{attr.name} removed"]
    if how <= 4:
        params = [i for i in node.input if i in inits]
        if params:
            t = inits[_pick(rng, params)]
            arr = numpy_helper.to_array(t)
            case = OpCase(OPS_BY_NAME["Lut"], [arr], {}, arr.dtype)
            mutate_array(rng, case, direct=False)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(case.arrays[0]), t.name))
            return [f"{node.name} param {t.name}: {case.mutations[-1]}"]
    if how == 5:
        base, _, _ = node.op_type.rpartition("_")
        node.op_type = f"{base}_{_pick(rng, ('i8', 'u8', 'i16', 'i32'))}"
        return [f"{node.name} op_type {node.op_type}"]
    if how == 6 and node.input:
        k = int(rng.integers(len(node.input)))
        node.input[k] = _pick(rng, [*(n.output[0] for n in g.node), "dangling"])
        return [f"{node.name} input {k} rewired to {node.input[k]}"]
    g.node.remove(node)
    return [f"{node.name} removed"]


def mutate_input(rng: np.random.Generator, x: np.ndarray) -> tuple[Any, str]:
    """A run-time input: right, or of the wrong dtype/rank/shape, empty, or with NaN/inf."""
    how = int(rng.integers(9))
    if how == 0:
        return x.astype(np.float64), "float64"
    if how == 1:
        return x[0], "rank 3"
    if how == 2:
        return x[:, :, :5], "wrong shape"
    if how == 3:
        return x[:0], "empty batch"
    if how in (4, 5):
        y = x.copy()
        y.reshape(-1)[rng.integers(y.size, size=3)] = _pick(rng, (np.nan, np.inf, -np.inf))
        return y, "nan/inf"
    if how == 6:
        return x * 1e30, "huge values"
    if how == 7:
        return x.tolist(), "nested list"
    return x, "valid"


# ------------------------------------------------------------------------------- targets
def mutate_toml(rng: np.random.Generator, text: str) -> tuple[str, str]:
    """Break a target file: a value, a key, a section or the syntax."""
    lines = text.splitlines()
    keyed = [k for k, line in enumerate(lines) if " = " in line]
    k = _pick(rng, keyed)
    key = lines[k].split(" = ")[0]
    how = int(rng.integers(7))
    if how == 0:
        value = _pick(rng, ("-1", "0", "1", "3", "7", "33", "65", "1e308", "-1e308", "nan", "inf",
                            "true", '"x"', "[]", '["Conv", 3]', "{}", "99999999999999999999"))
        lines[k] = f"{key} = {value}"
        return "\n".join(lines), f"{key} = {value}"
    if how == 1:
        del lines[k]
        return "\n".join(lines), f"{key} removed"
    if how == 2:
        lines.insert(k, f"{key}_typo = 1")
        return "\n".join(lines), f"unknown key {key}_typo"
    if how == 3:
        lines.insert(k, lines[k])
        return "\n".join(lines), f"{key} twice"
    if how == 4:
        cut = int(rng.integers(len(text)))
        return text[:cut], f"truncated at {cut}"
    if how == 5:
        sec = [j for j, line in enumerate(lines) if line.startswith("[")]
        j = _pick(rng, sec)
        lines[j] = _pick(rng, ("[arithmetics]", "[hardware", "[[support]]", "[arithmetic.x]"))
        return "\n".join(lines), f"section {lines[j]}"
    pos = int(rng.integers(len(text)))
    return text[:pos] + _pick(rng, ("\x00", "=", "[", '"', "\n=\n", "é")) + text[pos:], \
        f"junk at {pos}"


# ---------------------------------------------------------------------------- calibration
def calibration_data(rng: np.random.Generator) -> tuple[Any, str]:
    """Calibration data for the tiny CNN: valid, or empty, NaN/inf, constant, misnamed..."""
    how = int(rng.integers(11))
    x = images(rng, 4)
    if how == 0:
        return x[:0], "empty array"
    if how == 1:
        return [], "empty list"
    if how == 2:
        x[1, 0, 0, 0] = _pick(rng, (np.nan, np.inf, -np.inf))
        return x, "nan/inf"
    if how == 3:
        return np.zeros_like(x), "all zeros"
    if how == 4:
        return np.full_like(x, 3.0), "constant"
    if how == 5:
        return [{"image": x}], "misnamed input"
    if how == 6:
        return x[:, :, :4], "wrong shape"
    if how == 7:
        return x * 1e30, "huge"
    if how == 8:
        return [x], "list of arrays"
    if how == 9:
        return x.astype(np.int64), "int64"
    return x, "valid"


def model_bytes_mutation(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """Corrupt a serialized model: truncate, flip bytes, insert or drop a run."""
    how = int(rng.integers(4))
    pos = int(rng.integers(len(data)))
    if how == 0:
        return data[:pos], f"truncated at {pos}/{len(data)}"
    if how == 1:
        b = bytearray(data)
        for p in rng.integers(len(data), size=int(rng.integers(1, 8))):
            b[int(p)] = int(rng.integers(256))
        return bytes(b), "bytes flipped"
    if how == 2:
        return data[:pos] + rng.bytes(int(rng.integers(1, 32))) + data[pos:], f"junk at {pos}"
    return data[:pos] + data[pos + int(rng.integers(1, 64)):], f"bytes dropped at {pos}"
