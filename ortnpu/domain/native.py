"""The C kernels of ``ops/`` (module ``ortnpu.domain._native``), wrapped for :mod:`kernels`.

Each wrapper takes the op's validated ``(arrays, attrs, out_dtype)``, makes the inputs
contiguous, resolves broadcasting and per-channel parameters on the Python side, allocates the
output and passes buffer pointers to one C call (cffi releases the GIL during the call). The
results equal the numpy references bit for bit; ``tests/test_native_kernels.py`` checks that.

Run-time choices:

* SIMD path: the widest the CPU has: AVX-512 VNNI for the GEMM tile (with AVX2 around it),
  AVX2, or portable C. ``ORTNPU_SIMD=avx2|scalar`` or :func:`set_simd` narrows it (the results
  are identical by construction; the tests run every path the CPU has).
* Threads: :func:`set_threads`; by default ``os.cpu_count()``, capped by the environment variable
  ``ORTNPU_NUM_THREADS``.

These per-op wrappers pack a convolution's weights (and an Add's tables) inside each call. The
compiled programs of ``ortnpu.runtime.native_program`` pack them once, when the program is
built, and run without Python (see docs/kernels.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.errors import KernelError

# Idle OpenMP workers spin for a bounded time, then sleep. A compiled program runs its layers
# back to back, so a spinning worker is there for the next layer at once (waking a sleeping one
# costs tens of microseconds per layer on a VM: MobileNetV2 at 2 threads 10.8 ms passive, 8.8
# ms with this spin); the bound (about a millisecond) lets it sleep soon after a run, and
# libgomp cuts spinning to 1000 iterations when there are more threads than CPUs.
# onnxruntime's own pool does not spin in ortnpu sessions (see runtime/session.py). Set before
# libgomp loads; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "200000")

try:
    from ortnpu.domain import _native  # type: ignore[attr-defined]
    IMPORT_ERROR = ""
except ImportError as _exc:  # not built: no C compiler at install time
    _native = None
    IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}"

AVAILABLE: bool = _native is not None

#: Name of the record setup.py writes next to the module when it builds (or fails to build) it.
BUILD_RECORD = "_native_build.json"


def build_record() -> dict[str, Any]:
    """What setup.py saw when it built this package (``compiler``, ``built``, ``error``); {} if
    it left no record (a source tree, or an install by another tool)."""
    import json
    from pathlib import Path

    try:
        record = json.loads(Path(__file__).with_name(BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def expected() -> str | None:
    """Why the C kernels should be importable here, or None when nothing says so.

    They are expected when ``ORTNPU_REQUIRE_C`` is set (CI, the sanitizer script) or when a C
    compiler was found at build time. Tests of the C paths fail instead of skipping then, so a
    run that silently exercised only the numpy kernels cannot pass for a C run.
    """
    if os.environ.get("ORTNPU_REQUIRE_C", "").strip() not in ("", "0"):
        return "ORTNPU_REQUIRE_C is set"
    compiler = build_record().get("compiler")
    if compiler:
        return f"a C compiler ({compiler}) was found when this ortnpu was built"
    return None

TYPE_CODE = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.int16): 2}
_RULE_CODE = {"tflite_double": 0, "tflite_single": 1, "tflite_int64": 2, "half_up": 3,
              "tosa_double": 4}
_SIMD_MODES = ("auto", "avx512", "avx2", "scalar")
_ISA_CODE = {"scalar": 0, "avx2": 1, "avx512": 2}


def _default_threads() -> int:
    """``os.cpu_count()``, capped by ``ORTNPU_NUM_THREADS`` when that is a positive integer."""
    n = os.cpu_count() or 1
    env = os.environ.get("ORTNPU_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, n)


_threads = _default_threads()
_simd = os.environ.get("ORTNPU_SIMD", "auto").strip().lower() or "auto"
if _simd not in _SIMD_MODES:
    _simd = "auto"


def set_threads(n: int | None) -> None:
    """Threads of the C kernels; ``None`` restores the default."""
    global _threads
    if n is None:
        _threads = _default_threads()
        return
    if int(n) < 1:
        raise KernelError(f"thread count must be at least 1, got {n}")
    _threads = int(n)


#: Work (multiply-adds or elements) below which a kernel runs on one thread: a parallel region
#: costs more than it saves on small layers. Measured at 2 threads with spinning workers
#: (MobileNetV2: 8.6 ms at 2M, 7.5 ms at 512k, 7.4 ms at 128k; smaller models unchanged).
PARALLEL_MIN_WORK = 1 << 18


def threads_for(work: int) -> int:
    """Threads for a call doing ``work`` units: one for small work, more as work grows."""
    if _threads <= 1 or work < PARALLEL_MIN_WORK:
        return 1
    return int(min(_threads, max(1, work // max(PARALLEL_MIN_WORK // 2, 1))))


def get_threads() -> int:
    """Threads the C kernels use."""
    return _threads


def set_simd(mode: str) -> None:
    """``"auto"`` (the widest path the CPU has), or at most ``"avx512"`` (AVX-512 VNNI GEMM
    tile, AVX2 elsewhere), ``"avx2"`` or ``"scalar"`` (portable C)."""
    global _simd
    if mode not in _SIMD_MODES:
        raise KernelError(f"SIMD mode must be one of {', '.join(_SIMD_MODES)}, got {mode!r}")
    _simd = mode


def has_avx2() -> bool:
    """True when the CPU (and the build) can run the AVX2 loops."""
    return bool(AVAILABLE and _native.lib.ortnpu_cpu_has_avx2())


def has_avx512_vnni() -> bool:
    """True when the CPU (and the build) can run the AVX-512 VNNI GEMM tile."""
    return bool(AVAILABLE and _native.lib.ortnpu_cpu_has_vnni())


def simd() -> str:
    """The SIMD path the next call takes: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    if _simd in ("auto", "avx512") and has_avx512_vnni():
        return "avx512"
    if _simd != "scalar" and has_avx2():
        return "avx2"
    return "scalar"


def isa_code() -> int:
    return _ISA_CODE[simd()]


def describe() -> str:
    """Which SIMD path and how many threads, e.g. ``AVX2, 2 threads (OpenMP)``."""
    if not AVAILABLE:
        return "not built"
    path = {"avx512": "AVX-512 VNNI + AVX2", "avx2": "AVX2",
            "scalar": "portable C"}[simd()]
    if _simd != "auto" and simd() != "avx512" and has_avx2():
        path += " (narrowed by ORTNPU_SIMD/set_simd)"
    if _native.lib.ortnpu_has_openmp():
        return f"{path}, {_threads} thread{'s' if _threads != 1 else ''} (OpenMP)"
    return f"{path}, 1 thread (built without OpenMP)"


# ------------------------------------------------------------------------------- helpers
def _buf(arr: np.ndarray, ctype: str = "char[]") -> Any:
    return _native.ffi.from_buffer(ctype, arr)


def out_params(a: Mapping[str, Any], out_dtype: np.dtype) -> Any:
    return _native.ffi.new("ortnpu_out_t *", {
        "rule": _RULE_CODE[a.get("rounding", "tflite_double")],
        "acc_bits": int(a.get("acc_bits", 32)),
        "y_zp": int(a.get("y_zp", 0)),
        # ops without a clamp (Maximum, Minimum) get the output type's range
        "act_min": int(a.get("act_min", np.iinfo(out_dtype).min)),
        "act_max": int(a.get("act_max", np.iinfo(out_dtype).max)),
        "otype": TYPE_CODE[np.dtype(out_dtype)],
    })


def _check(rc: int, op: str) -> None:
    if rc == -2:
        raise MemoryError(f"{op}: the C kernel could not allocate its scratch memory")
    if rc != 0:
        raise KernelError(f"{op}: the C kernel refused its arguments (code {rc}); this is a bug "
                          "in ortnpu's validation, please report it")


def channel_params(mult: np.ndarray, shift: np.ndarray,
                   channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiplier and shift as int32 arrays of one common length (1 or ``channels``)."""
    m = np.ascontiguousarray(mult, dtype=np.int32).reshape(-1)
    s = np.ascontiguousarray(shift, dtype=np.int32).reshape(-1)
    if m.size != s.size:
        m = np.ascontiguousarray(np.broadcast_to(m, (channels,)))
        s = np.ascontiguousarray(np.broadcast_to(s, (channels,)))
    return m, s


# --------------------------------------------------------------------------------- kernels
def _conv(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
    from ortnpu.domain.ops_linear import Conv

    x, w, bias, mult, shift = arrays
    oh, ow = Conv.geometry(x.shape, w.shape, a)
    cout = w.shape[0]
    if x.size == 0 or w.size == 0:
        return Conv.reference(arrays, a, out_dtype)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    bias = np.ascontiguousarray(bias, dtype=np.int64)
    m, s = channel_params(mult, shift, cout)
    y = np.empty((x.shape[0], cout, oh, ow), dtype=out_dtype)
    rc = _native.lib.ortnpu_conv2d(
        conv_struct(x, w, a, m.size), out_params(a, out_dtype), _buf(x), _buf(w, "int8_t[]"),
        _buf(bias, "int64_t[]"), _buf(m, "int32_t[]"), _buf(s, "int32_t[]"), _buf(y),
        threads_for(y.size * w.shape[1] * w.shape[2] * w.shape[3]), isa_code())
    _check(rc, "Conv")
    return y


def conv_struct(x: np.ndarray, w: np.ndarray, a: Mapping[str, Any], n_params: int) -> Any:
    """The ``ortnpu_conv_t`` of a convolution of ``x`` by ``w``."""
    from ortnpu.domain.ops_linear import Conv

    oh, ow = Conv.geometry(x.shape, w.shape, a)
    return _native.ffi.new("ortnpu_conv_t *", {
        "n": x.shape[0], "c": x.shape[1], "h": x.shape[2], "w": x.shape[3],
        "cout": w.shape[0], "cg": w.shape[1], "kh": w.shape[2], "kw": w.shape[3],
        "group": a["group"], "sh": a["stride_h"], "sw": a["stride_w"],
        "dh": a["dilation_h"], "dw": a["dilation_w"], "pt": a["pad_top"],
        "pl": a["pad_left"], "pb": a["pad_bottom"], "pr": a["pad_right"], "oh": oh, "ow": ow,
        "x_zp": a["x_zp"], "xtype": TYPE_CODE[x.dtype], "n_params": n_params,
    })


def _fully_connected(arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                     out_dtype: np.dtype) -> np.ndarray:
    from ortnpu.domain.ops_linear import FullyConnected

    x, w, bias, mult, shift = arrays
    n, k = w.shape
    rows = math.prod(x.shape[:-1])
    if rows == 0 or n == 0 or k == 0:
        return FullyConnected.reference(arrays, a, out_dtype)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    bias = np.ascontiguousarray(bias, dtype=np.int64)
    m, s = channel_params(mult, shift, n)
    y = np.empty((*x.shape[:-1], n), dtype=out_dtype)
    rc = _native.lib.ortnpu_fully_connected(
        rows, k, n, _buf(x), TYPE_CODE[x.dtype], a["x_zp"], _buf(w, "int8_t[]"),
        _buf(bias, "int64_t[]"), _buf(m, "int32_t[]"), _buf(s, "int32_t[]"), m.size,
        out_params(a, out_dtype), _buf(y), threads_for(y.size * k), isa_code())
    _check(rc, "FullyConnected")
    return y


def batch_offsets(shape: tuple[int, ...], batch: tuple[int, ...], size: int) -> np.ndarray:
    """Element offset of each broadcast batch entry's matrix inside a contiguous operand."""
    count = math.prod(shape)
    idx = np.arange(count, dtype=np.int64).reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(idx, batch).reshape(-1) * size)


def _matmul(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
    from ortnpu.domain.ops_linear import MatMul

    xa, xb, mult, shift = arrays
    m, k = xa.shape[-2:]
    n = xb.shape[-1]
    batch = tuple(np.broadcast_shapes(xa.shape[:-2], xb.shape[:-2]))
    nb = math.prod(batch)
    if nb == 0 or m == 0 or n == 0 or k == 0:
        return MatMul.reference(arrays, a, out_dtype)
    xa = np.ascontiguousarray(xa)
    xb = np.ascontiguousarray(xb)
    a_off = batch_offsets(xa.shape[:-2], batch, m * k)
    b_off = batch_offsets(xb.shape[:-2], batch, k * n)
    y = np.empty((*batch, m, n), dtype=out_dtype)
    rc = _native.lib.ortnpu_matmul(
        nb, m, k, n, _buf(xa), TYPE_CODE[xa.dtype], a["a_zp"], _buf(a_off, "int64_t[]"),
        xa.size, _buf(xb), TYPE_CODE[xb.dtype], a["b_zp"], _buf(b_off, "int64_t[]"), xb.size,
        int(mult.reshape(-1)[0]), int(shift.reshape(-1)[0]), out_params(a, out_dtype), _buf(y),
        threads_for(y.size * k), isa_code())
    _check(rc, "MatMul")
    return y


def broadcast_plan(x: np.ndarray, y: np.ndarray) -> tuple[tuple[int, ...], list[list[int]]]:
    """Output shape and per-operand element strides (0 on broadcast axes), axes merged where
    both operands are contiguous across them."""
    shape = np.broadcast_shapes(x.shape, y.shape)
    strides = [[s // arr.itemsize for s in np.broadcast_to(arr, shape).strides] for arr in (x, y)]
    dims: list[int] = []
    st: list[list[int]] = [[], []]
    for d, size in enumerate(shape):
        if size == 1:
            continue
        if dims and all(st[i][-1] == strides[i][d] * size for i in range(2)):
            dims[-1] *= size
            for i in range(2):
                st[i][-1] = strides[i][d]
            continue
        dims.append(size)
        for i in range(2):
            st[i].append(strides[i][d])
    if not dims:
        dims, st = [1], [[0], [0]]
    return tuple(dims), st


def _binary(op: int, names: tuple[str, ...]) -> Callable[..., np.ndarray]:
    def run(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
        x = np.ascontiguousarray(arrays[0])
        y = np.ascontiguousarray(arrays[1])
        shape = np.broadcast_shapes(x.shape, y.shape)
        out = np.empty(shape, dtype=out_dtype)
        if out.size == 0:
            return out
        dims, (sa, sb) = broadcast_plan(x, y)
        params = binary_params(names, a)
        args = (binary_code(op, a), len(dims), _buf(np.array(dims, np.int64), "int64_t[]"), _buf(x),
                TYPE_CODE[x.dtype], _buf(np.array(sa, np.int64), "int64_t[]"), x.size, _buf(y),
                TYPE_CODE[y.dtype], _buf(np.array(sb, np.int64), "int64_t[]"), y.size,
                _buf(params, "int64_t[]"), out_params(a, out_dtype), _buf(out),
                threads_for(out.size))
        if op >= 2:   # Sub, Maximum, Minimum, SquaredDifference: kernels_steps.c
            rc = _native.lib.ortnpu_binary_ext(*args)
        else:
            rc = _native.lib.ortnpu_binary(*args, isa_code())
        _check(rc, BINARY_NAMES[op])
        return out

    return run


_ADD_PARAMS = ("a_zp", "b_zp", "left_shift", "a_multiplier", "a_shift", "b_multiplier",
               "b_shift", "y_multiplier", "y_shift")
#: op name -> (op code of ``ortnpu_binary`` (0, 1) or ``ortnpu_binary_ext`` (2-5), the
#: attributes of its ``params`` array in order). Sub passes Add's parameters: the kernel
#: negates b's multiplier as TFLite's SUB does; SquaredDifference squares the difference.
BINARY_OPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "Add": (0, _ADD_PARAMS),
    "Mul": (1, ("a_zp", "b_zp", "multiplier", "shift")),
    "Sub": (2, _ADD_PARAMS),
    "Maximum": (3, ()),
    "Minimum": (4, ()),
    "SquaredDifference": (5, _ADD_PARAMS),
}
BINARY_NAMES = {code: name for name, (code, _) in BINARY_OPS.items()}
#: ``ortnpu_binary_ext``'s code of a Sub with ``negate = 'result'`` (TOSA: b rescaled, then
#: negated), which takes op 2's parameters
SUB_NEGATE_RESULT = 6


def binary_code(op: int, a: Mapping[str, Any]) -> int:
    """The kernel code of a binary node: its op's, or 6 for a Sub that negates b's result."""
    if op == BINARY_OPS["Sub"][0] and a.get("negate", "multiplier") == "result":
        return SUB_NEGATE_RESULT
    return op


def binary_params(names: Sequence[str], a: Mapping[str, Any]) -> np.ndarray:
    """The 9-entry ``params`` array of the binary kernels (unused entries 0)."""
    params = np.zeros(9, dtype=np.int64)
    params[:len(names)] = [a[k] for k in names]
    return params


_add = _binary(*BINARY_OPS["Add"])
_mul = _binary(*BINARY_OPS["Mul"])
_sub = _binary(*BINARY_OPS["Sub"])
_maximum = _binary(*BINARY_OPS["Maximum"])
_minimum = _binary(*BINARY_OPS["Minimum"])
_squared_difference = _binary(*BINARY_OPS["SquaredDifference"])


def slice_plan(x_shape: Sequence[int], arrays: Sequence[np.ndarray]
               ) -> tuple[list[int], list[int], int]:
    """Output dims, element strides into the contiguous input (negative for a negative
    step) and the start offset of a ``Slice`` with ``arrays`` = (starts, ends, axes, steps)."""
    from ortnpu.domain.ops_layout import slice_bounds

    starts, ends, axes, steps = arrays
    strides = [math.prod(x_shape[d + 1:]) for d in range(len(x_shape))]
    dims, istride, start = list(x_shape), list(strides), 0
    for k, axis in enumerate(int(v) for v in axes):
        axis %= len(x_shape)
        step = int(steps[k])
        first, stop = slice_bounds(x_shape[axis], int(starts[k]), int(ends[k]), step)
        dims[axis] = len(range(first, stop, step))
        # a step taken at most once never moves: 0, which also keeps a step of +-2^62 (ONNX
        # allows any) from overflowing int64 (edge fuzz: OverflowError inside the kernel)
        istride[axis] = strides[axis] * step if dims[axis] > 1 else 0
        start += first * strides[axis] if dims[axis] else 0
    return dims, istride, start


def _slice(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
    x = np.ascontiguousarray(arrays[0])
    dims, istride, start = slice_plan(x.shape, arrays[1:])
    y = np.empty(dims, dtype=out_dtype)
    if y.size == 0:
        return y
    if x.ndim == 0 or x.dtype.itemsize not in (1, 2):
        from ortnpu.domain.ops_layout import Slice

        return Slice.reference(arrays, a, out_dtype)
    rc = _native.lib.ortnpu_strided_copy(
        x.ndim, _buf(np.array(dims, np.int64), "int64_t[]"),
        _buf(np.array(istride, np.int64), "int64_t[]"), start, x.size, _buf(x), _buf(y),
        x.dtype.itemsize)
    _check(rc, "Slice")
    return y


def _requantize(arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                out_dtype: np.dtype) -> np.ndarray:
    x, mult, shift = arrays
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=out_dtype)
    if x.size == 0:
        return out
    if mult.size > 1 or shift.size > 1:
        axis = a["axis"] % x.ndim
        ch = x.shape[axis]
        outer = math.prod(x.shape[:axis])
        inner = math.prod(x.shape[axis + 1:])
        m, s = channel_params(mult, shift, ch)
    else:
        outer, ch, inner = 1, 1, x.size
        m, s = channel_params(mult, shift, 1)
    rc = _native.lib.ortnpu_requantize(
        outer, ch, inner, _buf(x), TYPE_CODE[x.dtype], a["x_zp"], _buf(m, "int32_t[]"),
        _buf(s, "int32_t[]"), m.size, out_params(a, out_dtype), _buf(out),
        threads_for(out.size), isa_code())
    _check(rc, "Requantize")
    return out


def _lut(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
    x = np.ascontiguousarray(arrays[0])
    table = np.ascontiguousarray(arrays[1])
    out = np.empty(x.shape, dtype=table.dtype)
    if x.size == 0:
        return out
    rc = _native.lib.ortnpu_lut(x.size, _buf(x), TYPE_CODE[x.dtype], _buf(table),
                                TYPE_CODE[table.dtype], table.size, _buf(out),
                                threads_for(out.size))
    _check(rc, "Lut")
    return out


def pool_window(shape: Sequence[int], a: Mapping[str, Any]) -> np.ndarray:
    """The window array of ``ortnpu_pool2d``: kernel, strides, dilations, pads, output size."""
    from ortnpu.domain import common as c

    _, _, h, w = shape
    dh, dw = a.get("dilation_h", 1), a.get("dilation_w", 1)
    oh = c.window_out(h, a["kernel_h"], a["stride_h"], dh, a["pad_top"], a["pad_bottom"],
                      "", "pool", "vertical")
    ow = c.window_out(w, a["kernel_w"], a["stride_w"], dw, a["pad_left"], a["pad_right"],
                      "", "pool", "horizontal")
    return np.array([a["kernel_h"], a["kernel_w"], a["stride_h"], a["stride_w"], dh, dw,
                     a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"], oh, ow],
                    dtype=np.int64)


def _pool(op: int) -> Callable[..., np.ndarray]:
    def run(arrays: Sequence[np.ndarray], a: Mapping[str, Any], out_dtype: np.dtype) -> np.ndarray:
        x = np.ascontiguousarray(arrays[0])
        n, ch, h, w = x.shape
        win = pool_window(x.shape, a)
        out = np.empty((n, ch, int(win[10]), int(win[11])), dtype=x.dtype)
        if out.size == 0:
            return out
        rc = _native.lib.ortnpu_pool2d(op, n, ch, h, w, _buf(win, "int64_t[]"), _buf(x),
                                       TYPE_CODE[x.dtype], a["act_min"], a["act_max"],
                                       _buf(out), threads_for(out.size * 4))
        _check(rc, ("MaxPool", "AveragePool")[op])
        return out

    return run


def _global_avgpool(arrays: Sequence[np.ndarray], a: Mapping[str, Any],
                    out_dtype: np.dtype) -> np.ndarray:
    x = np.ascontiguousarray(arrays[0])
    n, ch, h, w = x.shape
    out = np.empty((n, ch, 1, 1), dtype=x.dtype)
    if out.size == 0:
        return out
    rc = _native.lib.ortnpu_global_avgpool(n, ch, h * w, _buf(x), TYPE_CODE[x.dtype],
                                           a["act_min"], a["act_max"], _buf(out),
                                           threads_for(x.size))
    _check(rc, "GlobalAveragePool")
    return out


def _resize(arrays: Sequence[np.ndarray], a: Mapping[str, Any],
            out_dtype: np.dtype) -> np.ndarray:
    from ortnpu.domain.ops_resize import tables

    x = np.ascontiguousarray(arrays[0])
    n, ch, h, w = x.shape
    rows, cols = tables(x.shape, a)
    out = np.empty((n, ch, a["out_h"], a["out_w"]), dtype=x.dtype)
    if out.size == 0:
        return out
    bilinear = int(a["mode"] == "bilinear")
    rc = _native.lib.ortnpu_resize(n * ch, h, w, a["out_h"], a["out_w"], bilinear,
                                   _buf(rows, "int32_t[]"), _buf(cols, "int32_t[]"), _buf(x),
                                   TYPE_CODE[x.dtype], _buf(out),
                                   threads_for(out.size * (4 if bilinear else 1)))
    _check(rc, "Resize")
    return out


def _softmax(arrays: Sequence[np.ndarray], a: Mapping[str, Any],
             out_dtype: np.dtype) -> np.ndarray:
    from ortnpu.domain.fixed_point import softmax_int16_tables

    x = np.ascontiguousarray(arrays[0])
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size == 0:
        return out
    depth = x.shape[-1]
    exp_lut, recip_lut = softmax_int16_tables()
    rc = _native.lib.ortnpu_softmax(
        x.size // depth, depth, _buf(x), TYPE_CODE[x.dtype], a["multiplier"], a["shift"],
        a["diff_min"], _buf(exp_lut, "int16_t[]"), _buf(recip_lut, "int16_t[]"), _buf(out),
        threads_for(x.size * 8))
    _check(rc, "Softmax")
    return out


Kernel = Callable[[Sequence[np.ndarray], Mapping[str, Any], np.dtype], np.ndarray]

#: op name -> C-backed kernel with the signature of ``OpSpec.reference``.
KERNELS: dict[str, Kernel] = {} if not AVAILABLE else {
    "Conv": _conv,
    "FullyConnected": _fully_connected,
    "MatMul": _matmul,
    "Add": _add,
    "Mul": _mul,
    "Sub": _sub, "SquaredDifference": _squared_difference,
    "Maximum": _maximum,
    "Minimum": _minimum,
    "Slice": _slice,
    "Requantize": _requantize,
    "Lut": _lut,
    "MaxPool": _pool(0),
    "AveragePool": _pool(1),
    "GlobalAveragePool": _global_avgpool,
    "Resize": _resize,
    "Softmax": _softmax,
}
