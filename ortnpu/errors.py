"""The one error hierarchy of ortnpu.

Every error the public API or the CLI raises for bad input is an :class:`OrtNpuError`.
Messages name the file, node, tensor or key at fault and say what to do about it.
"""

from __future__ import annotations


class OrtNpuError(Exception):
    """Base class of every error ortnpu raises on purpose."""


class ModelError(OrtNpuError):
    """A model file or graph is unreadable, malformed or not what the step needs."""


class TargetError(OrtNpuError):
    """A target file or preset is malformed, unknown or asks for impossible arithmetic."""


class UnsupportedError(OrtNpuError):
    """The request is well formed but the target or ortnpu cannot carry it out."""


class CalibrationError(OrtNpuError):
    """Calibration data is empty, malformed or does not match the model."""


class KernelError(OrtNpuError):
    """An integer kernel was given inputs or parameters it cannot compute on."""


class EpUnavailableError(UnsupportedError):
    """The running onnxruntime (or this build of ortnpu) cannot load the ortnpu EP."""


def first_line(exc: BaseException) -> str:
    """The first line of another library's error, for one-line messages (its type if empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "CalibrationError",
    "EpUnavailableError",
    "KernelError",
    "ModelError",
    "OrtNpuError",
    "TargetError",
    "UnsupportedError",
    "first_line",
]
