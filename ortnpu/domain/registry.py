"""Registration of the ``com.ortnpu`` domain with onnxruntime, and the kernel error record.

Two registrations, one table of op specs (``OPS`` plus the fused ``Subgraph``), the same
overloads (one per allowed combination of activation element types, so onnxruntime refuses
other element types at load) and the same saved models:

* **ortnpu's C custom ops** (default when the C module is built; ``native_domain.py``,
  ``ops/domain_op.c``): onnxruntime loads ``_native`` itself; each node's attributes are read as
  bytes and checked when onnxruntime creates its kernel (a non-UTF-8 ``rounding`` or
  ``node_name`` is an error at load, never an abort), and a kernel error is an onnxruntime
  status that ``run`` raises in every execution mode.
* **onnxruntime-extensions' Python custom ops** (fallback without the C module, or with
  ``ORTNPU_DOMAIN_OPS=python``). Its stock hook converts outputs with ``.tolist()`` (about
  1000x slower than handing over the array) and lets exceptions escape, which makes onnxruntime
  call ``std::terminate``; ortnpu installs its own hook (:func:`_hook`), which returns a
  contiguous array of the declared type and catches *everything*, records the error for
  :func:`take_errors` and returns an empty tensor. It cannot protect string attributes:
  onnxruntime-extensions decodes them to ``str`` in C++ before the hook runs, so a non-UTF-8
  one still aborts a plain onnxruntime session there (``ortnpu.InferenceSession`` refuses such
  models at load, in ``ortnpu.validate.load_model``).

Both paths record kernel errors for :func:`take_errors`, so that
:meth:`ortnpu.InferenceSession.run` raises the original error, naming the node.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ortnpu.domain import DOMAIN, OPS, OpSpec, kernels
from ortnpu.errors import KernelError, OrtNpuError

log = logging.getLogger("ortnpu")

_lock = threading.Lock()
_registered = False
_native_domain = False   # registered through ortnpu's C ops (True) or onnxruntime-extensions
_ours: dict[int, tuple[type[OpSpec], np.dtype, str]] = {}
_errors: list[tuple[int, bool, OrtNpuError]] = []   # (thread, on a foreign thread, error)


@dataclass(frozen=True)
class KernelFailure:
    """An error raised inside a kernel during a run."""

    thread_id: int
    error: OrtNpuError


def _type_code(kind: str, pyop: Any) -> int:
    return {
        "int8": pyop.dt_int8, "int32": pyop.dt_int32, "int64": pyop.dt_int64,
        "uint8": pyop.dt_uint8, "int16": pyop.dt_int16,
    }[kind]


def _overloads(spec: type[OpSpec], count: int, out_dtype: np.dtype) -> list[list[str]]:
    """The input element types of each onnxruntime overload of one op type.

    An input declared with onnxruntime-extensions' ``undefined`` type accepts every element
    type, and onnxruntime-extensions aborts the process on those it cannot hand to Python
    (float16, bfloat16, float8, int4, ...). onnxruntime merges the overloads of an op into one
    schema whose inputs accept the union of their types, and it checks node input types against
    that schema when it loads a model: declaring one overload per allowed combination of
    activation types makes onnxruntime refuse any other type at load, with an error naming the
    node, on every path (``ortnpu.InferenceSession`` and plain onnxruntime alike).
    """
    kinds = spec.input_kinds(count)
    combos = itertools.product(*spec.act_types(count, out_dtype))
    result = []
    for combo in combos:
        acts = iter(combo)
        result.append([np.dtype(next(acts)).name if k == "act" else k for k in kinds])
    return result


def _attr_code(kind: type, pyop: Any) -> int:
    return {int: pyop.dt_int64, float: pyop.dt_float, str: pyop.dt_string}[kind]


def _hook(k_id: int, feed: Any, attributes: Any) -> tuple:
    """Run one custom-op invocation (onnxruntime-extensions fallback); never raise."""
    entry = _ours.get(k_id)
    if entry is None:
        return _foreign(k_id, feed, attributes)
    spec, out_dtype, op_type = entry
    name = ""
    try:
        arrays = [np.asarray(f) for f in feed]
        prefix = (k_id, tuple(sorted(attributes.items())))
        attrs = _validated.get(_validation_key(prefix, arrays) or ())
        where = ""
        if attrs is None:
            name = str(attributes.get("node_name", "")) if hasattr(attributes, "get") else ""
            where = f"node {name!r} ({op_type}): "
            attrs = spec.full_attrs(dict(attributes), where=where)
        y = run_validated(spec, arrays, attrs, out_dtype, prefix, where)
        y = np.require(y, dtype=out_dtype, requirements="C")   # keeps rank 0 (no [1])
        return (k_id, y.shape, y)
    except BaseException as exc:
        if not isinstance(exc, OrtNpuError):
            exc = KernelError(f"node {name!r} ({op_type}): internal kernel error "
                              f"{_text(exc)}")
        _record(exc)
        with contextlib.suppress(BaseException):  # nor may a logging handler that raises
            log.error("ortnpu kernel failed, output left empty: %s", _text(exc))
        return (k_id, (0,), np.zeros((0,), dtype=out_dtype))


def run_validated(spec: type[OpSpec], arrays: list[np.ndarray], attrs: dict[str, Any],
                  out_dtype: np.dtype, prefix: tuple, where: str) -> np.ndarray:
    """Run a kernel, validating its inputs unless the same validation already passed.

    ``prefix`` identifies the op and its attribute values (see :func:`_validation_key`).
    """
    key = _validation_key(prefix, arrays)
    if key is not None and key in _validated:
        return kernels.run_unchecked(spec, arrays, attrs, out_dtype)
    y = kernels.run(spec, arrays, attrs, out_dtype, where=where)
    if key is not None:
        with _lock:
            if len(_validated) > 4096:
                _validated.clear()
            _validated[key] = attrs
    return y


def _text(exc: BaseException) -> str:
    """``Type: message`` of an exception, even when its ``__str__`` raises (an exception that
    escaped the hook would abort the process)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:
        return f"{type(exc).__name__} (its message cannot be shown)"


#: Inputs that passed validation, keyed by everything validation reads (see below).
_validated: dict[tuple, dict[str, Any]] = {}
_HASHED_LIMIT = 8192


def _validation_key(prefix: tuple, arrays: list[np.ndarray]) -> tuple | None:
    """A key covering everything an op's validation depends on, or None when too costly.

    Validation reads attribute values, every input's shape and dtype, and the values of the
    32/64-bit parameter inputs (multipliers, shifts, biases, shapes, pads). Activation and weight
    values never matter for safety. Caching the verdict saves most of the per-call Python cost of
    the hook; a miss (new shapes or parameters) validates in full.
    """
    parts: list[Any] = [prefix]
    for a in arrays:
        if a.dtype.itemsize >= 4:
            if a.size > _HASHED_LIMIT:
                return None
            parts.append((a.shape, a.dtype.num, a.tobytes()))
        else:
            parts.append((a.shape, a.dtype.num))
    return tuple(parts)


#: The hook another library installed (onnxruntime-extensions' stock one), for its own ops.
_foreign_hook: Any = None
_pydll: Any = None
_keep: list[Any] = []   # registered op definitions must outlive the process's sessions


def _foreign(k_id: int, feed: Any, attributes: Any) -> tuple:
    """Python ops that are not ours go to the hook their library installed, made safe."""
    try:
        if _foreign_hook is None:
            raise KernelError(f"no handler for python custom op id {k_id}")
        return _foreign_hook(k_id, feed, attributes)
    except BaseException as exc:
        _record(KernelError(f"python custom op failed: {_text(exc)}"))
        return (k_id, (0,), np.zeros((0,), np.float32))


def _record(error: OrtNpuError) -> None:
    """Keep a kernel error for the thread that started the run.

    onnxruntime runs a kernel in the thread that called ``run`` (sequential execution), or on
    one of its own pool threads (``ExecutionMode.ORT_PARALLEL``), which Python sees as a
    "dummy" thread. No calling thread can be named for the latter: such errors are marked as
    orphans, which :func:`take_errors` also hands out on request (``pending_errors``) instead
    of losing them. ``ortnpu.InferenceSession`` runs graphs with Python kernels sequentially,
    so their errors carry the calling thread's id even when that thread is not Python's.
    """
    foreign = isinstance(threading.current_thread(), threading._DummyThread)
    with _lock:
        _errors.append((threading.get_ident(), foreign, error))
        if len(_errors) > 1000:
            del _errors[:500]


def _load_pydll() -> Any:
    """onnxruntime-extensions' native module, loaded without the package's ``__init__``.

    The package's ``__init__`` imports torch, transformers and more when they are installed
    (seconds, and a broken torch breaks the import); ortnpu needs only the native module that
    defines Python custom ops and the library path to register with onnxruntime.
    """
    import importlib.util
    import os
    import sys

    name = "onnxruntime_extensions._extensions_pydll"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or spec.origin is None:
        raise KernelError("onnxruntime-extensions is not installed: pip install "
                          "onnxruntime-extensions")
    folder = os.path.dirname(spec.origin)
    files = [f for f in os.listdir(folder)
             if f.startswith("_extensions_pydll") and f.endswith((".so", ".pyd", ".dylib"))]
    if not files:
        raise KernelError(f"onnxruntime-extensions at {folder} has no _extensions_pydll module")
    mspec = importlib.util.spec_from_file_location(name, os.path.join(folder, files[0]))
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def library_path() -> str:
    """Path of the custom-op library to pass to ``SessionOptions.register_custom_ops_library``:
    ortnpu's C module (both ``com.ortnpu`` and ``com.ortnpu.native``) when it is built and in
    use, onnxruntime-extensions' otherwise (see :func:`uses_native`)."""
    ensure_registered()
    if _native_domain:
        from ortnpu.domain import native_domain

        return native_domain.library_path()
    return str(_pydll.__file__)


def uses_native() -> bool:
    """True when the domain is registered through ortnpu's own C ops (``domain_op.c``); False
    on the onnxruntime-extensions fallback (C module not built, or ``ORTNPU_DOMAIN_OPS=python``).
    """
    ensure_registered()
    return _native_domain


def _remember_foreign(hook: Any) -> None:
    """Stands in for ``PyCustomOpDef.install_hooker`` after ortnpu installed its hook.

    onnxruntime-extensions installs its stock hook when its package is imported; if that
    happens after ortnpu registered, the stock hook would replace ours and abort the process on
    our ops. Instead it becomes the handler of the ops that are not ours.
    """
    global _foreign_hook
    _foreign_hook = hook


def ensure_registered() -> None:
    """Register every op type of the domain once per process and install the hook."""
    global _registered, _pydll, _foreign_hook, _native_domain
    with _lock:
        if _registered:
            return
        import os
        import sys

        from ortnpu.runtime.fusion import Subgraph

        choice = os.environ.get("ORTNPU_DOMAIN_OPS", "auto").strip().lower() or "auto"
        if choice not in ("auto", "native", "python"):
            raise KernelError(f"ORTNPU_DOMAIN_OPS must be auto, native or python, got {choice!r}")
        from ortnpu.domain import native_domain

        if choice != "python" and native_domain.available():
            for spec in (*OPS, Subgraph):
                for op_type, out_dtype, count in spec.op_types():
                    for input_types in _overloads(spec, count, out_dtype):
                        op_id = native_domain.add(spec, op_type, input_types, out_dtype)
                        _ours[op_id] = (spec, out_dtype, op_type)
            _native_domain = True
            _registered = True
            return
        if choice == "native":
            raise KernelError("ORTNPU_DOMAIN_OPS=native, but the C module is not built: "
                              "reinstall ortnpu with a C compiler available")
        _pydll = _load_pydll()
        pyop = _pydll.PyCustomOpDef
        for spec in (*OPS, Subgraph):
            for op_type, out_dtype, count in spec.op_types():
                for input_types in _overloads(spec, count, out_dtype):
                    definition = pyop()
                    definition.op_type = f"{DOMAIN}::{op_type}"
                    definition.obj_id = id(definition)
                    definition.input_types = [_type_code(k, pyop) for k in input_types]
                    definition.output_types = [_type_code(np.dtype(out_dtype).name, pyop)]
                    definition.attrs = {a.name: _attr_code(a.kind, pyop)
                                        for a in spec.all_attrs()}
                    _pydll.add_custom_op(definition)
                    _keep.append(definition)
                    _ours[id(definition)] = (spec, out_dtype, op_type)
        ocos = sys.modules.get("onnxruntime_extensions._ocos")
        if ocos is not None:
            _foreign_hook = ocos._on_pyop_invocation
        pyop.install_hooker(_hook)
        pyop.install_hooker = staticmethod(_remember_foreign)
        _registered = True


def take_errors(thread_id: int | None = None, orphans: bool = False) -> list[OrtNpuError]:
    """Remove and return the kernel errors recorded for a thread (default: the caller's), and
    with ``orphans`` those recorded on onnxruntime's pool threads (see :func:`_record`)."""
    tid = threading.get_ident() if thread_id is None else thread_id
    with _lock:
        mine = [e for t, foreign, e in _errors if t == tid or (orphans and foreign)]
        _errors[:] = [(t, foreign, e) for t, foreign, e in _errors
                      if not (t == tid or (orphans and foreign))]
    return mine
