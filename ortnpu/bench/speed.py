"""Side-by-side latency: onnxruntime float, onnxruntime int8 (QDQ), ortnpu's NPU graph.

All three run in one process with the same ``intra_op_num_threads`` on the same input; the
numbers that matter are the ratios, never absolute times. The three sessions are timed in
turns (blocks of runs of each, again and again, each block after a few milliseconds of untimed
runs) so that a slower or faster phase of a shared machine affects all three alike; each
latency is the median of its runs.

Quantization time is measured too: ``ortnpu.quantize`` against onnxruntime's
``quantize_static`` with the same calibration images.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.bench.accuracy import _Reader
from ortnpu.bench.models import BenchModel
from ortnpu.console import quiet_session_options

CALIBRATION_IMAGES = 64


@dataclass
class SpeedRow:
    """Median latencies (ms) of one model at one thread count, and what it took to get there."""

    model: str
    threads: int
    batch: int
    float_ms: float
    qdq_ms: float
    ortnpu_ms: float
    quant_ort_s: float      # onnxruntime quantize_static
    quant_ortnpu_s: float   # ortnpu.quantize (same calibration images)
    peak_mb: float          # peak resident memory of the process so far
    native: bool            # every NPU subgraph ran as a compiled C program

    @property
    def vs_qdq(self) -> float:
        return self.ortnpu_ms / self.qdq_ms

    @property
    def vs_float(self) -> float:
        return self.ortnpu_ms / self.float_ms


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def interleaved_medians(runs: list[Callable[[], object]], repeat: int, rounds: int = 10,
                        settle_ms: float = 5.0) -> list[float]:
    """Median milliseconds of each callable over ``repeat`` timed runs, taken in ``rounds``
    blocks in turn. Each block starts with untimed runs for ``settle_ms``: an onnxruntime pool
    keeps spinning for a while after its session ran (and a sleeping one must wake up), which
    must not be timed against the next session."""
    times: list[list[float]] = [[] for _ in runs]
    per_block = max(1, -(-repeat // rounds))
    for _ in range(rounds):
        for k, run in enumerate(runs):
            settle_until = time.perf_counter() + settle_ms / 1000
            run()
            while time.perf_counter() < settle_until:
                run()
            for _ in range(per_block):
                start = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def measure(model: BenchModel, threads: int, repeat: int = 30, batch: int = 1,
            target: str = "tflite-int8") -> SpeedRow:
    """Time the three executions of ``model`` at ``threads`` threads."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    import ortnpu

    optimized = ortnpu.optimize(onnx.load(str(model.path)))
    name = optimized.graph.input[0].name
    x = np.ascontiguousarray(model.test[:batch])
    calib = model.calib[:CALIBRATION_IMAGES]

    def options() -> ort.SessionOptions:
        so = quiet_session_options()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return so

    fsess = ort.InferenceSession(optimized.SerializeToString(), options(),
                                 providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(optimized, str(src))
        start = time.perf_counter()
        quantize_static(str(src), str(dst), _Reader(name, calib),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        quant_ort = time.perf_counter() - start
        qsess = ort.InferenceSession(str(dst), options(), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    npu = ortnpu.quantize(optimized, target, calib, optimize=False)
    quant_ortnpu = time.perf_counter() - start
    nsess = ortnpu.InferenceSession(npu, intra_op_num_threads=threads)  # also sets C threads
    float_ms, qdq_ms, ortnpu_ms = interleaved_medians(
        [lambda: fsess.run(None, {name: x}), lambda: qsess.run(None, {name: x}),
         lambda: nsess.run(None, {name: x})], repeat)
    native = bool(nsess.compile_reports) and all(r.native for r in nsess.compile_reports)
    return SpeedRow(model.name, threads, batch, float_ms, qdq_ms, ortnpu_ms, quant_ort,
                    quant_ortnpu, _peak_mb(), native)


def table(rows: list[SpeedRow]) -> str:
    """Markdown table of the rows."""
    lines = ["| model | threads | batch | float (ms) | onnxruntime int8 QDQ (ms) | ortnpu (ms) | "
             "ortnpu / int8 | ortnpu / float | quantize: ORT / ortnpu (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = "" if r.native else " (Python path)"
        lines.append(f"| {r.model} | {r.threads} | {r.batch} | {r.float_ms:.3f} | "
                     f"{r.qdq_ms:.3f} | {r.ortnpu_ms:.3f}{flag} | {r.vs_qdq:.2f} | "
                     f"{r.vs_float:.2f} | {r.quant_ort_s:.2f} / {r.quant_ortnpu_s:.2f} | "
                     f"{r.peak_mb:.0f} |")
    return "\n".join(lines)
