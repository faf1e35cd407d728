"""ONNX element types by number, for models that may carry numbers onnx does not know.

``onnx.helper``'s lookups raise ``KeyError`` on an unknown element type (a corrupted or future
model); ortnpu must answer with its own error naming the tensor instead (found by the fuzzer:
``scripts/fuzz.py --seed 8``, case 1283).
"""

from __future__ import annotations

import numpy as np
from onnx import helper


def np_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type, or None when onnx does not know the number."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, ValueError, TypeError):
        return None


def type_name(data_type: int) -> str:
    """``FLOAT``, ``INT8``, ... or ``unknown element type N``."""
    try:
        return helper.tensor_dtype_to_string(data_type).removeprefix("TensorProto.")
    except (KeyError, ValueError, TypeError):
        return f"unknown element type {data_type}"


__all__ = ["np_dtype", "type_name"]
