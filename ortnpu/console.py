"""What ortnpu prints besides its results: progress bars and onnxruntime's own log, in one place.

Long steps (calibration, compare, autofix trials, running many samples) show a tqdm bar on
stderr when stderr is a terminal and stay silent in pipes, logs and CI. onnxruntime logs an
error line of its own before raising, and warnings about the graphs ortnpu builds internally;
ortnpu turns every such failure into one clear :class:`~ortnpu.errors.OrtNpuError`, so the
sessions it creates keep onnxruntime quiet unless verbose output is asked for
(``ortnpu --debug`` or :func:`set_verbose`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import onnxruntime as ort

T = TypeVar("T")

#: onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_QUIET = 4
_VERBOSE = 2
_verbose = False


def set_verbose(on: bool) -> None:
    """Let onnxruntime's warnings and errors through (the CLI's ``--debug``)."""
    global _verbose
    _verbose = bool(on)
    ort.set_default_logger_severity(log_severity())


def log_severity() -> int:
    """The onnxruntime log severity of the sessions ortnpu creates."""
    return _VERBOSE if _verbose else _QUIET


def quiet_session_options() -> ort.SessionOptions:
    """Fresh options for a session ortnpu creates for itself (float reference, probes, trials).

    Failures are raised as ortnpu errors, so onnxruntime's log lines would only repeat them in
    another format on the console.
    """
    so = ort.SessionOptions()
    so.log_severity_level = log_severity()
    return so


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """``items`` with a progress bar on stderr when it is a terminal (nothing otherwise).

    Args:
        items: what to iterate over.
        total: the number of items when ``items`` has no length.
        desc: what the bar counts, e.g. ``"compare"``.
        unit: the name of one item.
        enabled: ``False`` turns the bar off (library callers that draw their own).
    """
    if not enabled:
        return iter(items)
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    # disable=None: a bar on a terminal, nothing in logs, pipes and CI
    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=None, leave=False,
                     file=sys.stderr, dynamic_ncols=True))


__all__ = ["log_severity", "progress", "quiet_session_options", "set_verbose"]
