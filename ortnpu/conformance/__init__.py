"""The conformance kit: test vectors of the ``com.ortnpu`` ops and a bit-exact runner.

Vectors are in onnx's backend-test layout (see docs/conformance.md), so another implementation of
the ops (exported standard graphs, C kernels, a hardware runtime) is checked by pointing any ONNX
runner at the folder::

    from ortnpu import conformance
    conformance.generate("vectors", ["tflite-int8"])
    report = conformance.run_cases("vectors", runner="ortnpu")
    print("\\n".join(report.lines()))
"""

from ortnpu.conformance.case import Case, StoredCase, Tensor, find_cases, read_case
from ortnpu.conformance.profile import Profile, profile_of, rule_profile
from ortnpu.conformance.runner import (
    RUNNERS,
    CaseResult,
    Report,
    Runner,
    compare,
    onnxruntime_runner,
    ortnpu_runner,
    resolve_runner,
    run_case,
    run_cases,
)
from ortnpu.conformance.suites import build_suite, generate, select, suite_names

__all__ = [
    "RUNNERS",
    "Case",
    "CaseResult",
    "Profile",
    "Report",
    "Runner",
    "StoredCase",
    "Tensor",
    "build_suite",
    "compare",
    "find_cases",
    "generate",
    "onnxruntime_runner",
    "ortnpu_runner",
    "profile_of",
    "read_case",
    "resolve_runner",
    "rule_profile",
    "run_case",
    "run_cases",
    "select",
    "suite_names",
]
