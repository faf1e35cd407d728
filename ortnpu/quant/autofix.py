"""Automatic accuracy recovery: move the most sensitive layers to int16, then to the CPU.

Users of vendor toolchains find the layer that loses accuracy by hand. ``autofix`` measures it:
it quantizes, scores the NPU graph with the user's metric, and while the loss against the float
model exceeds the budget, tries each candidate layer in 16 bits (TFLite 16x8 arithmetic for that
layer) and keeps the change that recovers the most; when 16 bits are not enough it moves the
layer to the CPU. Every step is reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.errors import CalibrationError, UnsupportedError
from ortnpu.quant.calibrate import CalibrationData, Calibrator, calibrate
from ortnpu.quant.quantizer import QuantConfig, QuantizationResult, quantize
from ortnpu.runtime import InferenceSession
from ortnpu.target import Target, load_target

#: A metric maps the model's first output on the evaluation inputs to a score (higher = better).
Metric = Callable[[np.ndarray], float]


def top1(labels: np.ndarray) -> Metric:
    """Top-1 accuracy against integer labels (the first output holds class scores)."""
    labels = np.asarray(labels).reshape(-1)

    def score(outputs: np.ndarray) -> float:
        return float((np.asarray(outputs).reshape(len(labels), -1).argmax(1) == labels).mean())

    return score


@dataclass(frozen=True)
class AutofixStep:
    """One change and its effect."""

    action: str        # "int16" or "cpu"
    layer: str         # float node name
    tensor: str        # the activation that changed
    score: float
    loss: float        # float score minus this score


@dataclass
class AutofixReport:
    """What autofix did."""

    float_score: float
    initial_score: float
    final_score: float
    budget: float
    steps: list[AutofixStep] = field(default_factory=list)
    within_budget: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"float score {self.float_score:.4f}, int score {self.initial_score:.4f} "
                 f"(loss {self.float_score - self.initial_score:.4f}, budget {self.budget:.4f})"]
        for k, s in enumerate(self.steps, 1):
            lines.append(f"  step {k}: {s.layer} ({s.tensor}) → {s.action}: score "
                         f"{s.score:.4f}, loss {s.loss:.4f}")
        verdict = "within budget" if self.within_budget else "budget NOT reached"
        lines.append(f"final score {self.final_score:.4f}: {verdict} "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)


def _first_output(sess: InferenceSession | ort.InferenceSession, feed: dict) -> np.ndarray:
    return sess.run(None, feed)[0]


def autofix(model: onnx.ModelProto, target: Target | str | None,
            calibration_data: CalibrationData, eval_inputs: dict[str, np.ndarray] | np.ndarray,
            metric: Metric, *, budget: float = 0.01, config: QuantConfig | None = None,
            max_steps: int = 8, candidates: Sequence[str] | None = None,
            allow_cpu: bool = True,
            calibrator: Calibrator | None = None) -> tuple[onnx.ModelProto, AutofixReport]:
    """Quantize, then move sensitive layers to int16 (or the CPU) until within ``budget``.

    Args:
        model: the float model (optimized or not; it is optimized once here).
        target: the target.
        calibration_data: calibration samples.
        eval_inputs: evaluation inputs (array for single-input models, or a feed dict).
        metric: scores the model's first output on ``eval_inputs`` (higher is better), e.g.
            :func:`top1`.
        budget: largest accepted ``float score - int score``.
        config: base quantization choices.
        max_steps: most changes to make.
        candidates: float node names that may change (default: every NPU layer).
        allow_cpu: move a layer to the CPU when 16 bits do not help.
        calibrator: a custom statistics collector (default: ``config.method``).

    Returns:
        The best NPU graph and the report of the steps.
    """
    from ortnpu.passes import optimize

    start = time.perf_counter()
    t = load_target(target)
    if t.arithmetic.activation_bits != 8:
        raise UnsupportedError(f"autofix moves layers from 8 to 16 bits; target {t.name} "
                               "already has 16-bit activations")
    config = config or QuantConfig()
    model = optimize(model, equalize=config.equalize)
    names = [i.name for i in model.graph.input
             if i.name not in {x.name for x in model.graph.initializer}]
    if isinstance(eval_inputs, np.ndarray):
        if len(names) != 1:
            raise CalibrationError(f"eval_inputs as one array needs a single-input model; "
                                   f"inputs are {names}")
        feed = {names[0]: eval_inputs}
    else:
        feed = dict(eval_inputs)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    float_score = metric(_first_output(ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"]), feed))
    ranges = calibrate(model, calibration_data, config.collector(calibrator))

    def evaluate(cfg: QuantConfig) -> tuple[float, onnx.ModelProto, QuantizationResult]:
        res = QuantizationResult()
        npu = quantize(model, t, config=cfg, optimize=False, calibrated=ranges, result=res)
        return metric(_first_output(InferenceSession(npu), feed)), npu, res

    score, best_npu, res = evaluate(config)
    report = AutofixReport(float_score=float_score, initial_score=score, final_score=score,
                           budget=budget)
    outputs_of = {n.name: n.output[0] for n in model.graph.node}
    fused = {p.node: p.fused_into for p in res.placements if p.fused_into}
    for _ in range(max_steps):
        if float_score - score <= budget:
            break
        layers = [p.node for p in res.placements
                  if p.device == "NPU" and not p.fused_into
                  and (candidates is None or p.node in candidates)]
        trials: list[tuple[float, str, str, QuantConfig, onnx.ModelProto]] = []
        for layer in layers:
            tensor = _output_tensor(layer, outputs_of, fused)
            if tensor in config.int16_tensors:
                if not allow_cpu:
                    continue
                cfg = dataclasses.replace(config, force_cpu=config.force_cpu | {layer})
                action = "cpu"
            else:
                cfg = dataclasses.replace(config, int16_tensors=config.int16_tensors | {tensor})
                action = "int16"
            s, npu, _ = evaluate(cfg)
            trials.append((s, action, layer, cfg, npu))
        if not trials:
            break
        s, action, layer, cfg, npu = max(trials, key=lambda x: x[0])
        if s <= score:
            break  # no single change helps any more
        config, score, best_npu = cfg, s, npu
        _, _, res = evaluate(config)
        report.steps.append(AutofixStep(action, layer, _output_tensor(layer, outputs_of, fused),
                                        s, float_score - s))
    report.final_score = score
    report.within_budget = float_score - score <= budget
    report.seconds = time.perf_counter() - start
    return best_npu, report


def _output_tensor(layer: str, outputs_of: dict[str, str], fused: dict[str, str]) -> str:
    """The activation a layer produces, after the activation fused into it (if any)."""
    for act, into in fused.items():
        if into == layer:
            return outputs_of[act]
    return outputs_of[layer]
