"""Differential fuzzer of the compiled programs: random multi-node NPU graphs, every path.

A single op never reaches the compiled C programs (fusion needs two layers), so the op fuzzer
(:mod:`ortnpu.fuzz.worker`) says nothing about them. A chain case builds a random NPU graph of
2 to 6 ``com.ortnpu`` layers (Conv, FullyConnected, Add/Sub/Mul/Maximum/Minimum against
constants of every rank or against another activation, MatMul of two activations or against a
constant on either side, Requantize, Lut, Resize, Softmax, the pools, Concat, Transpose, Pad,
Slice, Reshape, Flatten), with fan-out (a tensor read by a later layer, by a CPU node or as
a second graph output), optional float boundaries (QuantizeLinear in, DequantizeLinear out)
and float CPU islands between layers (DequantizeLinear -> Sigmoid/Softmax/Relu/... ->
QuantizeLinear), a batch of 1, 2 or 6 declared fixed or symbolic, and runs it through:

* ``reference``: one node per layer, the numpy kernels (the definition of the results);
* ``per-node``: one node per layer, the C kernels (``fuse=False, native=False``);
* ``python``: fused subgraphs run from Python (``native=False``);
* ``default``: the default session, fused subgraphs compiled into C programs (the record
  counts them as ``compiled-program`` and their layers as ``C:<op>``);
* ``plain``: plain ``onnxruntime.InferenceSession`` with ``ortnpu.session_options()``;
* ``export``: ``ortnpu.export(model, style="integer")`` on stock onnxruntime;
* ``evaluator``: onnx's reference evaluator with the numpy kernels (chains without float
  islands: onnxruntime replaces DequantizeLinear -> op -> QuantizeLinear by its own quantized
  kernels, which the evaluator does not).

Every output must be bit-identical (dtype, shape, values) on every path. The record of a case
lists the paths that ran and the layers that ran inside compiled programs, so a run's report
proves that "0 mismatches" covers the C programs. A chain whose layers keep the samples apart by
construction (or whose batch is fixed) is **expected** to compile; when the C kernels are in use
and such a chain's program stays on the Python path, the case is ``missed`` (a failure): a run
cannot pass by silently skipping the compiled path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu.domain import OPS_BY_NAME
from ortnpu.domain.spec import DOMAIN, DOMAIN_VERSION, ONNX_OF_DTYPE, op_type_name
from ortnpu.errors import OrtNpuError
from ortnpu.fuzz.gen import (
    ACT_DTYPES,
    _clamp_attrs,
    _common,
    _pick,
    _rescale,
    _scalar_rescale,
    _zp,
    rand_array,
)
from ortnpu.fuzz.worker import MismatchError, classify

#: Batch sizes of the cases.
BATCHES = (1, 2, 6)
#: Float ops of the CPU islands (DequantizeLinear -> op -> QuantizeLinear).
ISLAND_OPS = ("Sigmoid", "Softmax", "Relu", "Tanh", "Add", "Identity")


@dataclass
class Tensor:
    """A tensor of the chain: its value for the case's batch and whether samples stay apart."""

    name: str
    value: np.ndarray
    safe: bool          # axis 0 is the batch and no layer so far mixed samples


@dataclass
class Chain:
    """A generated NPU graph, its feeds and what the generator knows about it."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    ops: list[str]
    batch: int
    symbolic: bool
    expect_native: bool
    float_island: bool
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for reports."""
        return (f"batch {self.batch}{' (symbolic)' if self.symbolic else ''}: "
                f"{' -> '.join(self.ops)}{'; ' if self.notes else ''}{'; '.join(self.notes)}")


class _Builder:
    """Appends validated layers (each run on the numpy kernels while generating)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.tensors: list[Tensor] = []
        self.ops: list[str] = []
        self.notes: list[str] = []
        self.float_island = False
        self.side_outputs: list[str] = []
        self.float_tensors: set[str] = set()
        self.fanned: set[str] = set()       # tensors already given a fan-out
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def layer(self, op: str, acts: list[Tensor], consts: list[np.ndarray],
              attrs: dict[str, Any], out_dtype: np.dtype, safe: bool,
              const_first: bool = False) -> Tensor | None:
        """Validate and run the layer on the numpy kernels; None when it refuses. The inputs
        are the activations then the constants (``const_first``: one constant, then them)."""
        from ortnpu.domain import kernels

        spec = OPS_BY_NAME[op]
        name = f"n{self.count}_{op.lower()}"
        items: list[Tensor | np.ndarray] = ([*consts[:1], *acts, *consts[1:]] if const_first
                                            else [*acts, *consts])
        arrays = [i.value if isinstance(i, Tensor) else i for i in items]
        full = spec.full_attrs({"node_name": name, **attrs})
        before = kernels.get_mode()
        kernels.set_mode("numpy")
        try:
            y = kernels.run(spec, arrays, full, np.dtype(out_dtype), f"{name}: ")
        except OrtNpuError:
            return None
        finally:
            kernels.set_mode(before)
        if y.size == 0 or y.size > 200_000:
            return None
        self.count += 1
        inputs, k = [], 0
        for i in items:
            if isinstance(i, Tensor):
                inputs.append(i.name)
            else:
                inputs.append(self.const(f"{name}_c{k}", i))
                k += 1
        n_act = len(acts) if spec.variadic else 0
        self.nodes.append(helper.make_node(op_type_name(op, np.dtype(out_dtype), n_act), inputs,
                                           [f"{name}_y"], name=name, domain=DOMAIN, **full))
        self.ops.append(f"{op}(const)" if const_first else op)
        t = Tensor(f"{name}_y", y, safe and all(a.safe for a in acts))
        self.tensors.append(t)
        return t


# ------------------------------------------------------------------------------- layers
def _out(rng: np.random.Generator) -> np.dtype:
    return _pick(rng, ACT_DTYPES)


def _conv(b: _Builder, t: Tensor) -> Tensor | None:
    rng, x = b.rng, t.value
    if x.ndim != 4:
        return None
    c = x.shape[1]
    g = int(_pick(rng, [d for d in (1, c, 2, 3) if c % d == 0]))
    depthwise = g == c and rng.random() < 0.5
    cout = g * (1 if depthwise else int(rng.integers(1, 3)))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    out = _out(rng)
    a: dict[str, Any] = {"group": g, **_common(rng), **_clamp_attrs(rng, out),
                         "x_zp": _zp(rng, x.dtype), "y_zp": _zp(rng, out)}
    for k in ("stride_h", "stride_w", "dilation_h", "dilation_w"):
        a[k] = int(_pick(rng, (1, 1, 2)))
    for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"):
        a[k] = int(_pick(rng, (0, 0, 1)))
    w = rand_array(rng, (cout, c // g, kh, kw), np.dtype(np.int8))
    bias = rng.integers(-(1 << 16), 1 << 16, cout).astype(np.int64)
    m, s = _rescale(rng, a["rounding"], cout if rng.random() < 0.7 else 1)
    return b.layer("Conv", [t], [w, bias, m, s], a, out, True)


def _fc(b: _Builder, t: Tensor) -> Tensor | None:
    rng, x = b.rng, t.value
    k, n = x.shape[-1], int(rng.integers(1, 12))
    out = _out(rng)
    a = {**_common(rng), **_clamp_attrs(rng, out), "x_zp": _zp(rng, x.dtype),
         "y_zp": _zp(rng, out)}
    w = rand_array(rng, (n, k), np.dtype(np.int8))
    bias = rng.integers(-(1 << 16), 1 << 16, n).astype(np.int64)
    m, s = _rescale(rng, a["rounding"], n if rng.random() < 0.7 else 1)
    return b.layer("FullyConnected", [t], [w, bias, m, s], a, out, x.ndim >= 2)


def _operand_shape(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A constant's shape that broadcasts with ``shape``: any rank up to two above it."""
    # mostly ranks up to the activation's; one case in six above it (the batch axis moves)
    hi = len(shape) + (3 if rng.random() < 0.17 else 1)
    rank = int(rng.integers(0, hi))
    tail = [1 if rng.random() < 0.5 else d for d in shape[len(shape) - min(rank, len(shape)):]]
    lead = [1 if rng.random() < 0.6 else int(rng.integers(2, 4))
            for _ in range(max(0, rank - len(shape)))]
    return (*lead, *tail)


def _binary(op: str) -> Callable[[_Builder, Tensor], Tensor | None]:
    def build(b: _Builder, t: Tensor) -> Tensor | None:
        rng, x = b.rng, t.value
        out = _out(rng)
        rule = _pick(rng, ("tflite_double", "tflite_single", "half_up", "tflite_int64"))
        other = [u for u in b.tensors[:-1] if _broadcasts(u.value.shape, x.shape)]
        const_first = False
        if other and rng.random() < 0.4:   # another activation (residual, fan-out)
            u = _pick(rng, other)
            acts, consts = ([t, u] if rng.random() < 0.5 else [u, t]), []
            safe = u.value.ndim == x.ndim
        elif rng.random() < 0.1:           # the tensor with itself
            acts, consts, safe = [t, t], [], True
        else:                              # a constant of any broadcastable rank, either side
            shape = _operand_shape(rng, x.shape)
            acts, consts = [t], [rand_array(rng, shape, _pick(rng, ACT_DTYPES))]
            safe = len(shape) < x.ndim or (len(shape) == x.ndim and shape[0] == 1)
            const_first = rng.random() < 0.3
        first, second = ((consts[0], t.value) if const_first else
                         (acts[0].value, (acts[1].value if len(acts) > 1 else consts[0])))
        a: dict[str, Any] = {"rounding": rule, **_clamp_attrs(rng, out), "y_zp": _zp(rng, out),
                             "a_zp": _zp(rng, first.dtype), "b_zp": _zp(rng, second.dtype)}
        if op in ("Add", "Sub"):
            a.update(left_shift=int(rng.integers(0, 21)), **_scalar_rescale(rng, rule, "a_"),
                     **_scalar_rescale(rng, rule, "b_"), **_scalar_rescale(rng, rule, "y_"))
        else:
            a.update(**_scalar_rescale(rng, rule, ""))
        return b.layer(op, acts, consts, a, out, safe, const_first)

    return build


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _requantize(b: _Builder, t: Tensor) -> Tensor | None:
    rng, x = b.rng, t.value
    out = _out(rng)
    axis = int(rng.integers(-x.ndim, x.ndim))
    rule = _pick(rng, ("tflite_double", "tflite_single", "half_up", "tflite_int64"))
    per_channel = rng.random() < 0.5
    m, s = _rescale(rng, rule, x.shape[axis] if per_channel else 1)
    a = {"rounding": rule, **_clamp_attrs(rng, out), "x_zp": _zp(rng, x.dtype),
         "y_zp": _zp(rng, out), "axis": axis}
    return b.layer("Requantize", [t], [m, s], a, out, not (per_channel and axis % x.ndim == 0))


def _lut(b: _Builder, t: Tensor) -> Tensor | None:
    out = _out(b.rng)
    table = rand_array(b.rng, (1 << (8 * t.value.dtype.itemsize),), out)
    return b.layer("Lut", [t], [table], {}, out, True)


def _pool(op: str) -> Callable[[_Builder, Tensor], Tensor | None]:
    def build(b: _Builder, t: Tensor) -> Tensor | None:
        rng, x = b.rng, t.value
        if x.ndim != 4:
            return None
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        a: dict[str, Any] = {"kernel_h": kh, "kernel_w": kw, **_clamp_attrs(rng, x.dtype),
                             "stride_h": int(_pick(rng, (1, 2))),
                             "stride_w": int(_pick(rng, (1, 2))),
                             "pad_top": int(rng.integers(0, kh)),
                             "pad_left": int(rng.integers(0, kw))}
        a["pad_bottom"], a["pad_right"] = a["pad_top"], a["pad_left"]
        return b.layer(op, [t], [], a, x.dtype, True)

    return build


def _gap(b: _Builder, t: Tensor) -> Tensor | None:
    if t.value.ndim != 4:
        return None
    return b.layer("GlobalAveragePool", [t], [], _clamp_attrs(b.rng, t.value.dtype),
                   t.value.dtype, True)


def _concat(b: _Builder, t: Tensor) -> Tensor | None:
    rng, x = b.rng, t.value
    axis = int(rng.integers(-x.ndim, x.ndim))
    if axis % x.ndim == 0 and x.ndim > 1 and rng.random() < 0.8:
        axis = int(rng.integers(1, x.ndim))   # the batch axis only now and then
    ax = axis % x.ndim
    same = [u for u in b.tensors if u.value.dtype == x.dtype and u.value.ndim == x.ndim and
            all(p == q for k, (p, q) in enumerate(zip(u.value.shape, x.shape, strict=True))
                if k != ax)]
    acts = [t] + [_pick(rng, same) for _ in range(int(rng.integers(1, 3)))]
    rng.shuffle(acts)
    return b.layer("Concat", acts, [], {"axis": axis}, x.dtype, ax != 0)


def _transpose(b: _Builder, t: Tensor) -> Tensor | None:
    x = t.value
    perm = b.rng.permutation(x.ndim)
    if b.rng.random() < 0.85:   # mostly keep the batch axis in front
        rest = [int(p) for p in perm if p != 0]
        perm = np.array([0, *rest])
    return b.layer("Transpose", [t], [perm.astype(np.int64)], {}, x.dtype, int(perm[0]) == 0)


def _pad(b: _Builder, t: Tensor) -> Tensor | None:
    x = t.value
    pads = b.rng.integers(0, 3, 2 * x.ndim).astype(np.int64)
    if b.rng.random() < 0.85:
        pads[0] = pads[x.ndim] = 0
    safe = pads[0] == 0 and pads[x.ndim] == 0
    return b.layer("Pad", [t], [pads], {"value": _zp(b.rng, x.dtype)}, x.dtype, bool(safe))


def _reshape(b: _Builder, t: Tensor) -> Tensor | None:
    rng, x = b.rng, t.value
    rest = [int(d) for d in x.shape[1:]]
    size = int(np.prod(rest)) if rest else 1
    how = int(_pick(rng, (0, 0, 1, 1, 2, 2, 2, 3, 4)))
    if how == 0:
        shape, safe = [0, -1], True                            # flatten each sample
    elif how == 1:
        shape, safe = [-1, *(int(d) for d in rng.permutation(rest))], True
    elif how == 2:                                             # split each sample in two axes
        k = int(_pick(rng, [d for d in range(1, size + 1) if size % d == 0]))
        shape, safe = [-1, k, size // k], True
    elif how == 3:
        shape, safe = [1, -1], False                           # merges the samples
    else:
        shape, safe = [-1], False                              # everything in one axis
    return b.layer("Reshape", [t], [np.array(shape, np.int64)], {}, x.dtype, safe)


def _flatten(b: _Builder, t: Tensor) -> Tensor | None:
    x = t.value
    axis = 1 if b.rng.random() < 0.75 else int(b.rng.integers(0, x.ndim + 1))
    return b.layer("Flatten", [t], [], {"axis": axis}, x.dtype, axis == 1)


LAYERS: dict[str, Callable[[_Builder, Tensor], Tensor | None]] = {
    "Conv": _conv, "FullyConnected": _fc, "Add": _binary("Add"), "Mul": _binary("Mul"),
    "Requantize": _requantize, "Lut": _lut, "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AveragePool"), "GlobalAveragePool": _gap, "Concat": _concat,
    "Transpose": _transpose, "Pad": _pad, "Reshape": _reshape, "Flatten": _flatten,
}


def _min_max(op: str) -> Callable[[_Builder, Tensor], Tensor | None]:
    """Maximum/Minimum: operands and output of one type, against an activation or a constant."""
    def build(b: _Builder, t: Tensor) -> Tensor | None:
        rng, x = b.rng, t.value
        other = [u for u in b.tensors[:-1] if u.value.dtype == x.dtype and
                 _broadcasts(u.value.shape, x.shape)]
        if other and rng.random() < 0.4:
            u = _pick(rng, other)
            acts, consts = ([t, u] if rng.random() < 0.5 else [u, t]), []
            return b.layer(op, acts, consts, {}, x.dtype, u.value.ndim == x.ndim)
        shape = _operand_shape(rng, x.shape)
        safe = len(shape) < x.ndim or (len(shape) == x.ndim and shape[0] == 1)
        return b.layer(op, [t], [rand_array(rng, shape, x.dtype)], {}, x.dtype, safe,
                       const_first=rng.random() < 0.3)

    return build


def _slice(b: _Builder, t: Tensor) -> Tensor | None:
    """Slice of a few axes (the batch axis now and then): steps of either sign, starts and ends
    out of range and counted from the end."""
    rng, x = b.rng, t.value
    n = int(rng.integers(1, x.ndim + 1))
    axes = rng.permutation(x.ndim)[:n]
    if 0 in axes and rng.random() < 0.8 and x.ndim > 1:
        axes = np.array([a for a in axes if a != 0] or [x.ndim - 1])
    n = len(axes)
    steps = rng.choice([1, 1, 1, 2, 3, -1, -2], n)
    big = 1 << 62   # "to the end" as exporters write it, clamped like any other value
    starts = np.where(steps > 0, rng.choice([0, 0, 1, 2, -3, -9], n),
                      rng.choice([-1, -1, big, 3, -2], n))
    ends = np.where(steps > 0, rng.choice([big, big, -1, 3, 5, 9], n),
                    rng.choice([-big, -big, 0, 1, -9], n))
    signed = axes - (x.ndim if rng.random() < 0.3 else 0)
    return b.layer("Slice", [t], [starts.astype(np.int64), ends.astype(np.int64),
                                  signed.astype(np.int64), steps.astype(np.int64)], {},
                   x.dtype, 0 not in axes)


def _matmul(b: _Builder, t: Tensor) -> Tensor | None:
    """MatMul of two activations (attention's Q·Kᵀ, attn·V) or against a constant of any
    batch rank, either side."""
    rng, x = b.rng, t.value
    if x.ndim < 2:
        return None
    k = x.shape[-1]
    out = _out(rng)
    acts: list[Tensor]
    consts: list[np.ndarray] = []
    const_first = False
    mates = [u for u in b.tensors if u.value.ndim == x.ndim and u.value.shape[-2] == k and
             _broadcasts(u.value.shape[:-2], x.shape[:-2])]
    if mates and rng.random() < 0.5:   # two activations, batch axes aligned
        acts, safe = [t, _pick(rng, mates)], x.ndim >= 3
        first, second = x, acts[1].value
    elif rng.random() < 0.25 and x.ndim >= 3:   # a constant on the left: c @ t
        lead = _operand_shape(rng, x.shape[:-2])
        c = rand_array(rng, (*lead, int(rng.integers(1, 6)), x.shape[-2]), _pick(rng, ACT_DTYPES))
        acts, consts, const_first = [t], [c], True
        safe = len(lead) < x.ndim - 2 or (len(lead) == x.ndim - 2 and lead[0] == 1)
        first, second = c, x
    else:
        lead = _operand_shape(rng, x.shape[:-2]) if x.ndim >= 3 else ()
        c = rand_array(rng, (*lead, k, int(rng.integers(1, 8))), _pick(rng, ACT_DTYPES))
        acts, consts = [t], [c]
        safe = len(lead) < x.ndim - 2 or (len(lead) == x.ndim - 2 and lead[0] == 1) \
            if x.ndim >= 3 else True
        first, second = x, c
    rule = _pick(rng, ("tflite_double", "tflite_single", "half_up", "tflite_int64"))
    m, s = _rescale(rng, rule, 1)
    a = {"rounding": rule, "acc_bits": int(_pick(rng, (32, 64))), **_clamp_attrs(rng, out),
         "a_zp": _zp(rng, first.dtype), "b_zp": _zp(rng, second.dtype), "y_zp": _zp(rng, out)}
    if const_first:
        return b.layer("MatMul", acts, [*consts, m, s], a, out, safe, const_first=True)
    return b.layer("MatMul", acts, [*consts, m, s], a, out, safe)


# the ops issue 14 moved to the NPU (C program steps since they landed)
LAYERS.update({"Sub": _binary("Sub"), "Maximum": _min_max("Maximum"),
               "Minimum": _min_max("Minimum"), "Slice": _slice, "MatMul": _matmul})


def _resize(b: _Builder, t: Tensor) -> Tensor | None:
    """Resize of an NCHW tensor: nearest or bilinear, every align_corners/half_pixel_centers
    combination, output sizes from 1 to three times the input (down- and up-sampling)."""
    rng, x = b.rng, t.value
    if x.ndim != 4:
        return None
    h, w = x.shape[2], x.shape[3]
    a = {"mode": _pick(rng, ("nearest", "bilinear")),
         "align_corners": int(rng.integers(0, 2)), "half_pixel_centers": int(rng.integers(0, 2)),
         "out_h": int(_pick(rng, (1, 2 * h, h, h + 1, max(1, h // 2), 3 * h))),
         "out_w": int(_pick(rng, (1, 2 * w, w, w + 1, max(1, w // 2), 3 * w)))}
    return b.layer("Resize", [t], [], a, x.dtype, True)


def _softmax(b: _Builder, t: Tensor) -> Tensor | None:
    """Softmax over the last axis with the parameters TFLite derives from an input scale
    (now and then random valid ones); the batch axis is not the row unless the tensor is 1-D."""
    from ortnpu.domain.ops_softmax import softmax_params

    rng, x = b.rng, t.value
    params = softmax_params(float(rng.uniform(0.002, 0.3)), x.dtype,
                            float(_pick(rng, (1.0, 1.0, 0.5, 2.0))))
    if isinstance(params, str) or rng.random() < 0.15:
        shift = int(rng.integers(0, 8)) if x.dtype.itemsize == 1 else int(rng.integers(-8, 8))
        params = {"multiplier": int(rng.integers(1 << 30, 1 << 31)), "shift": shift,
                  "diff_min": -int(rng.integers(0, 1 << 10)) if x.dtype.itemsize == 1 else 0}
    return b.layer("Softmax", [t], [], params, x.dtype, x.ndim >= 2)


# the NPU Resize and Softmax (C program steps since they landed)
LAYERS.update({"Resize": _resize, "Softmax": _softmax})


# --------------------------------------------------------------------------------- chains
def _island(b: _Builder, t: Tensor) -> Tensor | None:
    """DequantizeLinear -> a float op -> QuantizeLinear back to the tensor's type."""
    rng, x = b.rng, t.value
    if x.dtype == np.int16 and rng.random() < 0.5:
        return None
    op = _pick(rng, ISLAND_OPS)
    k = b.count
    b.count += 1
    dt = x.dtype
    s_in, zp_in = np.float32(rng.uniform(0.005, 0.1)), np.array(_zp(rng, dt), dt)
    s_out, zp_out = np.float32(rng.uniform(0.002, 0.05)), np.array(_zp(rng, dt), dt)
    f, g = f"i{k}_f", f"i{k}_g"
    b.nodes.append(helper.make_node("DequantizeLinear", [t.name, b.const(f"i{k}_s", s_in),
                                                        b.const(f"i{k}_z", zp_in)], [f],
                                    name=f"i{k}_dq"))
    ins = [f]
    kw: dict[str, Any] = {}
    if op == "Add":
        ins.append(b.const(f"i{k}_a", rng.standard_normal(x.shape[-1:]).astype(np.float32)))
    if op == "Softmax":
        kw["axis"] = -1
    b.nodes.append(helper.make_node(op, ins, [g], name=f"i{k}_{op.lower()}", **kw))
    y = f"i{k}_q"
    b.nodes.append(helper.make_node("QuantizeLinear", [g, b.const(f"i{k}_so", s_out),
                                                       b.const(f"i{k}_zo", zp_out)], [y],
                                    name=f"i{k}_quantize"))
    b.float_tensors.update({f, g})
    b.ops.append(f"[{op}]")
    b.float_island = True
    # its values are onnxruntime's; later layers are generated from the shape and type only
    u = Tensor(y, rand_array(rng, x.shape, dt), t.safe)
    b.tensors.append(u)
    return u


def build_chain(rng: np.random.Generator) -> Chain:
    """A random chain; deterministic in ``rng``."""
    batch = int(_pick(rng, BATCHES))
    symbolic = bool(rng.random() < 0.5)
    rank = int(_pick(rng, (4, 4, 4, 3, 2)))
    dims = [batch] + [int(d) for d in rng.integers(1, 7, rank - 1)]
    if rank == 4:
        dims[2], dims[3] = (int(d) for d in rng.integers(3, 10, 2))
    dt = _pick(rng, ACT_DTYPES)
    b = _Builder(rng)
    x = Tensor("x", rand_array(rng, tuple(dims), dt), True)
    b.tensors.append(x)
    float_in = rng.random() < 0.4
    feeds: dict[str, np.ndarray] = {}
    inputs = []
    if float_in:
        scale = np.float32(rng.uniform(0.01, 0.1))
        zp = np.array(_zp(rng, dt), dt)
        b.nodes.append(helper.make_node("QuantizeLinear", ["xf", b.const("xf_s", scale),
                                                           b.const("xf_z", zp)], ["x"],
                                        name="x_quantize"))
        xf = (rng.standard_normal(dims) * 40 * scale).astype(np.float32)
        feeds["xf"] = xf
        inputs.append(("xf", TensorProto.FLOAT))
        b.float_tensors.add("xf")
        b.notes.append("float input")
    else:
        feeds["x"] = x.value
        inputs.append(("x", ONNX_OF_DTYPE[dt]))
    target = int(rng.integers(2, 7))
    cur = x
    tries = 0
    while len([o for o in b.ops if not o.startswith("[")]) < target and tries < 60:
        tries += 1
        if b.ops and rng.random() < 0.2 and not b.float_island:
            nxt = _island(b, cur)
        else:
            nxt = LAYERS[_pick(rng, sorted(LAYERS))](b, cur)
        if nxt is None:
            continue
        cur = nxt
        if rng.random() < 0.08 and len(b.tensors) > 2:   # fan-out to the CPU / graph output
            side = b.tensors[int(rng.integers(1, len(b.tensors) - 1))]
            if side.name not in b.float_tensors and side.name not in b.fanned:
                if rng.random() < 0.5:
                    b.nodes.append(helper.make_node("Cast", [side.name], [f"{side.name}_cpu"],
                                                    name=f"{side.name}_cast",
                                                    to=TensorProto.FLOAT))
                    b.side_outputs.append(f"{side.name}_cpu")
                else:
                    b.side_outputs.append(side.name)
                b.fanned.add(side.name)
                b.notes.append(f"fan-out of {side.name}")
    outputs = [cur.name]
    if rng.random() < 0.4 and cur.name != "x":
        scale = np.float32(rng.uniform(0.01, 0.1))
        zp = np.array(_zp(rng, cur.value.dtype), cur.value.dtype)
        b.nodes.append(helper.make_node("DequantizeLinear", [cur.name, b.const("y_s", scale),
                                                             b.const("y_z", zp)], ["yf"],
                                        name="y_dequantize"))
        outputs = ["yf"]
        b.notes.append("float output")
    outputs += [o for o in dict.fromkeys(b.side_outputs) if o not in outputs]
    model = _model(b, inputs, outputs, dims, symbolic)
    layers_safe = all(t.safe for t in b.tensors)
    if symbolic:
        expect = layers_safe
    else:
        expect = all(t.value.ndim >= 1 and t.value.shape[0] == batch for t in b.tensors)
    return Chain(model, feeds, b.ops, batch, symbolic, expect, b.float_island, b.notes)


def _model(b: _Builder, inputs: list[tuple[str, int]], outputs: list[str], dims: list[int],
           symbolic: bool) -> onnx.ModelProto:
    """The graph with every tensor's type (and shape where the generator knows it)."""
    def shape_of(t: Tensor) -> list[Any] | None:
        if not symbolic:
            return list(t.value.shape)
        # a rank with unknown dimensions where the batch axis is not known to be axis 0
        return ["N", *t.value.shape[1:]] if t.safe else [None] * t.value.ndim

    by_name = {t.name: t for t in b.tensors}
    types: dict[str, tuple[int, list[Any] | None]] = {}
    for t in b.tensors:
        types[t.name] = (ONNX_OF_DTYPE[t.value.dtype], shape_of(t))
    first = by_name["x"]
    if "xf" in b.float_tensors:
        types["xf"] = (TensorProto.FLOAT, shape_of(first))
    for o in outputs:
        if o not in types:
            base = by_name.get(o.removesuffix("_cpu")) or by_name[
                next(n.input[0] for n in b.nodes if o in n.output)]
            types[o] = (TensorProto.FLOAT, shape_of(base))
    graph_inputs = [helper.make_tensor_value_info(n, types[n][0], types[n][1])
                    for n, _ in inputs]
    graph_outputs = [helper.make_tensor_value_info(o, *types[o]) for o in outputs]
    value_info = [helper.make_tensor_value_info(n, ty, shape) for n, (ty, shape) in types.items()
                  if n not in outputs and n not in {i for i, _ in inputs}]
    graph = helper.make_graph(b.nodes, "chain", graph_inputs, graph_outputs,
                              initializer=b.inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 10
    return model


# ---------------------------------------------------------------------------------- running
def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        raise MismatchError(f"{what}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
    if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
        bad = int(np.sum(a != b))
        raise MismatchError(f"{what}: {bad} of {a.size} values differ")


def _expects_c() -> bool:
    """The compiled path is expected unless the numpy kernels were chosen on purpose."""
    return os.environ.get("ORTNPU_KERNELS", "auto").lower() != "numpy"


def run_chain(chain: Chain) -> tuple[str, str, list[str]]:
    """Run every path; return ``(class, detail, paths that ran)``."""
    import onnxruntime as ort

    import ortnpu
    from ortnpu.domain import kernels
    from ortnpu.runtime.reference import run_reference

    paths: list[str] = []
    feeds = chain.feeds
    before = kernels.get_mode()
    kernels.set_mode("numpy")
    try:
        ref = ortnpu.InferenceSession(chain.model, fuse=False, native=False).run(None, feeds)
    except OrtNpuError as exc:
        return "ortnpu", f"reference refused: {exc} [{chain.describe()}]", paths
    finally:
        kernels.set_mode(before)
    paths.append("reference")

    def compare(name: str, run: Callable[[], list[np.ndarray]]) -> None:
        """Run one path; it must give the reference's outputs (a refusal is a mismatch too:
        the reference ran the chain)."""
        try:
            got = run()
        except OrtNpuError as exc:
            raise MismatchError(f"{name} refused what the reference ran: "
                                f"{type(exc).__name__}: {exc}") from None
        if len(got) != len(ref):
            raise MismatchError(f"{name}: {len(got)} outputs, reference {len(ref)}")
        for k, (g, r) in enumerate(zip(got, ref, strict=True)):
            _same(g, r, f"{name} vs reference, output {k}")
        paths.append(name)

    sessions: dict[str, Any] = {}

    def session(key: str, **kw: Any) -> Callable[[], list[np.ndarray]]:
        def run() -> list[np.ndarray]:
            sessions[key] = ortnpu.InferenceSession(chain.model, **kw)
            return sessions[key].run(None, feeds)
        return run

    compare("default", session("default"))   # compiled programs where possible
    compare("per-node", session("per-node", fuse=False, native=False))
    compare("python", session("python", native=False))
    compare("plain", lambda: ort.InferenceSession(chain.model.SerializeToString(),
                                                  ortnpu.session_options()).run(None, feeds))
    try:
        exported = ortnpu.export(chain.model, style="integer")
    except OrtNpuError:   # a clear refusal (e.g. a symbolic shape the lowering needs)
        paths.append("export-refused")
    else:
        compare("export", lambda: ort.InferenceSession(
            exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds))
    if not chain.float_island:
        before = kernels.get_mode()
        kernels.set_mode("numpy")
        try:
            compare("evaluator", lambda: run_reference(chain.model, feeds))
        finally:
            kernels.set_mode(before)
    compiled, python = sessions["default"], sessions["python"]
    # what ran where: the compiled programs and their layers, the Python programs
    natives = compiled.native_programs
    reports = compiled.compile_reports
    for prog in natives:
        paths.append("compiled-program")
        paths += [f"C:{name.split('_', 1)[-1]}" for name in _layer_ops(prog)]
    paths += ["python-program"] * sum(not r.native for r in reports)
    paths += ["fused-program"] * len(python._programs)
    if chain.expect_native and _expects_c():
        refused = [r for r in reports if not r.native]
        if refused:
            return ("missed", f"compiled path expected, {refused[0].subgraph}: "
                    f"{refused[0].reason} [{chain.describe()}]", paths)
        if not kernels._native():
            return "missed", f"C kernels not built [{chain.describe()}]", paths
    return "ok", "", paths


def _layer_ops(prog: Any) -> list[str]:
    """Names of the layers of a compiled program (the generator names them n<k>_<op>)."""
    from ortnpu.domain import native

    lib, ffi = native._native.lib, native._native.ffi
    names = []
    for k in range(lib.ortnpu_program_layers(prog.ptr, -1, ffi.NULL, 0)):
        buf = ffi.new("char[]", 128)
        lib.ortnpu_program_layers(prog.ptr, k, buf, 128)
        names.append(ffi.string(buf).decode(errors="replace"))
    return names


def run_case(seed: int, index: int) -> dict[str, Any]:
    """Build and run chain case ``index`` of ``seed``; the worker's record."""
    rng = np.random.default_rng([seed, index, 7])
    chain: Chain | None = None

    def go() -> tuple[str, str, list[str]]:
        nonlocal chain
        chain = build_chain(rng)
        return run_chain(chain)

    cls, detail, result = classify(go)
    if cls == "ok":
        cls, detail, paths = result
    else:
        paths = []
        if chain is not None and chain.describe() not in detail:
            detail = f"{detail} [{chain.describe()}]"
    return {"i": index, "kind": "chain", "class": cls, "detail": detail[:800], "paths": paths}


__all__ = ["Chain", "build_chain", "run_case", "run_chain"]
