"""Session options with the domain registered, and a drop-in ``InferenceSession``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.domain import registry
from ortnpu.errors import KernelError, ModelError, OrtNpuError

_NP_OF_ORT = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
    "tensor(float16)": np.float16,
}


def session_options(intra_op_num_threads: int | None = None,
                    base: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """Return ``onnxruntime.SessionOptions`` that can run NPU graphs.

    Plain ``onnxruntime.InferenceSession(path, ortnpu.session_options())`` then runs a model with
    ``com.ortnpu`` nodes. A kernel error cannot be raised through onnxruntime without aborting the
    process, so such a session returns an empty output and logs the error; call
    :func:`pending_errors` after ``run`` or use :class:`InferenceSession`, which raises it.

    Args:
        intra_op_num_threads: threads of onnxruntime's own kernels (and of ours).
        base: options to extend instead of fresh ones.
    """
    import onnxruntime_extensions

    registry.ensure_registered()
    so = base or ort.SessionOptions()
    so.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    if intra_op_num_threads is not None:
        so.intra_op_num_threads = int(intra_op_num_threads)
    so.log_severity_level = 3  # our empty-output error path makes onnxruntime warn; keep it quiet
    return so


def pending_errors() -> list[OrtNpuError]:
    """Kernel errors recorded on this thread since the last call (plain onnxruntime sessions)."""
    return registry.take_errors()


def _model_bytes(model: onnx.ModelProto | str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString(), model.graph.name or "<model>"
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<bytes>"
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model: {exc.strerror or exc}") from None


class InferenceSession:
    """Drop-in for ``onnxruntime.InferenceSession`` that runs NPU graphs and raises errors.

    Args:
        model: an NPU graph (or any ONNX model) as ``ModelProto``, bytes or a path.
        sess_options: options to extend; the domain is registered on them.
        providers: onnxruntime providers (default CPU).
        intra_op_num_threads: convenience for the thread count.
    """

    def __init__(self, model: onnx.ModelProto | str | os.PathLike | bytes,
                 sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None) -> None:
        data, self.model_name = _model_bytes(model)
        opts = session_options(intra_op_num_threads, base=sess_options)
        try:
            self._sess = ort.InferenceSession(data, opts,
                                              providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.model_name}: onnxruntime cannot load the model: "
                             f"{_first_line(exc)}") from None
        self._inputs = {i.name: i for i in self._sess.get_inputs()}

    # -- the onnxruntime surface -------------------------------------------------------------
    def get_inputs(self) -> list[Any]:
        """Input metadata (as onnxruntime's ``NodeArg``)."""
        return self._sess.get_inputs()

    def get_outputs(self) -> list[Any]:
        """Output metadata (as onnxruntime's ``NodeArg``)."""
        return self._sess.get_outputs()

    def get_modelmeta(self) -> Any:
        """Model metadata; ``custom_metadata_map`` holds the target of an NPU graph."""
        return self._sess.get_modelmeta()

    def get_providers(self) -> list[str]:
        """Execution providers in use."""
        return self._sess.get_providers()

    @property
    def providers(self) -> list[str]:
        """Execution providers in use."""
        return self._sess.get_providers()

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        """Run like onnxruntime; kernel errors are raised as :class:`KernelError`.

        Raises:
            ModelError: the feed does not match the model's inputs.
            KernelError: an integer kernel refused its inputs (names the node).
        """
        feed = self._check_feed(input_feed)
        registry.take_errors()
        try:
            result = self._sess.run(list(output_names) if output_names else None, feed,
                                    run_options)
        except Exception as exc:
            errors = registry.take_errors()
            if errors:
                raise errors[0] from None
            raise ModelError(f"{self.model_name}: onnxruntime failed to run: "
                             f"{_first_line(exc)}") from None
        errors = registry.take_errors()
        if errors:
            raise errors[0]
        return result

    def _check_feed(self, input_feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(input_feed, Mapping):
            raise ModelError(f"{self.model_name}: the input feed must be a dict of name -> array")
        unknown = sorted(set(input_feed) - set(self._inputs))
        if unknown:
            raise ModelError(f"{self.model_name}: unknown input(s) {unknown}; the model's inputs "
                             f"are {sorted(self._inputs)}")
        missing = sorted(set(self._inputs) - set(input_feed))
        if missing:
            raise ModelError(f"{self.model_name}: missing input(s) {missing}")
        feed = {}
        for name, value in input_feed.items():
            info = self._inputs[name]
            want = _NP_OF_ORT.get(info.type)
            arr = np.asarray(value)
            if want is not None and arr.dtype != want:
                raise ModelError(f"{self.model_name}: input {name!r} has dtype {arr.dtype}, the "
                                 f"model expects {np.dtype(want)}; convert it with "
                                 f".astype(np.{np.dtype(want).name})")
            shape = info.shape
            if shape is not None and len(shape) != arr.ndim:
                raise ModelError(f"{self.model_name}: input {name!r} has rank {arr.ndim} "
                                 f"(shape {list(arr.shape)}), the model expects rank "
                                 f"{len(shape)} ({shape})")
            for k, (d, n) in enumerate(zip(shape or [], arr.shape, strict=False)):
                if isinstance(d, int) and d != n:
                    raise ModelError(f"{self.model_name}: input {name!r} dimension {k} is {n}, "
                                     f"the model expects {d} (shape {shape})")
            feed[name] = arr
        return feed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["InferenceSession", "KernelError", "pending_errors", "session_options"]
