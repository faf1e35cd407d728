"""ortnpu: run a neural network as an integer NPU would run it, inside ONNX Runtime.

The public API (stable names) is re-exported here; see docs/guide.md.
"""

from __future__ import annotations

from typing import Any

from ortnpu.errors import (
    CalibrationError,
    KernelError,
    ModelError,
    OrtNpuError,
    TargetError,
    UnsupportedError,
)
from ortnpu.target import Target, load_target

__version__ = "0.1.0"

# Heavier entry points are imported on first use so that `import ortnpu` stays fast.
_LAZY = {
    "optimize": ("ortnpu.passes", "optimize"),
    "evaluate": ("ortnpu.evaluation", "evaluate"),
    "quantize": ("ortnpu.quant", "quantize"),
    "import_qdq": ("ortnpu.quant.qdq_import", "import_qdq"),
    "import_tosa": ("ortnpu.frontends.tosa_import", "import_tosa"),
    "autofix": ("ortnpu.quant.autofix", "autofix"),
    "compare": ("ortnpu.comparison", "compare"),
    "evaluate_accuracy": ("ortnpu.accuracy", "evaluate_accuracy"),
    "export": ("ortnpu.exporters", "export"),
    "InferenceSession": ("ortnpu.runtime", "InferenceSession"),
    "session_options": ("ortnpu.runtime", "session_options"),
    "from_torch": ("ortnpu.frontends.torch_export", "from_torch"),
}


#: Subpackages reachable as attributes after a plain ``import ortnpu`` (``ortnpu.ep.register()``).
_LAZY_MODULES = ("ep",)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"ortnpu.{name}")
    raise AttributeError(f"module 'ortnpu' has no attribute {name!r}")


__all__ = [
    "CalibrationError",
    "InferenceSession",
    "KernelError",
    "ModelError",
    "OrtNpuError",
    "Target",
    "TargetError",
    "UnsupportedError",
    "__version__",
    "autofix",
    "compare",
    "evaluate",
    "evaluate_accuracy",
    "export",
    "from_torch",
    "import_qdq",
    "import_tosa",
    "load_target",
    "optimize",
    "quantize",
    "session_options",
]
