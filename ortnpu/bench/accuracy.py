"""Accuracy of ortnpu's quantization against onnxruntime's own ``quantize_static``.

Both quantizers get the same optimized float model and the same calibration samples; both use
per-channel int8 weights and int8 activations. onnxruntime's QDQ model runs with onnxruntime's
default optimizations (its fused int8 kernels), i.e. what a user of that tool gets.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.bench.models import BenchModel
from ortnpu.console import quiet_session_options


@dataclass
class AccuracyRow:
    """One model × quantizer result.

    ``score`` is the labelled top-1 accuracy when the data has labels, else the share of
    samples whose float top-1 class is within the quantized top 5. ``confident`` is the
    top-1 agreement on the samples the float model is sure of (top-1 probability >= 0.5),
    ``confident_n`` their number.
    """

    model: str
    quantizer: str
    metric: str
    score: float
    agreement: float
    confident: float
    confident_n: int
    seconds: float
    samples: int


#: float top-1 probability from which a sample counts as confident
CONFIDENT = 0.5


def _run(sess: ort.InferenceSession, name: str, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    first = sess.get_inputs()[0].shape[0]
    chunk = first if isinstance(first, int) and first > 0 else chunk   # fixed-batch models
    return np.concatenate([sess.run(None, {name: x[i:i + chunk]})[0]
                           for i in range(0, len(x), chunk)])


def _score(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> tuple[str, float]:
    if labels is not None:
        return "top-1 accuracy", float((out.argmax(1) == labels).mean())
    top5 = np.argsort(out, axis=1)[:, -5:]
    contained = np.mean([ref.argmax(1)[i] in top5[i] for i in range(len(ref))])
    return "float top-1 in top-5", float(contained)


def confident_mask(ref: np.ndarray) -> np.ndarray:
    """Samples whose float top-1 probability is at least :data:`CONFIDENT` (outputs that are
    already probabilities, e.g. after a Softmax, are taken as they are; logits get a softmax)."""
    if ref.min() >= 0 and np.allclose(ref.sum(axis=1), 1.0, atol=1e-3):
        return ref.max(axis=1) >= CONFIDENT
    z = ref - ref.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.max(axis=1) >= CONFIDENT


def _row(model: BenchModel, quantizer: str, out: np.ndarray, ref: np.ndarray,
         seconds: float) -> AccuracyRow:
    metric, score = _score(out, ref, model.labels)
    agree = out.argmax(1) == ref.argmax(1)
    sure = confident_mask(ref)
    return AccuracyRow(model.name, quantizer, metric, score, float(agree.mean()),
                       float(agree[sure].mean()) if sure.any() else float("nan"),
                       int(sure.sum()), seconds, len(ref))


class _Reader:
    """``CalibrationDataReader`` for onnxruntime's quantizer."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def measure(model: BenchModel, target: str = "tflite-int8",
            methods: tuple[str, ...] = ("auto",), onnxruntime: bool = True,
            bias_correction: tuple[bool, ...] = (False,),
            adaround: tuple[bool, ...] = (False,)) -> list[AccuracyRow]:
    """Float, ortnpu (per method, bias-correction and learned-rounding choice) and onnxruntime
    ``quantize_static`` on one model.

    Every quantizer gets the same optimized float model and the same calibration samples
    (``model.calib``); every score is taken on ``model.test``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import ortnpu
    from ortnpu.quant import QuantConfig

    so = quiet_session_options()
    optimized = ortnpu.optimize(onnx.load(str(model.path)))
    name = optimized.graph.input[0].name
    fsess = ort.InferenceSession(optimized.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
    ref = _run(fsess, name, model.test)
    rows = [_row(model, "float (onnxruntime)", ref, ref, 0.0)]
    for method in methods:
        for corrected in bias_correction:
            for learned in adaround:
                config = QuantConfig(method=method, bias_correction=corrected, adaround=learned)
                start = time.perf_counter()
                npu = ortnpu.quantize(optimized, target, model.calib, config=config,
                                      optimize=False)
                seconds = time.perf_counter() - start
                sess = ortnpu.InferenceSession(npu)  # keeps the compiled programs alive
                label = ", ".join([method] + ["bias correction"] * corrected
                                  + ["adaround"] * learned)
                rows.append(_row(model, f"ortnpu {target} ({label})",
                                 _run(sess._sess, name, model.test), ref, seconds))
    if not onnxruntime:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(optimized, str(src))
        start = time.perf_counter()
        quantize_static(str(src), str(dst), _Reader(name, model.calib),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        seconds = time.perf_counter() - start
        qsess = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
        out = _run(qsess, name, model.test)
    rows.append(_row(model, "onnxruntime quantize_static (QDQ, per-channel, minmax)", out, ref,
                     seconds))
    return rows


def table(rows: list[AccuracyRow]) -> str:
    """Markdown table of the rows."""
    lines = ["| model | quantizer | metric | score | top-1 agreement with float | agreement "
             f"when float is confident (p >= {CONFIDENT}) | quantize time (s) | samples |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.quantizer} | {r.metric} | {r.score * 100:.2f} % | "
                     f"{r.agreement * 100:.2f} % | {r.confident * 100:.2f} % of "
                     f"{r.confident_n} | {r.seconds:.2f} | {r.samples} |")
    return "\n".join(lines)
