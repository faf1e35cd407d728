"""ortnpu as an onnxruntime plugin execution provider: a QDQ model on the virtual NPU.

Two lines run an unchanged QDQ model in a plain ``onnxruntime.InferenceSession`` with its NPU
part on the target's exact integer arithmetic::

    devices = ortnpu.ep.register()
    so = onnxruntime.SessionOptions()
    so.add_provider_for_devices(devices, {"target": "tflite-int8"})
    sess = onnxruntime.InferenceSession("model_qdq.onnx", so)

The EP claims the node groups ``ortnpu.import_qdq`` puts on the NPU (:mod:`ortnpu.ep.plan`),
compiles each into the same C programs as :class:`ortnpu.InferenceSession`, and leaves the rest
to onnxruntime's CPU EP. :func:`explain` says where each node runs and why. See docs/ep.md.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from ortnpu.ep.plan import NodeReport, Plan
from ortnpu.ep.plugin import EP_NAME, OPTIONS
from ortnpu.errors import EpUnavailableError, ModelError

#: onnxruntime's first version with plugin EP libraries that compile (OrtEp::Compile).
MIN_ORT = (1, 23)
_lock = threading.Lock()
_registered: str | None = None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_runtime() -> None:
    """Raise :class:`EpUnavailableError` when plugin EPs cannot work in this process."""
    import onnxruntime as ort

    from ortnpu.domain import native

    have = _version(ort.__version__)
    if have < MIN_ORT or not hasattr(ort, "register_execution_provider_library") or \
            not hasattr(ort.SessionOptions, "add_provider_for_devices"):
        raise EpUnavailableError(
            f"onnxruntime {ort.__version__} has no plugin execution providers (they need "
            f"onnxruntime >= {'.'.join(map(str, MIN_ORT))}: register_execution_provider_library, "
            "get_ep_devices, SessionOptions.add_provider_for_devices); upgrade onnxruntime, or "
            "run the model with ortnpu.InferenceSession(ortnpu.import_qdq(model))")
    if native._native is None:
        raise EpUnavailableError(f"ortnpu's C module is not built ({native.IMPORT_ERROR}); the "
                                 "EP library is part of it: reinstall ortnpu with a C compiler")


def library_path() -> str:
    """The shared library onnxruntime loads as the EP (ortnpu's C module)."""
    from ortnpu.domain import native

    check_runtime()
    return str(native._native.__file__)


def register() -> list[Any]:
    """Register the ortnpu EP library with onnxruntime (once per process); its devices.

    Returns:
        The ``onnxruntime.OrtEpDevice`` list to pass to
        ``SessionOptions.add_provider_for_devices(devices, {"target": ...})``.

    Raises:
        EpUnavailableError: onnxruntime older than 1.23, or ortnpu's C module not built.
    """
    import onnxruntime as ort

    global _registered
    from ortnpu.domain import registry
    from ortnpu.ep import plugin

    check_runtime()
    registry.ensure_registered()   # the com.ortnpu kernels the compiled groups run
    plugin.install()
    with _lock:
        if _registered is None:
            try:
                ort.register_execution_provider_library(EP_NAME, library_path())
            except Exception as exc:  # onnxruntime raises its own exception types
                raise EpUnavailableError(f"onnxruntime refused the ortnpu EP library: "
                                         f"{exc}") from None
            _registered = EP_NAME
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise EpUnavailableError(f"onnxruntime {ort.__version__} loaded the ortnpu EP library "
                                 "but lists no ortnpu device (its OrtApi is older than the "
                                 f"{'.'.join(map(str, MIN_ORT))} structs the library declares)")
    return devices


def explain(session: Any) -> list[NodeReport]:
    """Every node of the graph the EP was given, with ``NPU``/``CPU`` and each CPU reason.

    Uses the session's graph-assignment info when the session was created with the entry
    ``session.record_ep_graph_assignment_info = 1`` (then the plan whose NPU nodes are the
    session's ortnpu nodes is found); otherwise the plan of the latest graph the EP was given.

    Raises:
        ModelError: no session in this process used the ortnpu EP.
    """
    from ortnpu.ep.plugin import RECENT_PLANS

    plans = list(RECENT_PLANS)
    if not plans:
        raise ModelError("no session in this process has used the ortnpu execution provider")
    try:
        assigned = Counter((n.name, n.op_type)
                           for sub in session.get_provider_graph_assignment_info()
                           if sub.ep_name == EP_NAME for n in sub.get_nodes())
    except Exception:  # the session did not record it
        return list(plans[-1].reports)
    for p in reversed(plans):
        if p.npu_nodes() == assigned:
            return list(p.reports)
    raise ModelError("the session's ortnpu nodes match no plan of the ortnpu EP in this "
                     "process")


def explain_text(reports: list[NodeReport]) -> str:
    """One line per node: device, op type, name and, on the CPU, the reason."""
    lines = []
    for r in reports:
        line = f"{r.device}  {r.op_type:<18} {r.node}"
        if r.device != "NPU":
            line += f"  ({r.reason})"
        lines.append(line)
    return "\n".join(lines)


__all__ = ["EP_NAME", "OPTIONS", "EpUnavailableError", "NodeReport", "Plan", "check_runtime",
           "explain", "explain_text", "library_path", "register"]
