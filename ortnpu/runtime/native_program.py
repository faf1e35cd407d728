"""Compile a fused subgraph into a C program that onnxruntime runs without Python.

A :class:`~ortnpu.runtime.fusion.Program` runs its layers from Python: one crossing from
onnxruntime into Python per subgraph, then one cffi call per layer. That costs tens of
microseconds per run, which is most of the time of a small model. :func:`compile_program` turns
the program into a C program (``ops/program.c``): the layers with private copies of their
constants, the per-sample shapes and an arena plan for the intermediates. onnxruntime then runs
it through a native custom op (``ops/ort_op.c``), with no Python and no GIL on the run path.

The C program calls the same kernels as the per-layer path, so the numbers are identical (the
tests compare every model both ways). It loops over the batch axis and runs every layer on one
sample at a time, which needs layers that treat the samples independently; the compiler checks
that by running the program on one and two samples, and refuses (with a reason) what it cannot
prove. A refused program simply keeps running through Python.

:func:`compile_islands` (what the session uses) compiles every island of NPU layers between CPU
nodes, with as many inputs and outputs as it has; :func:`compile_subgraphs` compiles the
Python ``Subgraph`` nodes of :func:`~ortnpu.runtime.fusion.fuse_subgraphs` (one input, one
output).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.domain import DOMAIN, kernels, spec_of
from ortnpu.domain.spec import parse_op_type
from ortnpu.errors import KernelError, OrtNpuError, first_line
from ortnpu.onnx_types import np_dtype
from ortnpu.passes.graph import node_inputs
from ortnpu.runtime.fusion import Program, Step, find_islands, program_of, topological_order

_ALIGN = 64
_MAX_IO = 64   # ORTNPU_PROGRAM_MAX_IO
_ERR_LEN = 512


def _native() -> Any:
    from ortnpu.domain import native

    return native


@dataclass
class NativeProgram:
    """One reference to a compiled C program; the handle finds it from onnxruntime."""

    ptr: Any
    handle: int
    in_dtype: np.dtype
    out_dtype: np.dtype
    in_dims: tuple[int, ...]
    out_dims: tuple[int, ...]
    name: str
    #: multiply-adds of each layer per run unit (a sample, or the fixed batch), in the order of
    #: :meth:`profile`'s layers: what achieved GMAC/s are computed from (0 for non-GEMM layers)
    macs: tuple[int, ...] = ()
    #: every input's and output's type and per-sample dims (``in_dtype``/``in_dims`` are the
    #: first input's, ``out_dtype``/``out_dims`` the first output's)
    in_dtypes: tuple[np.dtype, ...] = ()
    out_dtypes: tuple[np.dtype, ...] = ()
    in_dims_all: tuple[tuple[int, ...], ...] = ()
    out_dims_all: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        self.in_dtypes = self.in_dtypes or (self.in_dtype,)
        self.out_dtypes = self.out_dtypes or (self.out_dtype,)
        self.in_dims_all = self.in_dims_all or (self.in_dims,)
        self.out_dims_all = self.out_dims_all or (self.out_dims,)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run on ``x`` of shape ``[batch, *in_dims]`` (tests and direct use)."""
        return self._run(x, None)

    def run_io(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run a program of any number of inputs and outputs (tests and direct use)."""
        return self._run_io(list(xs), None)

    def profile(self, x: np.ndarray | Sequence[np.ndarray],
                repeat: int = 10) -> list[tuple[str, float]]:
        """Mean milliseconds per layer over ``repeat`` runs on ``x`` (one array per input for a
        program of several inputs or outputs)."""
        nat = _native()
        lib, ffi = nat._native.lib, nat._native.ffi
        count = lib.ortnpu_program_layers(self.ptr, -1, ffi.NULL, 0)
        ns = ffi.new("double[]", max(count, 1))
        xs = [x] if isinstance(x, np.ndarray) else list(x)
        self._run_io(xs, None)   # warm up: the first run allocates and touches the arena
        for _ in range(repeat):
            self._run_io(xs, ns)
        names = []
        for k in range(count):
            buf = ffi.new("char[]", 128)
            lib.ortnpu_program_layers(self.ptr, k, buf, 128)
            names.append(ffi.string(buf).decode(errors="replace"))
        return [(names[k], ns[k] / repeat / 1e6) for k in range(count)]

    def _run(self, x: np.ndarray, ns: Any) -> np.ndarray:
        if len(self.in_dtypes) != 1 or len(self.out_dtypes) != 1:
            raise KernelError(f"{self.name}: takes {len(self.in_dtypes)} inputs and gives "
                              f"{len(self.out_dtypes)} outputs; use run_io")
        return self._run_io([x], ns)[0]

    def _run_io(self, xs: list[np.ndarray], ns: Any) -> list[np.ndarray]:
        nat = _native()
        ffi = nat._native.ffi
        if len(xs) != len(self.in_dtypes):
            raise KernelError(f"{self.name}: takes {len(self.in_dtypes)} inputs, got {len(xs)}")
        for x, dtype, dims in zip(xs, self.in_dtypes, self.in_dims_all, strict=True):
            if x.dtype != dtype or tuple(x.shape[1:]) != dims or x.shape[0] != xs[0].shape[0]:
                raise KernelError(f"{self.name}: expected [batch, {', '.join(map(str, dims))}] "
                                  f"{dtype}, got {list(x.shape)} {x.dtype}")
        xs = [np.ascontiguousarray(x) for x in xs]
        batch = xs[0].shape[0]
        ys = [np.empty((batch, *dims), dtype=dtype)
              for dtype, dims in zip(self.out_dtypes, self.out_dims_all, strict=True)]
        err = ffi.new("char[]", _ERR_LEN)
        xp = ffi.new("void *[]", [ffi.from_buffer(x) for x in xs])
        yp = ffi.new("void *[]", [ffi.from_buffer(y) for y in ys])
        rc = nat._native.lib.ortnpu_program_run_io(
            self.ptr, batch, xp, yp, err, _ERR_LEN, ns if ns is not None else ffi.NULL)
        if rc != 0:
            raise KernelError(ffi.string(err).decode(errors="replace"))
        return ys


def _run_steps(program: Program, x: np.ndarray | Sequence[np.ndarray]
               ) -> dict[str, np.ndarray]:
    """Every tensor of the program for input ``x`` (or one array per input), validating each
    layer."""
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    values: dict[str, np.ndarray] = dict(zip(program.inputs, xs, strict=True))
    for step in program.steps:
        values[step.output] = kernels.run(step.spec, program.inputs_of(step, values),
                                          step.attrs, step.out_dtype, step.where)
    return values


def _aligned(nbytes: int) -> int:
    return (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN


def _plan_arena(program: Program, sizes: dict[str, int]) -> tuple[dict[str, int], list[int], int]:
    """Slots of the tensors and arena offsets: tensors alive at the same step never overlap.

    Tensors are placed in the order they are defined, each at the lowest offset where it fits
    between the tensors still alive (first fit). Those alive are kept in a heap by last use, so
    planning costs O(n log n + n * alive) instead of rescanning every placed tensor (which made
    session creation quadratic in chain length: 10k layers took seconds).
    """
    slots = {t: k for k, t in enumerate((*program.inputs, *program.outputs))}
    defined: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for k, step in enumerate(program.steps):
        defined.setdefault(step.output, k)
        last_use[step.output] = max(last_use.get(step.output, k), k)
        for t in step.inputs:
            if t in defined:
                last_use[t] = k
    offsets = [0] * len(slots)
    alive: list[tuple[int, int, int, int]] = []   # heap of (last use, seq, start, end)
    arena = 0
    for seq, (t, k) in enumerate(sorted(defined.items(), key=lambda kv: kv[1])):
        if t in slots:
            continue
        while alive and alive[0][0] < k:   # placed earlier, dead before this one is defined
            heapq.heappop(alive)
        size = _aligned(sizes[t])
        start = 0
        for s, e in sorted((s, e) for _, _, s, e in alive):
            if start + size <= s:
                break
            start = max(start, e)
        slots[t] = len(offsets)
        offsets.append(start)
        heapq.heappush(alive, (last_use[t], seq, start, start + size))
        arena = max(arena, start + size)
    return slots, offsets, arena


def _random_input(shape: Sequence[int], dtype: np.dtype, seed: int) -> np.ndarray:
    """Random values over the dtype's whole range (distinct samples expose mixing)."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def _check_separable(program: Program, one: dict[str, np.ndarray],
                     x1: Sequence[np.ndarray]) -> str | None:
    """Why running the layers sample by sample would differ from running the batch, or None.

    The per-sample program is right only if every tensor of a batch of B samples is the
    concatenation, on axis 0, of the tensors of the samples run one by one. No layer type
    guarantees that by itself: a broadcast against a higher-rank operand moves the batch axis
    (``[N, 4] + [1, 1, 1, 4]`` is ``[1, 1, N, 4]``), two activations of different rank combine
    every sample with every other, a Reshape, Transpose, Concat or Pad can move or mix it. So
    the compiler checks it: two different random samples run one by one and together must give,
    for every tensor, the shape ``[2, ...]`` and the same values.
    """
    for name, v in one.items():
        if v.ndim == 0 or v.shape[0] != 1:
            return f"tensor {name!r} has shape {list(v.shape)} for one sample (batch axis lost)"
        if v.size == 0:
            return f"tensor {name!r} is empty"
    reason = _slices_the_batch(program, one)
    if reason:
        return reason
    xa, xb = ([_random_input(x.shape, x.dtype, seed + 2 * k) for k, x in enumerate(x1)]
              for seed in (1, 2))
    runs = [_run_steps(program, xa), _run_steps(program, xb)]
    two = _run_steps(program, [np.concatenate(pair) for pair in zip(xa, xb, strict=True)])
    for name, v in one.items():
        if two[name].shape != (2, *v.shape[1:]):
            return (f"tensor {name!r} has shape {list(two[name].shape)} for two samples and "
                    f"{list(v.shape)} for one (a broadcast, reshape or transpose moves or mixes "
                    "the samples; fix the model's batch size to compile it)")
        if not np.array_equal(two[name], np.concatenate([r[name] for r in runs])):
            return (f"tensor {name!r} of two samples differs from the samples run one by one "
                    "(a layer mixes the samples; fix the model's batch size to compile it)")
    return None


def _slices_the_batch(program: Program, one: dict[str, np.ndarray]) -> str | None:
    """A Slice of the batch axis that is not the whole axis: its result depends on the batch
    size in a way one or two samples cannot show (``[-3:]`` keeps all of 1 or 2 samples and 3
    of 6; the chain fuzzer's seed 2 case 3053 ran 6 samples where the model keeps 3)."""
    whole = 1 << 31    # more samples than any batch can hold
    for step in program.steps:
        if step.spec.name != "Slice":
            continue
        rank = one[step.inputs[0]].ndim
        starts, ends, axes, steps = (np.asarray(program.constants[n]).reshape(-1)
                                     for n in step.inputs[1:5])
        for start, end, axis, stride in zip(starts, ends, axes, steps, strict=False):
            if int(axis) % rank == 0 and not (int(stride) == 1 and int(end) >= whole and
                                             (int(start) == 0 or int(start) <= -whole)):
                return (f"layer {step.name or step.where!r} (Slice) slices the batch axis "
                        f"(start {int(start)}, end {int(end)}, step {int(stride)}): the result "
                        "depends on the batch size; fix the model's batch size to compile it")
    return None


@dataclass(frozen=True)
class FloatBoundary:
    """A QuantizeLinear before and/or a DequantizeLinear after the subgraph, run by the program
    itself (as onnxruntime computes them), so that onnxruntime runs one node instead of three.
    Each is ``(scale, zero_point)`` or None. A program of several inputs or outputs gives one
    per input in ``inputs`` and one per output in ``outputs`` (``quantize``/``dequantize``
    are then unused)."""

    quantize: tuple[float, int] | None = None
    dequantize: tuple[float, int] | None = None
    #: NaN in the float input: "allow" (quantized as onnxruntime's MLAS: the lowest integer),
    #: "zero" (as 0.0) or "raise" (the run fails with "NaN in the input")
    nan_policy: str = "allow"
    inputs: tuple[tuple[float, int] | None, ...] = ()
    outputs: tuple[tuple[float, int] | None, ...] = ()


_NAN_MODES = {"allow": 0, "zero": 1, "raise": 2}


def compile_program(program: Program, in_shape: Sequence[Any] | None = None,
                    in_dtype: np.dtype | None = None,
                    boundary: FloatBoundary | None = None) -> NativeProgram | str:
    """Compile ``program`` for inputs ``[batch, *in_shape[1:]]`` (``in_shape``/``in_dtype``:
    the first input's, default the program's; the others from ``program.in_shapes`` and
    ``program.in_dtypes``).

    Returns:
        The compiled program, or the reason it stays on the Python path.
    """
    nat = _native()
    if not nat.AVAILABLE or kernels.get_mode() == "numpy":
        return "the C kernels are not in use"
    other = sorted({s.spec.name for s in program.steps} - NATIVE_OPS)
    if other:
        return f"layers without a C program step: {', '.join(other)}"
    n_in, n_out = len(program.inputs), len(program.outputs)
    if n_in > _MAX_IO or n_out > _MAX_IO:
        return f"{n_in} inputs and {n_out} outputs: a compiled program takes at most {_MAX_IO}"
    shapes = [in_shape if in_shape is not None else program.in_shapes[0],
              *program.in_shapes[1:]]
    dtypes = [in_dtype if in_dtype is not None else program.in_dtypes[0],
              *program.in_dtypes[1:]]
    all_dims = []
    for name, shape, dtype in zip(program.inputs, shapes, dtypes, strict=True):
        dims = list(shape) if shape is not None else []
        if len(dims) < 1 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            return f"input {name!r} needs fixed dimensions after the batch axis, has {dims}"
        if dtype is None or np.dtype(dtype) not in nat.TYPE_CODE:
            return f"input {name!r}: type {dtype} is not an integer type of the domain"
        all_dims.append(dims)
    dtypes = [np.dtype(d) for d in dtypes]
    # a model that fixes the batch size N never runs other batches: the program's layers are
    # built for all N samples at once and it refuses any other batch; with a free batch size it
    # loops over the samples, which must be independent
    fixed = {d[0] for d in all_dims if isinstance(d[0], int) and d[0] > 0}
    if len(fixed) > 1 or (fixed and len(fixed) != len({str(d[0]) for d in all_dims})):
        return (f"the inputs disagree on the batch axis ({[d[0] for d in all_dims]}); a "
                "program runs one batch over all of them")
    fixed_batch = fixed.pop() if fixed else 0
    x1 = [np.zeros((fixed_batch or 1, *dims[1:]), dtype=dtype)
          for dims, dtype in zip(all_dims, dtypes, strict=True)]
    try:
        values = _run_steps(program, x1)
    except OrtNpuError as exc:
        what = "the batch" if fixed_batch else "one sample"
        return (f"the layers refuse {what} of shape(s) {[list(x.shape) for x in x1]}: "
                f"{first_line(exc)}")
    if fixed_batch:
        for name in program.outputs:
            out = values[name]
            if out.ndim == 0 or out.shape[0] != fixed_batch:
                return (f"the output {name!r} has shape {list(out.shape)} for a batch of "
                        f"{fixed_batch}: the batch axis moves (a broadcast, reshape or "
                        "transpose), which the compiled program's [batch, ...] output cannot "
                        "hold")
    else:
        try:
            reason = _check_separable(program, values, x1)
        except OrtNpuError as exc:
            reason = (f"the layers refuse two samples (a layer fixes the batch size; fix the "
                      f"model's batch to 1 to compile it): {first_line(exc)}")
        if reason:
            return reason
    outs = [values[name] for name in program.outputs]
    for name, out in zip(program.outputs, outs, strict=True):
        if out.dtype not in nat.TYPE_CODE:
            return f"output {name!r}: type {out.dtype} is not an integer type of the domain"
    sizes = {t: v.nbytes for t, v in values.items()}
    slots, offsets, arena = _plan_arena(program, sizes)
    boundary = boundary or FloatBoundary()
    qs = list(boundary.inputs) or [boundary.quantize]
    dqs = list(boundary.outputs) or [boundary.dequantize]
    if len(qs) != n_in or len(dqs) != n_out:
        return f"the float boundary {boundary} does not match {n_in} inputs, {n_out} outputs"
    q_offs, dq_offs = [], []
    for q, x in zip(qs, x1, strict=True):          # quantized inputs
        q_offs.append(arena)
        arena += _aligned(x.nbytes) if q else 0
    for dq, out in zip(dqs, outs, strict=True):     # outputs to dequantize
        dq_offs.append(arena)
        arena += _aligned(out.nbytes) if dq else 0
    name = program.name
    ffi, lib = nat._native.ffi, nat._native.lib

    def dims8(shapes: Sequence[Sequence[int]]) -> Any:
        return ffi.new("int64_t[]", [int(d) for sh in shapes for d in (*sh, *[0] * (8 - len(sh)))])

    if any(len(d) - 1 > 8 for d in all_dims) or any(o.ndim - 1 > 8 for o in outs):
        return "a compiled program's inputs and outputs have at most 8 axes after the batch"
    ptr = lib.ortnpu_program_new_io(
        name.encode(), n_in, ffi.new("int32_t[]", [nat.TYPE_CODE[d] for d in dtypes]),
        ffi.new("int32_t[]", [len(d) - 1 for d in all_dims]), dims8([d[1:] for d in all_dims]),
        n_out, ffi.new("int32_t[]", [nat.TYPE_CODE[o.dtype] for o in outs]),
        ffi.new("int32_t[]", [o.ndim - 1 for o in outs]), dims8([o.shape[1:] for o in outs]),
        len(offsets), ffi.new("int64_t[]", offsets), arena, nat.isa_code(), nat.get_threads())
    if ptr == ffi.NULL:
        return "the C program could not be created (out of memory?)"
    ptr = ffi.gc(ptr, lib.ortnpu_program_release)
    for step in program.steps:
        rc = _add_layer(ptr, step, program.inputs_of(step, values),
                        [slots.get(n, -1) for n in step.inputs], slots[step.output],
                        values[step.output], bool(fixed_batch))
        if rc != 0:
            return f"{step.where}the C program refused the layer (code {rc})"
    if fixed_batch and lib.ortnpu_program_set_fixed_batch(ptr, fixed_batch) != 0:
        return f"the C program refused the fixed batch {fixed_batch}"
    nan_mode = _NAN_MODES[boundary.nan_policy]
    for is_out, params, offs in ((0, qs, q_offs), (1, dqs, dq_offs)):
        for k, (param, off) in enumerate(zip(params, offs, strict=True)):
            if param and lib.ortnpu_program_set_io_float(ptr, is_out, k, param[0], param[1],
                                                         off, nan_mode) != 0:
                return f"the C program refused the float boundary {boundary}"
    handle = lib.ortnpu_program_publish(ptr)
    if handle == 0:
        return "too many compiled programs alive in this process"
    f32 = np.dtype(np.float32)
    macs = tuple(_macs(step, program.inputs_of(step, values), values[step.output])
                 for step in program.steps)
    in_dtypes = tuple(f32 if q else d for q, d in zip(qs, dtypes, strict=True))
    out_dtypes = tuple(f32 if dq else o.dtype for dq, o in zip(dqs, outs, strict=True))
    in_dims = tuple(tuple(int(v) for v in d[1:]) for d in all_dims)
    out_dims = tuple(tuple(o.shape[1:]) for o in outs)
    return NativeProgram(ptr, int(handle), in_dtypes[0], out_dtypes[0], in_dims[0], out_dims[0],
                         name, macs, in_dtypes, out_dtypes, in_dims, out_dims)


def _macs(step: Step, arrays: list[np.ndarray], y: np.ndarray) -> int:
    """Multiply-adds of a Conv or FullyConnected layer with inputs ``arrays`` and output ``y``
    (the same work measure the layer builders give ``threads_for``); 0 for other layers."""
    if step.spec.name == "Conv":
        return int(y.size * math.prod(arrays[1].shape[1:]))
    if step.spec.name == "FullyConnected":
        return int(y.size * arrays[1].shape[1])
    return 0


@dataclass(frozen=True)
class _Layer:
    """What a layer builder gets: the C program, the layer's name, its inputs for one sample
    (``arrays``, constants included), their slots (-1: a constant), its output slot and its
    output for one sample; ``whole_batch``: the model fixes its batch size, so "one sample"
    is the whole batch and axis 0 is an axis like the others."""

    ptr: Any
    name: bytes
    step: Step
    arrays: list[np.ndarray]
    ins: list[int]
    out: int
    y: np.ndarray
    whole_batch: bool = False

    @property
    def x(self) -> np.ndarray:
        return np.ascontiguousarray(self.arrays[0])


def _conv(nat: Any, L: _Layer) -> int:
    x, a = L.x, L.step.attrs
    w, bias, mult, shift = L.arrays[1:]
    m, s = nat.channel_params(mult, shift, w.shape[0])
    return nat._native.lib.ortnpu_program_add_conv(
        L.ptr, L.name, L.ins[0], L.out, nat.conv_struct(x, w, a, m.size),
        nat.out_params(a, L.step.out_dtype), nat._buf(np.ascontiguousarray(w), "int8_t[]"),
        nat._buf(np.ascontiguousarray(bias, dtype=np.int64), "int64_t[]"),
        nat._buf(m, "int32_t[]"), nat._buf(s, "int32_t[]"),
        nat.threads_for(L.y.size * math.prod(w.shape[1:])))


def _fully_connected(nat: Any, L: _Layer) -> int:
    x, a = L.x, L.step.attrs
    w, bias, mult, shift = L.arrays[1:]
    n, k = w.shape
    m, s = nat.channel_params(mult, shift, n)
    return nat._native.lib.ortnpu_program_add_fc(
        L.ptr, L.name, L.ins[0], L.out, math.prod(x.shape[:-1]), k, n, nat.TYPE_CODE[x.dtype],
        a["x_zp"], nat._buf(np.ascontiguousarray(w), "int8_t[]"),
        nat._buf(np.ascontiguousarray(bias, dtype=np.int64), "int64_t[]"),
        nat._buf(m, "int32_t[]"), nat._buf(s, "int32_t[]"), m.size,
        nat.out_params(a, L.step.out_dtype), nat.threads_for(L.y.size * k))


def _binary(nat: Any, L: _Layer) -> int:
    x, a, ffi = L.x, L.step.attrs, nat._native.ffi
    code, keys = nat.BINARY_OPS[L.step.spec.name]
    b = np.ascontiguousarray(L.arrays[1])
    dims, (sa, sb) = nat.broadcast_plan(x, b)
    params = nat.binary_params(keys, a)
    return nat._native.lib.ortnpu_program_add_binary(
        L.ptr, L.name, nat.binary_code(code, a), L.ins[0], L.ins[1], L.out, len(dims),
        ffi.new("int64_t[]", list(dims)), nat.TYPE_CODE[x.dtype], ffi.new("int64_t[]", sa),
        x.size, nat._buf(x) if L.ins[0] < 0 else ffi.NULL, nat.TYPE_CODE[b.dtype],
        ffi.new("int64_t[]", sb), b.size, nat._buf(b) if L.ins[1] < 0 else ffi.NULL,
        nat._buf(params, "int64_t[]"), nat.out_params(a, L.step.out_dtype),
        nat.threads_for(L.y.size))


def _requantize(nat: Any, L: _Layer) -> int:
    x, a = L.x, L.step.attrs
    mult, shift = L.arrays[1:]
    if mult.size > 1 or shift.size > 1:
        axis = a["axis"] % x.ndim
        outer, ch, inner = (math.prod(x.shape[:axis]), x.shape[axis],
                            math.prod(x.shape[axis + 1:]))
    else:
        outer, ch, inner = 1, 1, x.size
    m, s = nat.channel_params(mult, shift, ch)
    return nat._native.lib.ortnpu_program_add_requantize(
        L.ptr, L.name, L.ins[0], L.out, outer, ch, inner, nat.TYPE_CODE[x.dtype], a["x_zp"],
        nat._buf(m, "int32_t[]"), nat._buf(s, "int32_t[]"), m.size,
        nat.out_params(a, L.step.out_dtype), nat.threads_for(L.y.size))


def _lut(nat: Any, L: _Layer) -> int:
    x, table = L.x, np.ascontiguousarray(L.arrays[1])
    return nat._native.lib.ortnpu_program_add_lut(
        L.ptr, L.name, L.ins[0], L.out, x.size, nat.TYPE_CODE[x.dtype], nat._buf(table),
        nat.TYPE_CODE[table.dtype], table.size, nat.threads_for(L.y.size))


def _softmax(nat: Any, L: _Layer) -> int:
    from ortnpu.domain.fixed_point import softmax_int16_tables

    x, a = L.x, L.step.attrs
    exp_lut, recip_lut = softmax_int16_tables()
    return nat._native.lib.ortnpu_program_add_softmax(
        L.ptr, L.name, L.ins[0], L.out, x.size // x.shape[-1], x.shape[-1],
        nat.TYPE_CODE[x.dtype], a["multiplier"], a["shift"], a["diff_min"],
        nat._buf(exp_lut, "int16_t[]"), nat._buf(recip_lut, "int16_t[]"),
        nat.threads_for(x.size * 8))


def _pool(nat: Any, L: _Layer) -> int:
    x, a = L.x, L.step.attrs
    n, c, h, w = x.shape
    return nat._native.lib.ortnpu_program_add_pool(
        L.ptr, L.name, 0 if L.step.spec.name == "MaxPool" else 1, L.ins[0], L.out, n, c, h, w,
        nat._buf(nat.pool_window(x.shape, a), "int64_t[]"), nat.TYPE_CODE[x.dtype],
        a["act_min"], a["act_max"], nat.threads_for(L.y.size * 4))


def _global_avgpool(nat: Any, L: _Layer) -> int:
    x, a = L.x, L.step.attrs
    n, c, h, w = x.shape
    return nat._native.lib.ortnpu_program_add_gap(
        L.ptr, L.name, L.ins[0], L.out, n, c, h * w, nat.TYPE_CODE[x.dtype], a["act_min"],
        a["act_max"], nat.threads_for(x.size))


def _transpose(nat: Any, L: _Layer) -> int:
    x, ffi = L.x, nat._native.ffi
    if x.dtype != L.y.dtype:
        return -1
    perm = [int(v) for v in np.asarray(L.arrays[1]).reshape(-1)]
    return nat._native.lib.ortnpu_program_add_transpose(
        L.ptr, L.name, L.ins[0], L.out, x.ndim, ffi.new("int64_t[]", list(x.shape)),
        ffi.new("int64_t[]", perm), x.dtype.itemsize)


def _pad(nat: Any, L: _Layer) -> int:
    x, ffi = L.x, nat._native.ffi
    if x.dtype != L.y.dtype:
        return -1
    pads = [int(v) for v in np.asarray(L.arrays[1]).reshape(-1)]
    value = int(np.array(L.step.attrs["value"]).astype(x.dtype).astype(np.int64))
    if x.dtype.itemsize == 2:
        value &= 0xFFFF   # the C side stores the low 16 bits
    return nat._native.lib.ortnpu_program_add_pad(
        L.ptr, L.name, L.ins[0], L.out, x.ndim, ffi.new("int64_t[]", list(x.shape)),
        ffi.new("int64_t[]", pads), value, x.dtype.itemsize)


def _concat(nat: Any, L: _Layer) -> int:
    ffi = nat._native.ffi
    if any(a.dtype != L.y.dtype for a in L.arrays):
        return -1
    axis = L.step.attrs["axis"] % L.y.ndim
    # a constant (a ViT's class token) is copied into every sample: only where it has the
    # shape of one sample's part of the output (the batch run checks the rest); axis 0 joins
    # samples unless the layer sees the whole fixed batch (an LSTM's time-major states)
    consts = [np.ascontiguousarray(a) for a, i in zip(L.arrays, L.ins, strict=True) if i < 0]
    if (axis == 0 and not L.whole_batch) or any(c.shape[0] != 1 for c in consts):
        return -1
    outer = math.prod(L.y.shape[:axis])
    inner = [math.prod(a.shape[axis:]) * a.dtype.itemsize for a in L.arrays]
    blob = np.concatenate([c.reshape(-1).view(np.uint8) for c in consts]) if consts else None
    return nat._native.lib.ortnpu_program_add_concat(
        L.ptr, L.name, len(L.ins), ffi.new("int32_t[]", L.ins), L.out, outer,
        ffi.new("int64_t[]", inner), ffi.NULL if blob is None else ffi.from_buffer(blob))


def _slice(nat: Any, L: _Layer) -> int:
    x, ffi = L.x, nat._native.ffi
    if x.dtype != L.y.dtype or x.ndim == 0 or x.dtype.itemsize not in (1, 2):
        return -1
    dims, istride, start = nat.slice_plan(x.shape, L.arrays[1:])
    return nat._native.lib.ortnpu_program_add_strided(
        L.ptr, L.name, L.ins[0], L.out, x.ndim, ffi.new("int64_t[]", dims),
        ffi.new("int64_t[]", istride), start, x.size, x.dtype.itemsize)


def _matmul(nat: Any, L: _Layer) -> int:
    a, ffi = L.step.attrs, nat._native.ffi
    xa, xb = (np.ascontiguousarray(v) for v in L.arrays[:2])
    mult, shift = L.arrays[2:]
    m, k = xa.shape[-2:]
    n = xb.shape[-1]
    batch = tuple(np.broadcast_shapes(xa.shape[:-2], xb.shape[:-2]))
    nb = math.prod(batch)
    if 0 in (nb, m, k, n):
        return -1
    a_off = nat.batch_offsets(xa.shape[:-2], batch, m * k)
    b_off = nat.batch_offsets(xb.shape[:-2], batch, k * n)
    return nat._native.lib.ortnpu_program_add_matmul(
        L.ptr, L.name, L.ins[0], L.ins[1], L.out, nb, m, k, n, nat.TYPE_CODE[xa.dtype],
        a["a_zp"], nat._buf(a_off, "int64_t[]"), xa.size,
        nat._buf(xa) if L.ins[0] < 0 else ffi.NULL, nat.TYPE_CODE[xb.dtype], a["b_zp"],
        nat._buf(b_off, "int64_t[]"), xb.size, nat._buf(xb) if L.ins[1] < 0 else ffi.NULL,
        int(mult.reshape(-1)[0]), int(shift.reshape(-1)[0]),
        nat.out_params(a, L.step.out_dtype), nat.threads_for(L.y.size * k))


def _copy(nat: Any, L: _Layer) -> int:
    if L.x.dtype != L.y.dtype:
        return -1
    return nat._native.lib.ortnpu_program_add_copy(L.ptr, L.name, L.ins[0], L.out, L.y.nbytes)


def _resize(nat: Any, L: _Layer) -> int:
    from ortnpu.domain.ops_resize import tables

    x, a = L.x, L.step.attrs
    n, c, h, w = x.shape
    rows, cols = tables(x.shape, a)
    bilinear = int(a["mode"] == "bilinear")
    return nat._native.lib.ortnpu_program_add_resize(
        L.ptr, L.name, L.ins[0], L.out, n * c, h, w, a["out_h"], a["out_w"], bilinear,
        nat._buf(rows, "int32_t[]"), nat._buf(cols, "int32_t[]"), nat.TYPE_CODE[x.dtype],
        nat.threads_for(L.y.size * (4 if bilinear else 1)))


#: op -> builder of its C program layer (returns the C code: 0 ok, negative refused)
_BUILDERS: dict[str, Any] = {
    "Conv": _conv, "FullyConnected": _fully_connected, "Add": _binary, "Mul": _binary,
    "Requantize": _requantize, "Lut": _lut, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_avgpool, "Transpose": _transpose, "Pad": _pad,
    "Concat": _concat, "Reshape": _copy, "Flatten": _copy, "Resize": _resize,
    "Softmax": _softmax, "Sub": _binary, "Maximum": _binary, "Minimum": _binary,
    "SquaredDifference": _binary,
    "Slice": _slice, "MatMul": _matmul,
}


#: Layers the C program runs (others keep the subgraph on the Python path).
NATIVE_OPS = frozenset(_BUILDERS)


def _add_layer(ptr: Any, step: Step, arrays: list[np.ndarray], ins: list[int], out: int,
               y: np.ndarray, whole_batch: bool = False) -> int:
    """Append one layer; ``arrays`` are its inputs for one sample (the whole fixed batch with
    ``whole_batch``), ``y`` its output."""
    name = (step.name or step.spec.name).encode()
    builder = _BUILDERS.get(step.spec.name)
    return builder(_native(), _Layer(ptr, name, step, arrays, ins, out, y, whole_batch)) \
        if builder else -1


#: The runtime-only domain of the native op (ops/ort_op.c); never in a saved model.
NATIVE_DOMAIN = "com.ortnpu.native"
_TYPE_SUFFIX = {np.dtype(np.int8): "i8", np.dtype(np.uint8): "u8", np.dtype(np.int16): "i16",
                np.dtype(np.float32): "f32"}


def library_path() -> str | None:
    """The shared library onnxruntime loads for the native op (the C kernels' module)."""
    nat = _native()
    return nat._native.__file__ if nat.AVAILABLE else None


@dataclass
class CompileReport:
    """What became of each fused subgraph: run in C, or why not."""

    subgraph: str
    native: bool
    reason: str = ""
    #: the names of its layers
    layers: tuple[str, ...] = ()


def _names(program: Program) -> tuple[str, ...]:
    return tuple(s.name for s in program.steps)


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    if name not in inits or np_dtype(inits[name].data_type) is None:
        return None   # absent, or an element type onnx does not know (onnxruntime refuses it)
    value = numpy_helper.to_array(inits[name])
    return value if value.size == 1 else None


def _lone_link(tensor: str, other: int | None, consumers: dict[str, list[int]],
               outputs: set[str]) -> int | None:
    """``other`` (the node at the far end of ``tensor``) when ``tensor`` links only the
    subgraph and that node: one reader, not a graph output."""
    if other is None or tensor in outputs or len(consumers.get(tensor, [])) != 1:
        return None
    return other


def _qdq_params(q: onnx.NodeProto, k: int, op_type: str, int_dtype: np.dtype,
                inits: dict[str, onnx.TensorProto]) -> tuple[int, tuple[float, int]] | None:
    if q.op_type != op_type or q.domain not in ("", "ai.onnx") or len(q.input) < 2:
        return None
    if any(a.name not in ("axis", "saturate") for a in q.attribute):
        return None    # block quantization, output_dtype: not a plain per-tensor op
    scale = _scalar(inits, q.input[1])
    zp = _scalar(inits, q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros(1, np.uint8)
    if scale is None or zp is None or scale.dtype != np.float32 or zp.dtype != int_dtype:
        return None
    value = float(scale.reshape(-1)[0])
    if not (np.isfinite(value) and value > 0):
        return None
    return k, (value, int(zp.reshape(-1)[0]))


#: session config entries that change which Q/DQ nodes onnxruntime fuses (copied to the probe)
_QDQ_CONFIG_KEYS = ("session.disable_quant_qdq", "session.enable_quant_qdq_cleanup",
                    "session.disable_double_qdq_remover",
                    "optimization.disable_specified_optimizers",
                    "session.disable_aot_function_inlining")


def _kept_by_onnxruntime(model: onnx.ModelProto, nodes: set[int],
                         sess_options: Any = None) -> set[int]:
    """Of ``nodes`` (Q/DQ nodes of ``model``), those onnxruntime's graph optimizations keep as
    they are.

    onnxruntime fuses a DequantizeLinear -> op -> QuantizeLinear group into its own quantized
    kernel (``QLinearSoftmax``, ``QLinearSigmoid``, ``QLinearAdd``, ``QLinearConcat``, ...),
    whose numbers differ from the float op between the two (Softmax: up to 0.0195 on a
    transformer's scores). The reference path, plain onnxruntime and the integer export all run
    that fused kernel; a program that absorbed the DequantizeLinear or the QuantizeLinear would
    leave onnxruntime the float op instead. Which groups it fuses depends on its version, the
    element types and the session's options, so onnxruntime itself is asked: the model is
    optimized with the session's level and Q/DQ settings, and a node is kept when a node of the
    same name, type, inputs and outputs is still there.
    """
    import tempfile

    import onnxruntime as ort

    from ortnpu.runtime.session import session_options

    so = session_options()
    if sess_options is not None:
        so.graph_optimization_level = sess_options.graph_optimization_level
        for key in _QDQ_CONFIG_KEYS:
            try:
                value = sess_options.get_session_config_entry(key)
            except Exception:  # onnxruntime raises its own error for an absent key
                continue
            try:
                same = so.get_session_config_entry(key) == value
            except Exception:  # absent in the probe's options
                same = False
            if not same:  # re-adding an entry makes onnxruntime warn on the console
                so.add_session_config_entry(key, value)
    g = model.graph
    names = [g.node[k].name for k in nodes]
    if any(not n for n in names) or len(set(names)) != len(names):
        unique = {k for k in nodes if g.node[k].name and names.count(g.node[k].name) == 1}
    else:
        unique = set(nodes)
    with tempfile.TemporaryDirectory(prefix="ortnpu-qdq-") as tmp:
        so.optimized_model_filepath = f"{tmp}/optimized.onnx"
        try:
            ort.InferenceSession(model.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
            optimized = onnx.load(so.optimized_model_filepath, load_external_data=False)
        except Exception:  # onnxruntime's own error types: absorb nothing that could matter
            return set()
    after = {(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in optimized.graph.node}
    return {k for k in unique if (g.node[k].name, g.node[k].op_type, tuple(g.node[k].input),
                                  tuple(g.node[k].output)) in after}


def compile_subgraphs(model: onnx.ModelProto, programs: Sequence[Program],
                      nan_policy: str = "allow", sess_options: Any = None
                      ) -> tuple[onnx.ModelProto, list[NativeProgram], list[CompileReport]]:
    """Replace each fused ``Subgraph`` node whose program compiles by a native op node.

    A QuantizeLinear that alone feeds the subgraph and a DequantizeLinear that alone reads it
    (per-tensor, float32 scale) become part of the program, which computes them exactly as
    onnxruntime does (``ops/program.c``; the tests compare both on edge values), unless
    onnxruntime, optimizing the model with ``sess_options`` (default: its defaults), would fuse
    that node with the float op beside it into a quantized kernel of its own (see
    :func:`_kept_by_onnxruntime`). ``nan_policy`` says what such a program does with NaN in
    its float input (see :class:`FloatBoundary`).

    Returns:
        The model (the input itself when nothing compiled), the compiled programs (keep them
        alive with the session) and one report per program.
    """
    by_pid = {p.pid: p for p in programs}
    fed = {i.name for i in model.graph.input}   # overridable defaults are not constants
    inits = {i.name: i for i in model.graph.initializer if i.name not in fed}
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for k, n in enumerate(model.graph.node):
        for t in n.input:
            consumers.setdefault(t, []).append(k)
        for t in n.output:
            producer[t] = k
    outputs = {o.name for o in model.graph.output}
    natives: list[NativeProgram] = []
    reports: list[CompileReport] = []
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    boundaries: dict[int, tuple[Any, Any]] = {}
    beside_float_op: set[int] = set()   # Q/DQ that onnxruntime could fuse with a float op
    for k, node in enumerate(model.graph.node):
        pid = next((a.s.decode() for a in node.attribute if a.name == "program"), None)
        program = by_pid.get(pid) if node.op_type.startswith("Subgraph") else None
        if program is None or program.in_shape is None or program.in_dtype is None:
            continue
        q_node = _lone_link(node.input[0], producer.get(node.input[0]), consumers, outputs)
        reader = consumers.get(node.output[0], [None])[0]
        dq_node = _lone_link(node.output[0], reader, consumers, outputs)
        q = None if q_node is None else _qdq_params(
            model.graph.node[q_node], q_node, "QuantizeLinear", program.in_dtype, inits)
        dq = None if dq_node is None or program.out_dtype is None else _qdq_params(
            model.graph.node[dq_node], dq_node, "DequantizeLinear", program.out_dtype, inits)
        boundaries[k] = (q, dq)
        if q and model.graph.node[q[0]].input[0] in producer:
            beside_float_op.add(q[0])
        if dq and consumers.get(model.graph.node[dq[0]].output[0]):
            beside_float_op.add(dq[0])
    kept = _kept_by_onnxruntime(model, beside_float_op, sess_options) if beside_float_op \
        else set()
    for k, node in enumerate(model.graph.node):
        pid = next((a.s.decode() for a in node.attribute if a.name == "program"), None)
        program = by_pid.get(pid) if node.op_type.startswith("Subgraph") else None
        if program is None:
            continue
        if program.in_shape is None or program.in_dtype is None:
            reports.append(CompileReport(program.name, False,
                                         "the model does not give the input's shape and type",
                                         _names(program)))
            continue
        q, dq = (b if b and (b[0] not in beside_float_op or b[0] in kept) else None
                 for b in boundaries[k])
        result = compile_program(program, program.in_shape, program.in_dtype,
                                 FloatBoundary(q[1] if q else None, dq[1] if dq else None,
                                               nan_policy))
        if isinstance(result, str):
            reports.append(CompileReport(program.name, False, result, _names(program)))
            continue
        natives.append(result)
        reports.append(CompileReport(program.name, True, "", _names(program)))
        inputs = list(model.graph.node[q[0]].input[:1]) if q else list(node.input)
        outs = list(model.graph.node[dq[0]].output) if dq else list(node.output)
        if q:
            dropped.add(q[0])
        if dq:
            dropped.add(dq[0])
        op_type = (f"Program_{_TYPE_SUFFIX[np.dtype(result.in_dtype)]}_"
                   f"{_TYPE_SUFFIX[np.dtype(result.out_dtype)]}")
        replaced[k] = helper.make_node(op_type, inputs, outs, name=node.name,
                                       domain=NATIVE_DOMAIN, handle=result.handle)
    if not replaced:
        return model, natives, reports
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for k, node in enumerate(model.graph.node):
        if k in dropped:
            continue
        out.graph.node.append(replaced.get(k, node))
    out.opset_import.append(helper.make_opsetid(NATIVE_DOMAIN, 1))
    return out, natives, reports


def _native_layer(node: onnx.NodeProto) -> bool:
    """A layer of the domain that a compiled program can run."""
    if node.domain != DOMAIN or node.op_type.startswith("Subgraph"):
        return False
    try:
        return spec_of(node.op_type).name in NATIVE_OPS
    except KernelError:
        return False


def _base_name(op_type: str) -> str:
    try:
        return parse_op_type(op_type)[0]
    except KernelError:
        return op_type


def _op_type(in_dtypes: Sequence[np.dtype], out_dtypes: Sequence[np.dtype]) -> str | None:
    """``Program_<in>_<out>``, or None when the inputs (or outputs) differ in type (the op is
    variadic over one input type and one output type, see ops/ort_op.c)."""
    ins, outs = ({_TYPE_SUFFIX.get(np.dtype(d)) for d in ds} for ds in (in_dtypes, out_dtypes))
    if len(ins) != 1 or len(outs) != 1 or None in ins or None in outs:
        return None
    return f"Program_{ins.pop()}_{outs.pop()}"


@dataclass
class _Island:
    """One island before compilation: its nodes, program and candidate Q/DQ boundary."""

    nodes: list[int]
    program: Program | None
    reason: str = ""
    qs: list[tuple[int, tuple[float, int]] | None] = field(default_factory=list)
    dqs: list[tuple[int, tuple[float, int]] | None] = field(default_factory=list)


def compile_islands(model: onnx.ModelProto, nan_policy: str = "allow", sess_options: Any = None
                    ) -> tuple[onnx.ModelProto, list[NativeProgram], list[CompileReport]]:
    """Compile every NPU island of ``model`` into one C program each and put it in the graph.

    An island is a convex group of connected layers that compiled programs run
    (:func:`~ortnpu.runtime.fusion.find_islands`), however small and however many: the NPU
    pieces between float nodes (a transformer's LayerNorm, a GELU's Erf) each become one
    ``com.ortnpu.native`` node, with as many inputs and outputs as the island reads and gives.
    QuantizeLinear nodes that feed only the island, and DequantizeLinear nodes that alone read
    one of its outputs, become part of the program as in :func:`compile_subgraphs` (all inputs
    or none, all outputs or none: the node takes one input type and gives one output type).
    Islands that do not compile are left as they are (the caller fuses and runs them through
    Python); their report says why. An island whose inputs (or outputs) differ in type gets no
    node and no report here: the caller compiles its runs of one input and one output.

    Returns:
        The model (the input itself when nothing compiled), the compiled programs (keep them
        alive with the session) and one report per island.
    """
    g = model.graph
    fed = {i.name for i in g.input}
    inits = {i.name: i for i in g.initializer if i.name not in fed}
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for k, n in enumerate(g.node):
        for t in node_inputs(n):
            consumers.setdefault(t, []).append(k)
        for t in n.output:
            producer[t] = k
    outputs = {o.name for o in g.output}
    islands: list[_Island] = []
    beside_float_op: set[int] = set()
    for members in find_islands(g, _native_layer):
        inside = set(members)
        nodes = [g.node[k] for k in members]
        produced = {t for n in nodes for t in n.output if t}
        ins = list(dict.fromkeys(t for n in nodes for t in n.input
                                 if t and t not in produced and t not in inits))
        outs = [t for n in nodes for t in n.output if t and (
            t in outputs or any(c not in inside for c in consumers.get(t, [])))]
        if not outs:
            continue   # nothing reads it: onnxruntime drops it
        island = _Island(members, None)
        islands.append(island)
        if not ins:
            island.reason = "the island reads no activation (constants only)"
            continue
        island.program = program_of(model, nodes, ins, outs, inits)
        if island.program is None:
            island.reason = "a layer or constant the compiled programs cannot take"
            continue
        for t, dtype in zip(ins, island.program.in_dtypes, strict=True):
            q = producer.get(t)
            lone = q is not None and t not in outputs and \
                all(c in inside for c in consumers.get(t, []))
            island.qs.append(_qdq_params(g.node[q], q, "QuantizeLinear", dtype, inits)
                             if lone and dtype is not None else None)
        for t, dtype in zip(outs, island.program.out_dtypes, strict=True):
            readers = [c for c in consumers.get(t, []) if c not in inside]
            lone = len(readers) == 1 and t not in outputs   # layers inside may read it too
            island.dqs.append(_qdq_params(g.node[readers[0]], readers[0], "DequantizeLinear",
                                          dtype, inits) if lone and dtype is not None else None)
        for q in island.qs:
            if q and g.node[q[0]].input[0] in producer:
                beside_float_op.add(q[0])
        for dq in island.dqs:
            if dq and consumers.get(g.node[dq[0]].output[0]):
                beside_float_op.add(dq[0])
    kept = _kept_by_onnxruntime(model, beside_float_op, sess_options) if beside_float_op \
        else set()
    natives: list[NativeProgram] = []
    reports: list[CompileReport] = []
    for n in g.node:   # layers of the domain that no program can run say so
        if n.domain == DOMAIN and not n.op_type.startswith("Subgraph") and \
                not _native_layer(n):
            reports.append(CompileReport(n.name, False, "layers without a C program step: "
                                         f"{_base_name(n.op_type)}", (n.name,)))
    dropped: set[int] = set()
    placed: dict[int, onnx.NodeProto] = {}   # the program's node, at its island's last node
    for island in islands:
        program = island.program
        layers = tuple(g.node[k].name for k in island.nodes)
        if program is None:
            reports.append(CompileReport(g.node[island.nodes[0]].name, False, island.reason,
                                         tuple(g.node[k].name for k in island.nodes)))
            continue
        usable = [b if b and (b[0] not in beside_float_op or b[0] in kept) else None
                  for b in (*island.qs, *island.dqs)]
        qs, dqs = usable[:len(island.qs)], usable[len(island.qs):]
        qs = qs if all(qs) else [None] * len(qs)      # all inputs float, or none
        dqs = dqs if all(dqs) else [None] * len(dqs)
        f32 = np.dtype(np.float32)
        op_type = _op_type([f32 if q else d for q, d in zip(qs, program.in_dtypes, strict=True)],
                           [f32 if dq else d
                            for dq, d in zip(dqs, program.out_dtypes, strict=True)])
        if op_type is None:   # (the node takes one input type and gives one output type):
            continue          # its runs of one input and one output compile on their own
        boundary = FloatBoundary(nan_policy=nan_policy,
                                 inputs=tuple(q[1] if q else None for q in qs),
                                 outputs=tuple(dq[1] if dq else None for dq in dqs))
        result = compile_program(program, boundary=boundary)
        if isinstance(result, str):
            reports.append(CompileReport(program.name, False, result, layers))
            continue
        natives.append(result)
        reports.append(CompileReport(program.name, True, "", layers))
        node_ins = [g.node[q[0]].input[0] if q else t
                    for q, t in zip(qs, program.inputs, strict=True)]
        node_outs = [g.node[dq[0]].output[0] if dq else t
                     for dq, t in zip(dqs, program.outputs, strict=True)]
        dropped.update(island.nodes)
        dropped.update(b[0] for b in (*qs, *dqs) if b)
        placed[island.nodes[-1]] = helper.make_node(
            op_type, node_ins, node_outs, name=program.name, domain=NATIVE_DOMAIN,
            handle=result.handle)
    if not natives:
        return model, natives, reports
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for k, node in enumerate(g.node):
        if k in placed:
            out.graph.node.append(placed[k])
        elif k not in dropped:
            out.graph.node.append(node)
    order = topological_order(out.graph)   # a program's outputs may be read before its
    if order is not None:                  # island's last node stood
        nodes = [out.graph.node[k] for k in order]
        out.graph.ClearField("node")
        out.graph.node.extend(nodes)
    used = {t for n in out.graph.node for t in node_inputs(n)}
    keep = [i for i in g.initializer if i.name in used or i.name in fed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    out.opset_import.append(helper.make_opsetid(NATIVE_DOMAIN, 1))
    return out, natives, reports


__all__ = ["NATIVE_DOMAIN", "NATIVE_OPS", "CompileReport", "FloatBoundary", "NativeProgram",
           "compile_islands", "compile_program", "compile_subgraphs", "library_path"]
