"""Quantization: calibration, parameter choice, lowering to the ``com.ortnpu`` domain."""

from ortnpu.quant.calibrate import MinMaxCalibrator, calibrate
from ortnpu.quant.params import QuantParams
from ortnpu.quant.quantizer import Placement, QuantizationResult, quantize

__all__ = [
    "MinMaxCalibrator",
    "Placement",
    "QuantParams",
    "QuantizationResult",
    "calibrate",
    "quantize",
]
