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
    """One model × quantizer result."""

    model: str
    quantizer: str
    metric: str
    score: float
    agreement: float
    seconds: float
    samples: int


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


class _Reader:
    """``CalibrationDataReader`` for onnxruntime's quantizer."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def measure(model: BenchModel, target: str = "tflite-int8",
            methods: tuple[str, ...] = ("minmax",)) -> list[AccuracyRow]:
    """Float, ortnpu (per method) and onnxruntime ``quantize_static`` on one model."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import ortnpu

    so = quiet_session_options()
    optimized = ortnpu.optimize(onnx.load(str(model.path)))
    name = optimized.graph.input[0].name
    fsess = ort.InferenceSession(optimized.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
    ref = _run(fsess, name, model.test)
    metric, fscore = _score(ref, ref, model.labels)
    n = len(model.test)
    rows = [AccuracyRow(model.name, "float (onnxruntime)", metric, fscore, 1.0, 0.0, n)]
    for method in methods:
        start = time.perf_counter()
        npu = ortnpu.quantize(optimized, target, model.calib, method=method, optimize=False)
        seconds = time.perf_counter() - start
        out = _run(ortnpu.InferenceSession(npu)._sess, name, model.test)
        rows.append(AccuracyRow(model.name, f"ortnpu {target} ({method})", metric,
                                _score(out, ref, model.labels)[1],
                                float((out.argmax(1) == ref.argmax(1)).mean()), seconds, n))
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
    rows.append(AccuracyRow(model.name, "onnxruntime quantize_static (QDQ, minmax)", metric,
                            _score(out, ref, model.labels)[1],
                            float((out.argmax(1) == ref.argmax(1)).mean()), seconds, n))
    return rows


def table(rows: list[AccuracyRow]) -> str:
    """Markdown table of the rows."""
    lines = ["| model | quantizer | metric | score | top-1 agreement with float | "
             "quantize time (s) | samples |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.quantizer} | {r.metric} | {r.score * 100:.2f} % | "
                     f"{r.agreement * 100:.2f} % | {r.seconds:.2f} | {r.samples} |")
    return "\n".join(lines)
