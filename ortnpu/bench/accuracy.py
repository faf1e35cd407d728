"""Accuracy of ortnpu's quantization against onnxruntime's own ``quantize_static``.

Both quantizers get the same optimized float model and the same calibration samples; both use
per-channel int8 weights and int8 activations. onnxruntime's QDQ model runs with onnxruntime's
default optimizations (its fused int8 kernels), i.e. what a user of that tool gets. Every row is
scored by :func:`ortnpu.evaluate_accuracy` (the float model and the QDQ model as plain
onnxruntime sessions, ``npu_runtime="onnxruntime"``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ortnpu.accuracy import AccuracyResult
from ortnpu.bench.models import BenchModel
from ortnpu.datasets import Samples


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
#: samples per batch of the evaluator
BATCH = 256


def confident_mask(ref: np.ndarray) -> np.ndarray:
    """Samples whose float top-1 probability is at least :data:`CONFIDENT` (outputs that are
    already probabilities, e.g. after a Softmax, are taken as they are; logits get a softmax)."""
    if ref.min() >= 0 and np.allclose(ref.sum(axis=1), 1.0, atol=1e-3):
        return ref.max(axis=1) >= CONFIDENT
    z = ref - ref.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.max(axis=1) >= CONFIDENT


def row_metric(float_outputs: Mapping[str, np.ndarray], npu_outputs: Mapping[str, np.ndarray],
               labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-sample values the table needs beyond :func:`ortnpu.evaluate_accuracy`'s own:
    whether the float model is confident, confident and agreed with, and (no labels) whether
    its top-1 class is in the quantized top 5 (an ``evaluate_accuracy`` user metric)."""
    ref = np.asarray(next(iter(float_outputs.values())))
    out = np.asarray(next(iter(npu_outputs.values())))
    sure = confident_mask(ref)
    agree = out.argmax(1) == ref.argmax(1)
    top5 = np.argsort(out, axis=1)[:, -5:]
    contained = (top5 == ref.argmax(1)[:, None]).any(1)
    return {"confident": sure, "confident_agree": sure & agree, "float_top1_in_top5": contained}


def _count(mean: float, samples: int) -> int:
    """A count back from its mean per sample (exact: the sums are whole numbers)."""
    return round(mean * samples)


def _row(model: BenchModel, quantizer: str, res: AccuracyResult,
         seconds: float) -> AccuracyRow:
    n = res.samples
    if model.labels is not None:
        metric, score = "top-1 accuracy", res.npu_top1
    else:
        metric = "float top-1 in top-5"
        score = _count(res.user["float_top1_in_top5"], n) / n
    sure = _count(res.user["confident"], n)
    agreed = _count(res.user["confident_agree"], n)
    return AccuracyRow(model.name, quantizer, metric, float(score or 0.0),
                       float(res.agreement or 0.0), agreed / sure if sure else float("nan"),
                       sure, seconds, n)


def score(model: BenchModel, float_model: onnx.ModelProto, candidate: onnx.ModelProto | str,
          runtime: str = "ortnpu") -> AccuracyResult:
    """``candidate`` against the float model on ``model.test`` through
    :func:`ortnpu.evaluate_accuracy` (``runtime``: its ``npu_runtime``)."""
    from ortnpu.accuracy import evaluate_accuracy

    if model.labels is not None:
        items: list[tuple[np.ndarray, Any]] = [
            (model.test[i:i + BATCH], model.labels[i:i + BATCH])
            for i in range(0, len(model.test), BATCH)]
    else:
        items = [(x, None) for x in model.test]
    return evaluate_accuracy(float_model, candidate, Samples(items), metric=row_metric,
                             batch=BATCH, npu_runtime=runtime, progress=False)


def measure(model: BenchModel, target: str = "tflite-int8",
            methods: tuple[str, ...] = ("auto",), onnxruntime: bool = True,
            bias_correction: tuple[bool, ...] = (False,),
            roundings: tuple[str, ...] = ("auto",),
            adaround_iterations: int = 1000) -> list[AccuracyRow]:
    """Float, ortnpu (per method, bias-correction and weight-rounding choice,
    ``QuantConfig.rounding``) and onnxruntime ``quantize_static`` on one model.

    Every quantizer gets the same optimized float model and the same calibration samples
    (``model.calib``); every score is taken on ``model.test``.
    """
    import ortnpu
    from ortnpu.quant import QuantConfig
    from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds
    from ortnpu.target import load_target

    optimized = ortnpu.optimize(onnx.load(str(model.path)))
    name = optimized.graph.input[0].name
    rows = [_row(model, "float (onnxruntime)",
                 score(model, optimized, optimized, "onnxruntime"), 0.0)]
    for method in methods:
        for corrected in bias_correction:
            for rounding in roundings:
                config = QuantConfig(method=method, bias_correction=corrected, rounding=rounding,
                                     adaround_iterations=adaround_iterations)
                start = time.perf_counter()
                npu = ortnpu.quantize(optimized, target, model.calib, config=config,
                                      optimize=False)
                seconds = time.perf_counter() - start
                resolved = config.resolved(load_target(target).arithmetic).rounding
                words = {"gptq": "gptq rounding", "nearest": "nearest rounding",
                         "adaround": f"adaround {adaround_iterations}"}
                label = ", ".join([method] + ["bias correction"] * corrected
                                  + [words[resolved] + " (default)" * (rounding == "auto")])
                rows.append(_row(model, f"ortnpu {target} ({label})",
                                 score(model, optimized, npu), seconds))
    if not onnxruntime:
        return rows
    start = time.perf_counter()
    qdq = quantize_with_onnxruntime(optimized, sample_feeds(name, model.calib))
    seconds = time.perf_counter() - start
    res = score(model, optimized, qdq, "onnxruntime")
    rows.append(_row(model, "onnxruntime quantize_static (QDQ, per-channel, minmax)", res,
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
