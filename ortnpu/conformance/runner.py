"""Run conformance cases through any ONNX runner and compare bit for bit.

A runner is a callable ``run(model_path, inputs) -> outputs``: the default runs the NPU graph in
onnxruntime with ortnpu's ops (:func:`ortnpu_runner`); :func:`onnxruntime_runner` runs plain
onnxruntime (for exported standard graphs); anything else (a hardware runtime, another simulator)
plugs in the same way, also from the command line as ``module:function``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ortnpu.conformance.case import StoredCase, find_cases, read_case
from ortnpu.errors import ModelError, OrtNpuError, UnsupportedError, first_line

Runner = Callable[[Path, Mapping[str, np.ndarray]], Sequence[np.ndarray]]


def ortnpu_runner(model_path: Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run with :class:`ortnpu.InferenceSession` (the simulator; kernel errors are raised)."""
    from ortnpu.runtime import InferenceSession

    return InferenceSession(str(model_path)).run(None, dict(inputs))


def onnxruntime_runner(model_path: Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run with plain onnxruntime, no custom op registered (standard ONNX models only)."""
    import onnxruntime as ort

    from ortnpu.console import quiet_session_options

    so = quiet_session_options()
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(inputs))


RUNNERS: dict[str, Runner] = {"ortnpu": ortnpu_runner, "onnxruntime": onnxruntime_runner}


def resolve_runner(name: str | Runner | None) -> Runner:
    """A runner by name (``ortnpu``, ``onnxruntime``, ``package.module:function``) or as is."""
    if name is None:
        return ortnpu_runner
    if callable(name):
        return name
    if name in RUNNERS:
        return RUNNERS[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise UnsupportedError(f"unknown runner {name!r}; use {', '.join(RUNNERS)} or "
                               "'package.module:function' naming a run(model_path, inputs) "
                               "callable")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnsupportedError(f"runner {name!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise UnsupportedError(f"runner {name!r} is not callable")
    return fn


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case."""

    suite: str
    op: str
    name: str
    passed: bool
    message: str = ""

    @property
    def label(self) -> str:
        """``suite/test_op_case`` (or just the directory name)."""
        base = f"test_{self.op}_{self.name}"
        return f"{self.suite}/{base}" if self.suite else base


@dataclass
class Report:
    """Results of a run, per case; grouped per op for printing."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Number of passing cases."""
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        """Number of failing cases."""
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        """True when at least one case ran and none failed."""
        return bool(self.results) and self.failed == 0

    def by_op(self) -> dict[str, tuple[int, int]]:
        """``op -> (passed, failed)``."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.results:
            p, f = out.get(r.op, (0, 0))
            out[r.op] = (p + r.passed, f + (not r.passed))
        return out

    def lines(self, verbose: bool = False) -> list[str]:
        """Human-readable report; the last line is ``N passed, M failed``."""
        out = []
        for r in self.results:
            if verbose or not r.passed:
                out.append(f"{'PASS' if r.passed else 'FAIL'} {r.label}"
                           + (f": {r.message}" if r.message else ""))
        width = max((len(op) for op in self.by_op()), default=0)
        for op, (p, f) in sorted(self.by_op().items()):
            out.append(f"  {op:<{width}}  {p:4d} passed, {f:3d} failed")
        out.append(f"{self.passed} passed, {self.failed} failed")
        return out


def compare(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> str:
    """Empty string when bit-identical (values, dtype, shape); otherwise what differs."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for k, (want, got) in enumerate(zip(expected, actual, strict=True)):
        got = np.asarray(got)
        if got.dtype != want.dtype:
            return f"output {k} has dtype {got.dtype}, expected {want.dtype}"
        if got.shape != want.shape:
            return f"output {k} has shape {list(got.shape)}, expected {list(want.shape)}"
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            first = tuple(int(i) for i in bad[0])
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64)).max()
            return (f"output {k}: {len(bad)} of {want.size} elements differ (largest by "
                    f"{int(diff)}); first at {list(first)}: got {got[first]}, "
                    f"expected {want[first]}")
    return ""


def run_case(stored: StoredCase, runner: Runner) -> CaseResult:
    """Run one stored case; every error of the runner is a failure, not a crash."""
    try:
        actual = runner(stored.model_path, stored.inputs)
        message = compare(stored.expected, list(actual))
    except OrtNpuError as exc:
        message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a foreign runner may raise anything: report, keep going
        message = f"runner raised {type(exc).__name__}: {first_line(exc)}"
    return CaseResult(stored.suite, stored.op, stored.name, not message, message)


def run_cases(root: str | Path, runner: str | Runner | None = None,
              ops: Sequence[str] | None = None,
              progress: Callable[[CaseResult], None] | None = None) -> Report:
    """Run every case under ``root`` (recursively) and compare bit for bit.

    Args:
        root: a folder of ``test_<op>_<case>`` directories, possibly one level per suite.
        runner: a runner name or callable (default ``ortnpu``).
        ops: only these ops (lower-case op names as in the directory names, any case).
        progress: called with each result as it is known.

    Raises:
        ModelError: ``root`` holds no case.
    """
    fn = resolve_runner(runner)
    root = Path(root)
    folders = find_cases(root, ops)
    if not folders:
        raise ModelError(f"{root}: no conformance case found (expected test_<op>_<case>/"
                         "model.onnx folders; generate them with 'ortnpu conformance --export')")
    report = Report()
    for folder in folders:
        result = run_case(read_case(folder, root), fn)
        report.results.append(result)
        if progress:
            progress(result)
    return report
