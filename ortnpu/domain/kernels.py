"""Kernel dispatch: the C kernels of ``ops/`` when built, the numpy references otherwise.

Both paths are bit-identical (the test suite runs the conformance kit through both). The choice
can be forced with the environment variable ``ORTNPU_KERNELS=numpy|c|auto`` (default auto) or
:func:`set_mode`, e.g. to compare the paths in one process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu.domain.spec import OpSpec
from ortnpu.errors import KernelError

_MODES = ("auto", "c", "numpy")
_mode = os.environ.get("ORTNPU_KERNELS", "auto").strip().lower() or "auto"


def _native() -> Any:
    """The compiled kernels module, or None when it is not built."""
    try:
        from ortnpu.domain import native
    except ImportError:
        return None
    return native if getattr(native, "AVAILABLE", False) else None


def set_mode(mode: str) -> None:
    """Force ``"c"`` or ``"numpy"`` kernels, or ``"auto"`` (C where built)."""
    global _mode
    if mode not in _MODES:
        raise KernelError(f"kernel mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if mode == "c" and _native() is None:
        raise KernelError("the C kernels are not built in this installation; reinstall ortnpu "
                          "with a C compiler available (pip install .) or use mode 'numpy'")
    _mode = mode


def get_mode() -> str:
    """The current mode (``auto``, ``c`` or ``numpy``)."""
    return _mode


def describe() -> str:
    """One line saying which kernels run, for ``ortnpu info`` and the demo."""
    native = _native()
    if native is None:
        return "numpy reference kernels (C kernels not built: no C compiler at install time?)"
    ops = ", ".join(sorted(native.KERNELS))
    where = "numpy reference kernels forced" if _mode == "numpy" else "C kernels"
    return f"{where}; C kernels built for {ops} ({native.describe()})"


def run_unchecked(spec: type[OpSpec], arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
    """Run inputs whose exact validation verdict is cached (see ``registry``)."""
    native = _native() if _mode != "numpy" else None
    if native is not None and spec.name in native.KERNELS:
        return native.KERNELS[spec.name](arrays, attrs, out_dtype)
    return spec.reference(arrays, attrs, out_dtype)


def run(spec: type[OpSpec], arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
        out_dtype: np.dtype, where: str = "") -> np.ndarray:
    """Validate the inputs and run the op on the selected kernel path."""
    spec.validate(arrays, attrs, out_dtype, where)
    return run_unchecked(spec, arrays, attrs, out_dtype)
