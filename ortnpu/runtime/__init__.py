"""Running NPU graphs in onnxruntime: session options and a drop-in InferenceSession."""

from ortnpu.runtime.session import InferenceSession, pending_errors, session_options

__all__ = ["InferenceSession", "pending_errors", "session_options"]
