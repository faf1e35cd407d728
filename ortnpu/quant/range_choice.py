"""The ``auto`` method's last word: clipped ranges or observed extremes, by the model's output.

``auto`` first picks each activation's range by the squared error it causes *on that tensor*
(:meth:`~ortnpu.quant.calibrate.HistogramCalibrator._auto`): it clips rare large values when
that saves more rounding than it costs. That is the right trade for the tensor, and on
classifiers for the model, but not on every model: on PP-OCRv4's detector the clipped ranges
were only 3–10 % narrower than the extremes, yet its map cosine fell from 0.830 (extremes) to
0.764 on unseen text lines, and from 0.811 to 0.770 on the calibration lines themselves — the
rare large activations are the text. Judging each tensor by the error in the layers that read
it, run alone, did not see it either (0.753, measured). What does see it is the model's own
output. So :func:`choose_range_method` quantizes the model both ways and keeps the one whose
outputs are closer to the float model's on the calibration data (worst output's SQNR), and
says which it kept and why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu import console
from ortnpu.errors import CalibrationError, first_line
from ortnpu.feeds import cast_input, input_specs
from ortnpu.quant.calibrate import CalibrationData, HistogramCalibrator, iter_batches

#: calibration batches the two candidates are scored on
BATCHES = 8


@dataclass(frozen=True)
class RangeChoice:
    """Which ranges ``auto`` kept, with the worst-output SQNR (dB) of each candidate."""

    kept: str            # "clipped" or "extremes"
    clipped_db: float
    extremes_db: float
    batches: int      # calibration batches scored (a fixed-batch model: samples)
    error: str = ""   # why the two could not be compared (the clipped ranges stay)

    def note(self) -> str:
        """One sentence for the quantizer's report."""
        words = {"clipped": "the clipped per-tensor ranges",
                 "extremes": "every tensor's observed extremes"}
        if self.error:
            return (f"calibration auto: {words['clipped']} (not compared with the extremes: "
                    f"{self.error})")
        other = "extremes" if self.kept == "clipped" else "clipped"
        return (f"calibration auto: {words[self.kept]} (output SQNR {self._db(self.kept)} dB on "
                f"{self.batches} calibration batch(es), against {self._db(other)} dB with "
                f"{words[other]})")

    def _db(self, which: str) -> str:
        v = self.clipped_db if which == "clipped" else self.extremes_db
        return "inf" if math.isinf(v) else f"{v:.1f}"


def histogram_of(calibrator: object) -> HistogramCalibrator | None:
    """The ``auto`` histogram calibrator inside ``calibrator`` (bias correction wraps it)."""
    inner = getattr(calibrator, "inner", calibrator)
    if isinstance(inner, HistogramCalibrator) and inner.method == "auto":
        return inner
    return None


#: what :func:`choose_range_method` returns: the choice, and the NPU graph of the kept ranges
#: with its quantizer result (``None`` when it could not compare: quantize goes on itself)
Chosen = tuple[RangeChoice, Any, Any]


def choose_range_method(model: onnx.ModelProto, data: CalibrationData, calibrator: object,
                        quantize: Callable[[], tuple[onnx.ModelProto, Any]], *,
                        ignore: frozenset[str] = frozenset(),
                        batches: int = BATCHES) -> Chosen | None:
    """Keep ``auto``'s clipped ranges or switch every tensor to its extremes, by the output.

    Args:
        model: the float model as calibrated.
        data: the calibration data (read again: pass replayable data).
        calibrator: the filled calibrator; only an ``auto`` histogram one is changed.
        quantize: quantizes ``model`` with ``calibrator`` as it stands (called twice),
            returning the NPU graph and its :class:`~ortnpu.quant.QuantizationResult`.
        ignore: inputs of the data to drop (frozen inputs).
        batches: calibration batches to score on.

    Returns:
        What was kept and why with the kept NPU graph and result (the caller's quantization is
        done), or ``None`` when there was nothing to choose.
    """
    from ortnpu.runtime import InferenceSession

    hist = histogram_of(calibrator)
    if hist is None:
        return None
    feeds = calibration_feeds(model, data, batches, ignore)
    if not feeds:
        return None
    outputs = [o.name for o in model.graph.output]
    try:
        ref_sess = ort.InferenceSession(model.SerializeToString(),
                                        console.quiet_session_options(),
                                        providers=["CPUExecutionProvider"])
        reference = [ref_sess.run(outputs, f) for f in feeds]
    except Exception as exc:  # onnxruntime's own exception types
        raise CalibrationError(f"{model.graph.name}: the float model failed on the calibration "
                               f"data: {first_line(exc)}") from None

    def score() -> tuple[float, onnx.ModelProto, Any]:
        npu, result = quantize()
        sess = InferenceSession(npu)
        return worst_sqnr(reference, [sess.run(outputs, f) for f in feeds]), npu, result

    before = dict(hist.overrides)
    try:
        clipped = score()
        hist.overrides = {**{t: "minmax" for t in hist.hists}, **before}
        extremes = score()
    except Exception as exc:  # the choice is optional: quantize goes on
        # (onnxruntime raises its own types; a graph that cannot run here is quantize's
        # caller's to find, with the clipped ranges as before this check existed)
        hist.overrides = before
        return RangeChoice("clipped", math.nan, math.nan, len(feeds), first_line(exc)), \
            None, None
    if extremes[0] > clipped[0]:
        return RangeChoice("extremes", clipped[0], extremes[0], len(feeds)), *extremes[1:]
    hist.overrides = before
    return RangeChoice("clipped", clipped[0], extremes[0], len(feeds)), *clipped[1:]


def worst_sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """The smallest SQNR (dB) over the outputs, each over all the batches (compare's
    :func:`~ortnpu.comparison.measure`)."""
    from ortnpu.comparison import measure

    def joined(runs: list[list[np.ndarray]], k: int) -> np.ndarray:
        return np.concatenate([np.ravel(run[k]) for run in runs])

    return min(measure(joined(reference, k), joined(got, k), f"output {k}").sqnr_db
               for k in range(len(reference[0])))


def calibration_batch(model: onnx.ModelProto) -> int:
    """Samples per calibration batch the choices score on: the model's fixed batch, else 8."""
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and \
        dims[0].dim_value > 0 else 8


def calibration_feeds(model: onnx.ModelProto, data: CalibrationData, batches: int,
                      ignore: frozenset[str]) -> list[dict[str, Any]]:
    """The first ``batches`` calibration batches (of :func:`calibration_batch` samples), cast
    to the model's input types."""
    specs = {s.name: s for s in input_specs(model)}
    names = list(specs)
    out = []
    for k, feed in enumerate(iter_batches(data, names, calibration_batch(model))):
        if k >= batches:
            break
        out.append({n: cast_input(specs[n], v, f"calibration batch {k}")
                    for n, v in feed.items() if n not in ignore and n in specs})
    return out


def quantize_again(model: onnx.ModelProto, target: Any, config: Any, calibrator: Any,
                   preset: Any) -> Callable[[], tuple[onnx.ModelProto, Any]]:
    """A :func:`~ortnpu.quant.quantizer.quantize` of the already prepared (optimized,
    equalized) ``model`` with ``calibrator`` as it stands at each call, and its result."""
    from ortnpu.quant.quantizer import QuantizationResult, quantize

    again = dataclasses.replace(config, equalize=False, adaround=False, rounding="nearest")

    def run() -> tuple[onnx.ModelProto, QuantizationResult]:
        result = QuantizationResult()
        npu = quantize(model, target, config=again, optimize=False, calibrated=calibrator,
                       preset=preset, result=result)
        return npu, result

    return run


__all__ = ["BATCHES", "Chosen", "RangeChoice", "calibration_batch", "calibration_feeds",
           "choose_range_method", "histogram_of", "quantize_again", "worst_sqnr"]
