"""ONNX element types by number, for models that may carry numbers onnx does not know.

``onnx.helper``'s lookups raise ``KeyError`` on an unknown element type (a corrupted or future
model); ortnpu must answer with its own error naming the tensor instead (found by the fuzzer:
``scripts/fuzz.py --seed 8``, case 1283).
"""

from __future__ import annotations

import numpy as np
import onnx
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


def dim_size(dim: onnx.TensorShapeProto.Dimension) -> int | None:
    """A dimension's fixed size, or None when it is unknown.

    Unknown is a ``dim_param``, an empty dimension, or a non-positive ``dim_value``: Paddle
    (PP-OCR) writes ``dim_value = -1`` for a dynamic size, and reading that -1 as a size made
    a fixed-shape model's outputs contradict shape inference (finding export-ppocr-cls).
    """
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return int(dim.dim_value)
    return None


def dim_sizes(info: onnx.ValueInfoProto) -> list[int | None] | None:
    """Every dimension's :func:`dim_size`, or None when the rank is unknown (or no tensor)."""
    if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
        return None
    return [dim_size(d) for d in info.type.tensor_type.shape.dim]


def clear_unknown_dims(info: onnx.ValueInfoProto, *, keep_params: bool = False) -> int:
    """Make the unknown dimensions of ``info`` empty so shape inference may fill them: every
    non-positive ``dim_value`` (which onnx's inference would compare with the size it infers
    and refuse), and every ``dim_param`` unless ``keep_params``. Returns how many it cleared."""
    if not info.type.HasField("tensor_type"):
        return 0
    cleared = 0
    for d in info.type.tensor_type.shape.dim:
        if dim_size(d) is None and (d.HasField("dim_value") or
                                    (d.HasField("dim_param") and not keep_params)):
            d.Clear()
            cleared += 1
    return cleared


__all__ = ["clear_unknown_dims", "dim_size", "dim_sizes", "np_dtype", "type_name"]
