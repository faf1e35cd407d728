"""Cross-layer equalization on per-channel targets: on or off, by the model's output.

On per-tensor weights equalization is the classic remedy and always on. On per-channel weights
its effect depends on the network, because there it changes only how each channel of an
activation shares the tensor's 8-bit grid: on MobileNetV2 it moves the depthwise layers'
channels into the range the grid covers well (top-1 agreement with float 75.0 % → 79.8 % on the
accuracy bench's 1 000 disjoint crops), on EfficientNet-Lite0 it spreads them badly (91.2 % →
84.8 %). Neither the weights nor the ranges alone say which; the quantized model's output does,
as for ``auto``'s ranges (:mod:`ortnpu.quant.range_choice`): :func:`choose_equalization`
quantizes both ways and keeps the graph whose outputs on the calibration data are closer to the
float model's (worst output's SQNR, over up to :data:`SAMPLES` samples). Measured on the two
networks: MobileNetV2 18.85 against 17.78 dB (kept equalized), EfficientNet-Lite0 25.32 against
24.87 dB (kept plain), the right pick for both (docs/measurements.md). The equalized candidate
also scales the residual streams (``QuantConfig.equalize_streams``): MobileNetV2 20.33 dB, kept
(81.6 % agreement), EfficientNet-Lite0 25.14 dB, not kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu import console
from ortnpu.errors import first_line
from ortnpu.quant.calibrate import CalibrationData
from ortnpu.quant.range_choice import calibration_batch, calibration_feeds, worst_sqnr

#: calibration samples the two graphs are scored on (at least one batch)
SAMPLES = 64


@dataclass(frozen=True)
class EqualizeChoice:
    """Whether equalization was kept, with the worst-output SQNR (dB) of each graph."""

    equalized: bool
    plain_db: float
    equalized_db: float
    batches: int
    error: str = ""   # why the two could not be compared (the plain graph stays)

    def note(self) -> str:
        """One sentence for the quantizer's report."""
        if self.error:
            return ("equalization: off (per-channel weights; the equalized graph was not "
                    f"compared: {self.error})")
        kept, other = ((self.equalized_db, self.plain_db) if self.equalized
                       else (self.plain_db, self.equalized_db))
        return (f"equalization: {'on' if self.equalized else 'off'} (output SQNR {kept:.2f} dB "
                f"on {self.batches} calibration batch(es), against {other:.2f} dB "
                f"{'without' if self.equalized else 'with'} it)")


Quantized = tuple[onnx.ModelProto, Any]


def choose_equalization(model: onnx.ModelProto, data: CalibrationData,
                        quantize: Callable[[bool], Quantized], *,
                        ignore: frozenset[str] = frozenset(),
                        samples: int = SAMPLES) -> tuple[EqualizeChoice, onnx.ModelProto, Any]:
    """Quantize ``model`` with and without equalization and keep the closer graph.

    Args:
        model: the float model the caller quantizes (its outputs are the reference).
        data: the calibration data (read again: pass replayable data).
        quantize: quantizes the model with equalization on (True) or off (False), returning
            the NPU graph and its :class:`~ortnpu.quant.QuantizationResult`.
        ignore: inputs of the data to drop (frozen inputs).
        samples: calibration samples to score on.

    Returns:
        What was kept and why, with the kept NPU graph and result.
    """
    from ortnpu.runtime import InferenceSession

    plain = quantize(False)
    feeds = calibration_feeds(model, data, math.ceil(samples / calibration_batch(model)), ignore)
    if not feeds:
        return EqualizeChoice(False, math.nan, math.nan, 0, "no calibration batch"), *plain
    outputs = [o.name for o in model.graph.output]
    try:
        ref = ort.InferenceSession(model.SerializeToString(), console.quiet_session_options(),
                                   providers=["CPUExecutionProvider"])
        reference = [ref.run(outputs, f) for f in feeds]
        plain_db = _score(InferenceSession(plain[0]), outputs, feeds, reference)
        equalized = quantize(True)
        equalized_db = _score(InferenceSession(equalized[0]), outputs, feeds, reference)
    except Exception as exc:  # the choice is optional: the plain graph stands
        # (onnxruntime raises its own types; an equalization the model does not allow is
        # reported, not raised: quantize without it is what the caller asked by default)
        return EqualizeChoice(False, math.nan, math.nan, len(feeds), first_line(exc)), *plain
    if equalized_db > plain_db:
        return EqualizeChoice(True, plain_db, equalized_db, len(feeds)), *equalized
    return EqualizeChoice(False, plain_db, equalized_db, len(feeds)), *plain


def _score(sess: Any, outputs: list[str], feeds: list[dict[str, Any]],
           reference: list[list[np.ndarray]]) -> float:
    return worst_sqnr(reference, [sess.run(outputs, f) for f in feeds])


__all__ = ["SAMPLES", "EqualizeChoice", "choose_equalization"]
