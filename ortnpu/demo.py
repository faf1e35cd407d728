"""The main job on the bundled model: optimize → evaluate → quantize → simulate → compare.

``ortnpu demo`` runs it on the digits CNN that ships with the package (trained by
``models/digits_cnn.py`` on scikit-learn's handwritten digits) with its real calibration and
held-out data, and prints float vs integer accuracy and where every node ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.console import quiet_session_options
from ortnpu.quant import QuantizationResult, quantize
from ortnpu.runtime import InferenceSession
from ortnpu.target import Target, load_target
from ortnpu.validate import load_model


@dataclass
class DemoResult:
    """Numbers of one demo run (also used by tests)."""

    target: str
    samples: int
    float_accuracy: float
    npu_accuracy: float
    agreement: float
    npu_nodes: int
    cpu_nodes: int
    placements: list = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(axis=1) == labels).mean())


def run_demo(target: Target | str | None = None, model_path: str | Path | None = None,
             data: dict[str, np.ndarray] | None = None, out_dir: str | Path | None = None,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run the pipeline and print what each stage found.

    Args:
        target: target preset, TOML path or :class:`Target` (default ``tflite-int8``).
        model_path: a float model (default: the bundled digits CNN).
        data: ``calib_x``, ``test_x``, ``test_y`` arrays (default: the bundled digits data).
        out_dir: when given, the optimized model, the NPU graph and the HTML report are written
            there.
        echo: where the lines go.
    """
    from ortnpu import models_cache
    from ortnpu.passes import optimize

    t = load_target(target)
    seconds: dict[str, float] = {}
    path = Path(model_path) if model_path else models_cache.bundled_model_path()
    model = load_model(path)
    data = data if data is not None else models_cache.load_bundled_data()
    calib_x, test_x, test_y = data["calib_x"], data["test_x"], data["test_y"]
    echo(f"ortnpu demo: model {path.name}, target {t.name}")
    echo(f"  data: {len(calib_x)} calibration samples, {len(test_x)} held-out labelled samples")

    start = time.perf_counter()
    optimized = optimize(model)
    seconds["optimize"] = time.perf_counter() - start
    ops_before = _op_counts(model)
    ops_after = _op_counts(optimized)
    echo(f"[1/5] optimize: {len(model.graph.node)} → {len(optimized.graph.node)} nodes "
         f"({_diff_ops(ops_before, ops_after)})")

    start = time.perf_counter()
    report = None
    try:
        from ortnpu.evaluation import evaluate

        report = evaluate(optimized, t)
    except ImportError:  # pragma: no cover - evaluate ships with ortnpu
        echo("[2/5] evaluate: not available in this installation")
    seconds["evaluate"] = time.perf_counter() - start
    if report is not None:
        summary = report.to_dict().get("summary", {})
        parts = [f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float, str))]
        echo(f"[2/5] evaluate: {', '.join(parts[:8])}")

    start = time.perf_counter()
    placement = QuantizationResult()
    npu = quantize(optimized, t, calib_x, optimize=False, result=placement)
    seconds["quantize"] = time.perf_counter() - start
    npu_nodes = sum(p.device == "NPU" for p in placement.placements)
    cpu_nodes = len(placement.placements) - npu_nodes
    echo(f"[3/5] quantize: {npu_nodes} nodes on the NPU, {cpu_nodes} on the CPU "
         f"({t.arithmetic.activation_dtype} activations, "
         f"{'per-channel' if t.arithmetic.per_channel else 'per-tensor'} int"
         f"{t.arithmetic.weight_bits} weights, rescale {t.arithmetic.rescale}/"
         f"{t.arithmetic.rounding})")

    input_name = model.graph.input[0].name
    # session set-up (graph optimization, compiling the C programs) and the run are timed
    # apart: the run is one call on the whole test set, the first of each session
    start = time.perf_counter()
    float_sess = ort.InferenceSession(model.SerializeToString(), quiet_session_options(),
                                      providers=["CPUExecutionProvider"])
    seconds["float set-up"] = time.perf_counter() - start
    start = time.perf_counter()
    float_out = float_sess.run(None, {input_name: test_x})[0]
    seconds["float run"] = time.perf_counter() - start
    start = time.perf_counter()
    npu_sess = InferenceSession(npu)
    seconds["simulate set-up"] = time.perf_counter() - start
    start = time.perf_counter()
    npu_out = npu_sess.run(None, {input_name: test_x})[0]
    seconds["simulate"] = time.perf_counter() - start
    echo(f"[4/5] simulate: ran the NPU graph in onnxruntime on {len(test_x)} samples in one "
         f"batch: {seconds['simulate'] * 1000:.1f} ms for the run (float "
         f"{seconds['float run'] * 1000:.1f} ms), session set-up not included "
         f"({seconds['simulate set-up'] * 1000:.0f} ms; float "
         f"{seconds['float set-up'] * 1000:.0f} ms)")

    fa, qa = _accuracy(float_out, test_y), _accuracy(npu_out, test_y)
    agree = float((float_out.argmax(1) == npu_out.argmax(1)).mean())
    echo(f"[5/5] compare: float accuracy {fa * 100:.2f} %, {t.name} accuracy {qa * 100:.2f} % "
         f"({(qa - fa) * 100:+.2f} points), top-1 agreement {agree * 100:.2f} %, "
         f"max |Δ output| {np.abs(float_out - npu_out).max():.4f}")
    start = time.perf_counter()
    from ortnpu.comparison import compare

    diff = compare(optimized, npu, test_x, max_samples=256)
    seconds["compare"] = time.perf_counter() - start
    worst = ", ".join(f"{layer.name} {layer.isolated.sqnr_db:.1f} dB"
                      for layer in diff.worst(3) if layer.isolated is not None)
    suspects = [layer.name for layer in diff.suspects()]
    echo(f"      per layer (SQNR of each layer alone, lowest first): {worst}; "
         + (f"layers that stand out: {', '.join(suspects)}" if suspects
            else "no layer stands out"))
    echo("placement (float node → where it runs):")
    for p in placement.placements:
        where = p.device if not p.fused_into else f"NPU (fused into {p.fused_into})"
        line = f"  {p.node:<14} {p.op_type:<18} {where}"
        if p.reason:
            line += f" — {p.reason}"
        echo(line)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        onnx.save(optimized, str(out / "optimized.onnx"))
        onnx.save(npu, str(out / "npu.onnx"))
        if report is not None:
            (out / "report.html").write_text(report.to_html(), encoding="utf-8")
        (out / "compare.html").write_text(diff.to_html(), encoding="utf-8")
        echo(f"wrote {out / 'optimized.onnx'}, {out / 'npu.onnx'}, {out / 'compare.html'}"
             + (f", {out / 'report.html'}" if report is not None else ""))
    return DemoResult(target=t.name, samples=len(test_x), float_accuracy=fa, npu_accuracy=qa,
                      agreement=agree, npu_nodes=npu_nodes, cpu_nodes=cpu_nodes,
                      placements=placement.placements, seconds=seconds)


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _diff_ops(before: dict[str, int], after: dict[str, int]) -> str:
    changes = [f"{op} {before.get(op, 0)}→{after.get(op, 0)}"
               for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)]
    return ", ".join(changes) or "no change"
