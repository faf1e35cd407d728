"""onnxruntime's own ``quantize_static``, as the baseline and as a source of QDQ models.

The bench compares ortnpu's default against it, the QDQ import tests and the plugin EP feed its
output to ``import_qdq``, and the fuzzer mutates it. All of them want the same call: the
optimized float model, calibration samples fed one by one, QDQ with per-channel symmetric int8
weights and asymmetric activations (onnxruntime's defaults, spelled out so that a change of
default upstream cannot silently change our baseline).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx


class FeedReader:
    """A ``CalibrationDataReader`` over ready feeds (onnxruntime duck-types the interface)."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        return None if feed is None else dict(feed)


def sample_feeds(name: str, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One feed per sample of ``x`` (batch 1 each), for a model with one input ``name``."""
    return [{name: x[i:i + 1]} for i in range(len(x))]


def quantize_with_onnxruntime(model: onnx.ModelProto,
                              feeds: Iterable[Mapping[str, np.ndarray]], *,
                              activation_type: str = "QInt8", quant_format: str = "QDQ",
                              calibrate_method: str = "MinMax",
                              per_channel: bool = True,
                              reduce_range: bool = False) -> onnx.ModelProto:
    """``model`` through ``onnxruntime.quantization.quantize_static``; the quantized model.

    Args:
        model: the float model (optimize it first: onnxruntime does not fold BatchNorm).
        feeds: calibration feeds, one dict of input arrays each.
        activation_type: ``QuantType`` member name for activations (``QInt8``, ``QUInt8``,
            ``QInt16``...); weights are always ``QInt8``.
        quant_format: ``QuantFormat`` member name (``QDQ`` or ``QOperator``).
        calibrate_method: ``CalibrationMethod`` member name.
        per_channel: per-channel weights (onnxruntime's best int8 setting).
        reduce_range: 7-bit weights, onnxruntime's advice for x86 CPUs without VNNI (its u8 x s8
            kernels there add product pairs in a saturating int16; 7 bits cannot saturate).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        onnx.save(model, str(src))
        quantize_static(str(src), str(dst), FeedReader(feeds),
                        quant_format=getattr(QuantFormat, quant_format),
                        activation_type=getattr(QuantType, activation_type),
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        reduce_range=reduce_range,
                        calibrate_method=getattr(CalibrationMethod, calibrate_method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return onnx.load(str(dst))
