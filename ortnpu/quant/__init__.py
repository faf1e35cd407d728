"""Quantization: calibration, parameter choice, lowering to the ``com.ortnpu`` domain."""

from ortnpu.quant.calibrate import (
    METHODS,
    HistogramCalibrator,
    MinMaxCalibrator,
    calibrate,
    make_calibrator,
)
from ortnpu.quant.params import QuantParams
from ortnpu.quant.quantizer import (
    Placement,
    QuantConfig,
    QuantizationResult,
    QuantPreset,
    quantize,
    read_npu_inputs,
)

__all__ = [
    "METHODS",
    "HistogramCalibrator",
    "MinMaxCalibrator",
    "Placement",
    "QuantConfig",
    "QuantParams",
    "QuantPreset",
    "QuantizationResult",
    "calibrate",
    "make_calibrator",
    "quantize",
    "read_npu_inputs",
]
