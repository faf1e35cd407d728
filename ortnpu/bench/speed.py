"""Side-by-side latency: onnxruntime float, onnxruntime int8 (QDQ), ortnpu's NPU graph.

All three run in one process with the same ``intra_op_num_threads`` on the same input; the
numbers that matter are the ratios, never absolute times.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.bench.accuracy import _Reader
from ortnpu.bench.models import BenchModel


@dataclass
class SpeedRow:
    """Median latencies (ms) of one model at one thread count."""

    model: str
    threads: int
    batch: int
    float_ms: float
    qdq_ms: float
    ortnpu_ms: float
    float_mb: float
    qdq_mb: float
    ortnpu_mb: float

    @property
    def vs_qdq(self) -> float:
        return self.ortnpu_ms / self.qdq_ms

    @property
    def vs_float(self) -> float:
        return self.ortnpu_ms / self.float_ms


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _median_ms(run, repeat: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(model: BenchModel, threads: int, repeat: int = 30, batch: int = 1,
            target: str = "tflite-int8") -> SpeedRow:
    """Time the three executions of ``model`` at ``threads`` threads."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    import ortnpu

    optimized = ortnpu.optimize(onnx.load(str(model.path)))
    name = optimized.graph.input[0].name
    x = np.ascontiguousarray(model.test[:batch])

    def options() -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return so

    rss = _rss_mb()
    fsess = ort.InferenceSession(optimized.SerializeToString(), options(),
                                 providers=["CPUExecutionProvider"])
    float_ms = _median_ms(lambda: fsess.run(None, {name: x}), repeat)
    float_mb, rss = _rss_mb() - rss, _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(optimized, str(src))
        quantize_static(str(src), str(dst), _Reader(name, model.calib[:64]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        qsess = ort.InferenceSession(str(dst), options(), providers=["CPUExecutionProvider"])
    rss = _rss_mb()
    qdq_ms = _median_ms(lambda: qsess.run(None, {name: x}), repeat)
    qdq_mb, rss = _rss_mb() - rss, _rss_mb()
    npu = ortnpu.quantize(optimized, target, model.calib[:64], optimize=False)
    nsess = ortnpu.InferenceSession(npu, intra_op_num_threads=threads)  # also sets C threads
    ortnpu_ms = _median_ms(lambda: nsess.run(None, {name: x}), repeat)
    ortnpu_mb = _rss_mb() - rss
    return SpeedRow(model.name, threads, batch, float_ms, qdq_ms, ortnpu_ms,
                    float_mb, qdq_mb, ortnpu_mb)


def table(rows: list[SpeedRow]) -> str:
    """Markdown table of the rows."""
    lines = ["| model | threads | batch | float (ms) | onnxruntime int8 QDQ (ms) | ortnpu (ms) | "
             "ortnpu / int8 | ortnpu / float | RSS growth float / int8 / ortnpu (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.threads} | {r.batch} | {r.float_ms:.3f} | "
                     f"{r.qdq_ms:.3f} | {r.ortnpu_ms:.3f} | {r.vs_qdq:.2f} | {r.vs_float:.2f} | "
                     f"{r.float_mb:.0f} / {r.qdq_mb:.0f} / {r.ortnpu_mb:.0f} |")
    return "\n".join(lines)
