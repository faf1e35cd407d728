"""``ortnpu info``: versions, kernel path and targets of this installation."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, the kernel path in use and the targets",
                       description="Show ortnpu's version, whether the C kernels are built, "
                                   "the onnxruntime versions and the preset targets.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    import numpy
    import onnx
    import onnxruntime

    from ortnpu import __version__
    from ortnpu.domain import kernels
    from ortnpu.target import preset_names

    print(f"ortnpu {__version__}")
    print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"onnxruntime-extensions {version('onnxruntime-extensions')}, numpy {numpy.__version__}")
    print(f"kernels: {kernels.describe()}")
    from ortnpu.runtime.native_program import library_path

    lib = library_path() if kernels.get_mode() != "numpy" else None
    print("compiled subgraphs: " + (f"yes, onnxruntime runs them natively ({lib})" if lib else
                                    "no (C kernels not in use): subgraphs run through Python"))
    from ortnpu.domain.registry import uses_native

    print("com.ortnpu ops: " + (
        "ortnpu's own C custom ops (attributes checked at load, kernel errors raised by run)"
        if uses_native() else
        "onnxruntime-extensions Python ops (fallback: C module not built or "
        "ORTNPU_DOMAIN_OPS=python)"))
    print(f"targets: {', '.join(preset_names())} (default tflite-int8)")
    return 0
