"""The ``com.ortnpu`` domain as native onnxruntime custom ops (``ops/domain_op.c``).

Why not onnxruntime-extensions' Python custom ops: their C++ kernel turns every declared string
attribute into a Python ``str`` before any hook runs, so a node whose ``rounding`` or
``node_name`` is not valid UTF-8 aborts the process, and they cannot return an error status
(a failed kernel leaves an empty output). Here onnxruntime sees one plain C custom op per
overload of the domain (same op types, attributes and element-type overloads, so saved models
do not change, and onnxruntime still refuses other element types at load); the Python kernels
stay where they are and are reached through cffi callbacks:

* ``ortnpu_py_kernel_create`` (once per node, when onnxruntime loads the model) gets every
  declared attribute as raw bytes or numbers, validates it (kind, UTF-8, range) and answers a
  kernel id, or an error that onnxruntime raises from ``InferenceSession(...)``;
* ``ortnpu_py_kernel_compute`` (each run) wraps the inputs in read-only numpy arrays without a
  copy, runs the kernel, writes the output through ``ortnpu_domain_output`` and turns any
  failure into an error text, which ``domain_op.c`` returns as an ``OrtStatus``: onnxruntime
  raises it from ``run`` in every execution mode.

The callbacks catch everything (a Python exception must never cross into onnxruntime); cffi
itself answers 0, an error, if one raised anyway. The error is also kept for
:func:`ortnpu.domain.registry.take_errors`, so that ``ortnpu.InferenceSession`` raises the
original :class:`~ortnpu.errors.KernelError`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ortnpu.domain import native
from ortnpu.domain.spec import OpSpec
from ortnpu.errors import KernelError, OrtNpuError

#: ONNX element type codes of the types our ops take and give.
ONNX_CODE = {"int8": 3, "uint8": 2, "int16": 5, "int32": 6, "int64": 7, "float32": 1}
_DTYPE_OF_CODE = {code: np.dtype(name) for name, code in ONNX_CODE.items()}
_ATTR_INT, _ATTR_STRING, _ATTR_FLOAT, _ATTR_OTHER = 1, 2, 3, 4


class _Other:
    """An attribute of a type no op declares (a list, tensor, graph, ...)."""


_KIND_CODE = {int: _ATTR_INT, str: _ATTR_STRING, float: _ATTR_FLOAT}


@dataclass(frozen=True)
class _Op:
    """One declared overload."""

    spec: type[OpSpec]
    out_dtype: np.dtype
    op_type: str


@dataclass(frozen=True)
class _Kernel:
    """One node's kernel: its validated attributes, made when onnxruntime loads the model."""

    op: _Op
    attrs: dict[str, Any]
    where: str
    key: tuple      # what the validation cache keys on besides the inputs (see registry)


_ops: list[_Op] = []
_spec_ids: dict[type[OpSpec], int] = {}
_kernels: dict[int, _Kernel] = {}
_ids = itertools.count(1)


def available() -> bool:
    """True when the C module is built with the domain's entry points."""
    return bool(native.AVAILABLE and hasattr(native._native.lib, "ortnpu_domain_op"))


def library_path() -> str:
    """The shared library to register: the C kernels' module (both ortnpu domains)."""
    return str(native._native.__file__)


def add(spec: type[OpSpec], op_type: str, input_types: list[str], out_dtype: np.dtype) -> int:
    """Declare one overload to the C side; its op id. Call before registering the library."""
    ffi, lib = native._native.ffi, native._native.lib
    if spec not in _spec_ids:
        attrs = spec.all_attrs()
        names = [ffi.new("char[]", a.name.encode()) for a in attrs]
        sid = lib.ortnpu_domain_spec(len(attrs), ffi.new("char *[]", names),
                                     ffi.new("int32_t[]", [_KIND_CODE[a.kind] for a in attrs]))
        if sid < 0:
            raise KernelError(f"cannot declare the attributes of {spec.name} to the C module")
        _spec_ids[spec] = sid
    op_id = lib.ortnpu_domain_op(op_type.encode(), _spec_ids[spec], len(input_types),
                                 ffi.new("int32_t[]", [ONNX_CODE[t] for t in input_types]),
                                 ONNX_CODE[np.dtype(out_dtype).name])
    if op_id != len(_ops):
        raise KernelError(f"cannot declare {op_type} to the C module")
    _ops.append(_Op(spec, np.dtype(out_dtype), op_type))
    return op_id


def _write(err: Any, size: int, text: str) -> None:
    """Copy an error text into C's buffer (UTF-8, cut to fit, NUL-terminated)."""
    ffi = native._native.ffi
    data = text.encode("utf-8", "backslashreplace")[:max(size - 1, 0)]
    data = data.decode("utf-8", "ignore").encode()        # never cut inside a character
    ffi.memmove(err, data, len(data))
    err[len(data)] = b"\0"


def _decode(raw: dict[str, Any], spec: type[OpSpec], where: str) -> dict[str, Any]:
    """The attributes as :meth:`OpSpec.full_attrs` takes them; wrong kinds, bytes that are
    not UTF-8 and missing attributes are a :class:`KernelError` naming the attribute.

    A missing attribute is refused, not given its default, as ``load_model`` refuses it: a
    forged Softmax without ``multiplier`` would otherwise compute with 0 on the plain
    onnxruntime path and give a silently wrong result."""
    missing = [a.name for a in spec.all_attrs() if a.name not in raw]
    if missing:
        raise KernelError(f"{where}attribute(s) {missing} are missing; every attribute of a "
                          f"{spec.name} node must be on the node (build nodes with "
                          "ortnpu.domain.make_node)")
    given: dict[str, Any] = {}
    for a in spec.all_attrs():
        value = raw[a.name]
        got = {bytes: "a string", float: "a float", int: "an int"}.get(
            type(value), "a list, tensor or graph")
        if (a.kind is str) != isinstance(value, bytes) or not isinstance(value, (int, bytes)):
            raise KernelError(f"{where}attribute {a.name!r} must be {a.kind.__name__}, got "
                              f"{got}; rebuild the node with ortnpu.domain.make_node")
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise KernelError(f"{where}attribute {a.name!r} is not valid UTF-8 "
                                  f"({exc.reason} at byte {exc.start}: {value[:40]!r}); the "
                                  "model is damaged or hostile: re-export it") from None
        given[a.name] = value
    return given


def _message(exc: BaseException, where: str) -> OrtNpuError:
    from ortnpu.domain.registry import _text

    if isinstance(exc, OrtNpuError):
        return exc
    return KernelError(f"{where}internal kernel error {_text(exc)}")


def _install() -> None:
    """Define the cffi callbacks (once, when the C module is there)."""
    ffi, lib = native._native.ffi, native._native.lib
    unpack, buffer, ndarray = ffi.unpack, ffi.buffer, np.ndarray
    from ortnpu.domain import registry

    @ffi.def_extern()
    def ortnpu_py_kernel_create(op_id: int, n_attrs: int, present: Any, ints: Any, floats: Any,
                                strings: Any, lengths: Any, err: Any, err_size: int) -> int:
        where = ""
        try:
            op = _ops[op_id]
            raw: dict[str, Any] = {}
            for k, a in enumerate(op.spec.all_attrs()[:n_attrs]):
                kind = present[k]
                if kind == _ATTR_INT:
                    raw[a.name] = int(ints[k])
                elif kind == _ATTR_STRING:
                    raw[a.name] = ffi.unpack(strings[k], lengths[k])
                elif kind == _ATTR_FLOAT:
                    raw[a.name] = float(floats[k])
                elif kind == _ATTR_OTHER:
                    raw[a.name] = _Other()
            name = raw.get("node_name", b"")
            name = (name.decode("utf-8", "backslashreplace") if isinstance(name, bytes)
                    else str(name) if isinstance(name, (int, float)) else "?")
            where = f"node {name!r} ({op.op_type}): "
            attrs = op.spec.full_attrs(_decode(raw, op.spec, where), where=where)
            kernel = next(_ids)
            _kernels[kernel] = _Kernel(op, attrs, where, (op_id, tuple(sorted(attrs.items()))))
            return kernel
        except BaseException as exc:  # nothing may cross into onnxruntime
            with contextlib.suppress(BaseException):
                _write(err, err_size, "ortnpu: " + registry._text(_message(exc, where))
                       .partition(": ")[2])
            return 0

    @ffi.def_extern()
    def ortnpu_py_kernel_compute(kernel: int, call: Any, n_inputs: int, data: Any, types: Any,
                                 ranks: Any, dims: Any, nbytes: Any, err: Any,
                                 err_size: int) -> int:
        where = ""
        try:
            k = _kernels[kernel]
            where = k.where
            arrays = []
            pos = 0
            for i in range(n_inputs):
                rank = ranks[i]
                shape = unpack(dims + pos, rank) if rank else ()
                pos += rank
                dtype = _DTYPE_OF_CODE.get(types[i])
                if dtype is None:   # onnxruntime checked the types at load: cannot happen
                    raise KernelError(f"{where}input {i} has ONNX element type {types[i]}")
                size = nbytes[i]
                if size:
                    arr = ndarray(shape, dtype, buffer(data[i], size))
                    arr.setflags(write=False)   # onnxruntime's memory: kernels only read it
                else:
                    arr = np.empty(shape, dtype)
                arrays.append(arr)
            op = k.op
            y = registry.run_validated(op.spec, arrays, k.attrs, op.out_dtype, k.key, where)
            if type(y) is not np.ndarray or y.dtype != op.out_dtype or \
                    not y.flags.c_contiguous:
                y = np.require(y, dtype=op.out_dtype, requirements="C")   # keeps rank 0
            # (cffi turns the shape tuple into a temporary int64_t array)
            if lib.ortnpu_domain_output(call, y.shape, y.ndim, ffi.from_buffer(y), y.nbytes,
                                        err, err_size):
                raise KernelError(f"{where}cannot write the output: "
                                  f"{ffi.string(err).decode('utf-8', 'replace')}")
            return 1
        except BaseException as exc:  # nothing may cross into onnxruntime
            with contextlib.suppress(BaseException):
                error = _message(exc, where)
                registry._record(error)
                _write(err, err_size, "ortnpu: " + registry._text(error).partition(": ")[2])
            return 0

    @ffi.def_extern()
    def ortnpu_py_kernel_destroy(kernel: int) -> None:
        with contextlib.suppress(BaseException):
            _kernels.pop(kernel, None)

    # kernels destroyed while the interpreter finalizes must not call back into it
    atexit.register(lib.ortnpu_domain_python_gone)


if available():
    _install()
