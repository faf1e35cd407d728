"""Automatic accuracy recovery: move the most sensitive layers to int16, then to the CPU.

On a target whose activations are already 16-bit the only change left is a layer to the CPU.

Users of vendor toolchains find the layer that loses accuracy by hand. ``autofix`` measures it:
it quantizes, scores the NPU graph against the float model on the user's samples, and while the
score is short of the goal, tries candidate layers in 16 bits (TFLite 16x8 arithmetic for that
layer) and keeps the change that recovers the most; when 16 bits are not enough it moves the
layer to the CPU. Every trial and every change is reported.

Any model: the default objective needs no labels (the cosine similarity, or the SQNR, of the NPU
graph's outputs against the float model's), so detectors, CTC readers and saliency models work
as well as classifiers; ``top1(labels)`` and user metrics plug in the same way. Real models have
hundreds of layers and every trial re-quantizes and re-runs the model, so only the
``max_candidates`` layers that :func:`ortnpu.compare` finds add the most error are tried.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu import console
from ortnpu.errors import CalibrationError, ModelError, OrtNpuError, UnsupportedError, first_line
from ortnpu.feeds import run_samples
from ortnpu.quant.adaround import GramCollector, find_layers
from ortnpu.quant.calibrate import CalibrationData, Calibrator, calibrate
from ortnpu.quant.quantizer import QuantConfig, QuantizationResult, quantize, read_npu_inputs
from ortnpu.quant.range_choice import (
    RangeChoice,
    choose_range_method,
    histogram_of,
    quantize_again,
)
from ortnpu.runtime import InferenceSession
from ortnpu.target import Target, load_target

if TYPE_CHECKING:
    from ortnpu.accuracy import AccuracyResult
    from ortnpu.datasets import Dataset

#: ``{output name: array}`` in the model's output order, one row per evaluation sample
Outputs = dict[str, np.ndarray]
#: Scores the NPU graph's outputs against the float model's, on the same inputs; higher is
#: better. Called once with the float outputs twice to get the float model's own score.
Metric = Callable[[Outputs, Outputs], float]
#: the default number of layers tried per step
DEFAULT_MAX_CANDIDATES = 20
#: a layer whose activation alone, left in float, raises the output's SQNR by this much (dB)
#: goes ahead of compare's ranking (:func:`_output_first`). 1 dB picks what stands out:
#: MobileNetV2's first three activations, the detector's two first convolutions; at 0.3 dB
#: 42 of the PP-OCR recognizer's layers went first and its group step needed 152 layers, not 66
OUTPUT_FIRST_DB = 1.0
#: how autofix searches (see :func:`autofix`)
SEARCHES = ("auto", "group", "greedy")
#: evaluation inputs: arrays in memory, or a dataset that ``evaluate_accuracy`` scores
EvalData = Any


def top1(labels: np.ndarray | Sequence[int] | None = None) -> Metric:
    """Top-1 accuracy of the first output (class scores) against integer labels, one a sample.

    Without ``labels`` it scores an evaluation dataset (its own labels, see :func:`autofix`).
    """
    if labels is None:
        def unlabelled(float_outputs: Outputs, npu_outputs: Outputs) -> float:
            raise CalibrationError("top-1 needs labels: top1(labels) for evaluation arrays, or "
                                   "a labelled evaluation dataset")

        unlabelled.label = "top-1 accuracy"  # type: ignore[attr-defined]
        unlabelled.of_result = _top1_of_result  # type: ignore[attr-defined]
        return unlabelled
    labels = np.asarray(labels).reshape(-1)

    def score(float_outputs: Outputs, npu_outputs: Outputs) -> float:
        name, out = next(iter(npu_outputs.items()))
        out = np.asarray(out)
        if out.ndim == 0 or out.shape[0] != len(labels):
            raise CalibrationError(
                f"top-1 needs one label per evaluation sample: {len(labels)} labels, but "
                f"output {name!r} has {out.shape[0] if out.ndim else 0} samples (shape "
                f"{list(out.shape)}); give as many labels as samples")
        return float((out.reshape(len(labels), -1).argmax(1) == labels).mean())

    score.label = "top-1 accuracy"  # type: ignore[attr-defined]
    score.of_result = _top1_of_result  # type: ignore[attr-defined]
    return score


def _top1_of_result(result: AccuracyResult) -> float:
    if result.npu_top1 is None:
        raise CalibrationError("top-1 needs labels, but the evaluation dataset has none (or "
                               "the first output holds no class scores); use the cosine or "
                               "sqnr objective")
    return result.npu_top1


def agreement() -> Metric:
    """Share of samples whose top-1 class (first output) is the float model's: a label-free
    classifier objective."""
    def score(float_outputs: Outputs, npu_outputs: Outputs) -> float:
        f, q = (np.asarray(next(iter(o.values()))) for o in (float_outputs, npu_outputs))
        if f.ndim == 0 or f.size == 0:
            raise CalibrationError("agreement needs class scores in the first output")
        f, q = f.reshape(len(f), -1), q.reshape(len(q), -1)
        return float((f.argmax(1) == q.argmax(1)).mean())

    def of_result(result: AccuracyResult) -> float:
        if result.agreement is None:
            raise CalibrationError(f"agreement needs 2-D class scores in output "
                                   f"{result.output!r}; use the cosine or sqnr objective")
        return result.agreement

    score.label = "top-1 agreement with float"  # type: ignore[attr-defined]
    score.of_result = of_result  # type: ignore[attr-defined]
    return score


def cosine(output: str | int | None = None) -> Metric:
    """Cosine similarity of the NPU outputs to the float ones (1 is identical direction).

    Args:
        output: the output (name or position) to score; ``None``: the worst of all outputs.
    """
    return _against_float("cosine", output)


def sqnr(output: str | int | None = None) -> Metric:
    """SQNR in dB of the NPU outputs against the float ones (``inf`` when exact).

    Args:
        output: the output (name or position) to score; ``None``: the worst of all outputs.
    """
    return _against_float("sqnr_db", output)


def _against_float(field_name: str, output: str | int | None) -> Metric:
    from ortnpu.comparison import measure

    def score(float_outputs: Outputs, npu_outputs: Outputs) -> float:
        names = list(float_outputs)
        if output is None:
            chosen = names
        elif isinstance(output, int) and not isinstance(output, bool):
            if not -len(names) <= output < len(names):
                raise CalibrationError(f"the model has {len(names)} outputs {names}; there is "
                                       f"no output {output}")
            chosen = [names[output]]
        elif output in float_outputs:
            chosen = [str(output)]
        else:
            raise CalibrationError(f"the model has no output {output!r}; its outputs are "
                                   f"{names}")
        return min(getattr(measure(float_outputs[k], npu_outputs[k], k), field_name)
                   for k in chosen)

    def of_result(result: AccuracyResult) -> float:
        names = list(result.outputs)
        if output is None:
            chosen = names
        elif isinstance(output, int) and not isinstance(output, bool):
            chosen = [names[output]] if -len(names) <= output < len(names) else []
        else:
            chosen = [str(output)] if output in result.outputs else []
        if not chosen:
            raise CalibrationError(f"the model has outputs {names}; there is no output "
                                   f"{output!r}")
        return min(getattr(result.outputs[k], field_name) for k in chosen)

    score.of_result = of_result  # type: ignore[attr-defined]
    what = "SQNR (dB)" if field_name == "sqnr_db" else "cosine"
    score.label = (f"{what} of output {output!r}" if output is not None  # type: ignore[attr-defined]
                   else f"{what}, worst output")
    return score


METRICS: dict[str, Callable[[], Metric]] = {"cosine": cosine, "sqnr": sqnr, "top1": top1,
                                            "agreement": agreement}


def _as_metric(metric: Metric | Callable[[np.ndarray], float] | str) -> Metric:
    """A two-argument metric; a name from :data:`METRICS` or a one-argument legacy metric (it
    scores the first output of a model on its own) is wrapped."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise CalibrationError(f"unknown autofix metric {metric!r}; use one of "
                                   f"{sorted(METRICS)}, top1(labels) or a callable "
                                   "metric(float_outputs, npu_outputs) -> float")
        return METRICS[metric]()
    if not callable(metric):
        raise CalibrationError(f"the autofix metric must be a name or a callable, got "
                               f"{type(metric).__name__}")
    try:
        params = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):
        return metric  # type: ignore[return-value]
    required = [p for p in params if p.default is p.empty and p.kind in
                (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        def legacy(float_outputs: Outputs, npu_outputs: Outputs) -> float:
            return metric(next(iter(npu_outputs.values())))  # type: ignore[call-arg]

        legacy.label = _label(metric)  # type: ignore[attr-defined]
        return legacy
    return metric  # type: ignore[return-value]


def _label(metric: Any) -> str:
    return str(getattr(metric, "label", None) or getattr(metric, "__name__", "metric"))


# -- the report ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AutofixTrial:
    """One change tried: the score before it (the current graph) and with it."""

    step: int
    action: str               # "int16" or "cpu"
    layer: str                # float node name
    tensor: str               # the activation that changes
    before: float
    after: float | None       # None when the trial failed
    error: str = ""           # why the trial failed

    def to_dict(self) -> dict[str, object]:
        return {"step": self.step, "action": self.action, "layer": self.layer,
                "tensor": self.tensor, "before": _num(self.before), "after": _num(self.after),
                "error": self.error}


@dataclass(frozen=True)
class AutofixStep:
    """One change kept and its effect."""

    action: str        # "int16" or "cpu"
    layer: str         # float node name
    tensor: str        # the activation that changed
    score: float       # the score with this change
    loss: float        # float score minus this score
    before: float = math.nan   # the score before this change
    tried: int = 0     # how many candidates this step tried
    #: a group step (several layers to int16 at once): every layer, worst first; ``layer``
    #: and ``tensor`` then describe the group
    layers: tuple[str, ...] = ()

    @property
    def changed(self) -> tuple[str, ...]:
        """The float node names this step changed."""
        return self.layers or (self.layer,)

    def to_dict(self) -> dict[str, object]:
        return {"action": self.action, "layer": self.layer, "tensor": self.tensor,
                "before": _num(self.before), "score": _num(self.score),
                "loss": _num(self.loss), "tried": self.tried, "layers": list(self.changed)}


@dataclass
class AutofixReport:
    """What autofix did: the scores, every trial, and the changes it kept.

    Attributes:
        float_score: the float model's own score (``metric(float, float)``: 1 for cosine,
            ``inf`` for SQNR, its accuracy for top-1).
        initial_score: the score of the plain quantized NPU graph.
        final_score: the score of the returned NPU graph.
        budget: accepted loss against the float score (``nan`` when ``goal`` was given).
        goal: the score to reach.
        metric: what the score measures.
        steps: the changes kept, in order.
        trials: every change tried (each step tries up to ``max_candidates`` layers).
        candidates: the layers eligible, in the order they are tried (worst first).
        ranked_by: how the candidates were ordered.
        within_budget: the goal was reached.
    """

    float_score: float
    initial_score: float
    final_score: float
    budget: float
    steps: list[AutofixStep] = field(default_factory=list)
    within_budget: bool = False
    seconds: float = 0.0
    goal: float = math.nan
    metric: str = ""
    trials: list[AutofixTrial] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    npu_layers: int = 0
    ranked_by: str = ""
    range_choice: RangeChoice | None = None

    @property
    def changes(self) -> dict[str, str]:
        """``{layer: "int16" | "cpu"}``: where each changed layer ended up."""
        out: dict[str, str] = {}
        for s in self.steps:
            for layer in s.changed:
                out[layer] = s.action
        return out

    def to_text(self, trials_per_step: int | None = 5) -> str:
        """The report; ``trials_per_step`` best trials of each step (``None``: all)."""
        lines = [f"autofix objective: {self.metric or 'metric'} (higher is better)",
                 f"float score {_fmt(self.float_score)}, goal {_fmt(self.goal)}"
                 + ("" if math.isnan(self.budget) else f" (budget {_fmt(self.budget)})")
                 + f"; quantized: {_fmt(self.initial_score)}"]
        if self.range_choice is not None:
            lines.append(self.range_choice.note())
        if self.trials:
            lines.append(f"candidates: {len(self.candidates)} of {self.npu_layers} NPU layers, "
                         f"{self.ranked_by}")
        by_step: dict[int, list[AutofixTrial]] = {}
        for t in self.trials:
            by_step.setdefault(t.step, []).append(t)
        for k, s in enumerate(self.steps, 1):
            if s.layers:
                shown = ", ".join(s.layers[:12]) + (f", ... {len(s.layers) - 12} more"
                                                     if len(s.layers) > 12 else "")
                lines.append(f"step {k}: {s.layer} -> {s.action}: {_fmt(s.before)} -> "
                             f"{_fmt(s.score)} (tried {s.tried} group size"
                             f"{'s' if s.tried != 1 else ''}): {shown}")
            else:
                lines.append(f"step {k}: {s.layer} ({s.tensor}) -> {s.action}: "
                             f"{_fmt(s.before)} -> {_fmt(s.score)} (tried {s.tried})")
            lines += self._trial_lines(by_step.get(k, []), trials_per_step)
        if len(by_step) > len(self.steps):  # the last step found no improving change
            k = len(self.steps) + 1
            lines.append(f"step {k}: no change improves the score "
                         f"(tried {len(by_step[k])})")
            lines += self._trial_lines(by_step[k], trials_per_step)
        verdict = "goal reached" if self.within_budget else "goal NOT reached"
        lines.append(f"final score {_fmt(self.final_score)}: {verdict} ({self.seconds:.1f} s)")
        changes = self.changes
        named = [f"{layer} -> {'int16' if a == 'int16' else 'CPU'}"
                 for layer, a in changes.items()]
        if len(named) > 12:   # a group step: its layers are listed on its own line above
            moved = sum(a == "int16" for a in changes.values())
            named = [f"{count} layers -> {where}" for count, where in
                     ((moved, "int16"), (len(named) - moved, "CPU")) if count]
        lines.append("changed: " + (", ".join(named) if named else "nothing"))
        return "\n".join(lines)

    @staticmethod
    def _trial_lines(trials: list[AutofixTrial], limit: int | None) -> list[str]:
        ranked = sorted(trials, key=lambda t: -math.inf if t.after is None else t.after,
                        reverse=True)
        shown = ranked if limit is None else ranked[:limit]
        out = [f"    tried {t.layer} -> {t.action}: "
               + (f"{_fmt(t.before)} -> {_fmt(t.after)}" if t.after is not None
                  else f"failed: {t.error}") for t in shown]
        if len(ranked) > len(shown):
            out.append(f"    ... {len(ranked) - len(shown)} more trials")
        return out

    def __str__(self) -> str:
        return self.to_text()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (infinities as ``"inf"``/``"-inf"``, like compare's)."""
        return {"schema": "ortnpu.autofix/1", "metric": self.metric,
                "float_score": _num(self.float_score), "goal": _num(self.goal),
                "budget": _num(self.budget), "initial_score": _num(self.initial_score),
                "final_score": _num(self.final_score), "goal_reached": self.within_budget,
                "seconds": self.seconds, "npu_layers": self.npu_layers,
                "ranked_by": self.ranked_by, "candidates": list(self.candidates),
                "range_choice": None if self.range_choice is None else {
                    "kept": self.range_choice.kept,
                    "clipped_db": _num(self.range_choice.clipped_db),
                    "extremes_db": _num(self.range_choice.extremes_db),
                    "batches": self.range_choice.batches},
                "steps": [s.to_dict() for s in self.steps],
                "trials": [t.to_dict() for t in self.trials], "changes": self.changes}


def _fmt(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"  # cosines differ in the 4th decimal, SQNRs in the units


def _num(v: float | None) -> float | str | None:
    if v is None or math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


# -- the search ------------------------------------------------------------------------------

def autofix(model: onnx.ModelProto, target: Target | str | None,
            calibration_data: CalibrationData, eval_inputs: EvalData,
            metric: Metric | Callable[[np.ndarray], float] | str = "cosine", *,
            budget: float | None = None, goal: float | None = None,
            config: QuantConfig | None = None, max_steps: int = 8,
            candidates: Sequence[str] | None = None,
            max_candidates: int | None = DEFAULT_MAX_CANDIDATES, allow_cpu: bool = True,
            calibrator: Calibrator | None = None,
            progress: bool = True, search: str = "auto",
            eval_batch: int = 64, eval_workers: int = 1,
            eval_engine: str | None = None,
            eval_threads: int | None = None) -> tuple[onnx.ModelProto, AutofixReport]:
    """Quantize, then move sensitive layers to int16 (or the CPU) until the score reaches the goal.

    Args:
        model: the float model (optimized or not; it is optimized once here).
        target: the target.
        calibration_data: calibration samples.
        eval_inputs: evaluation inputs in memory (array for single-input models, or a feed
            dict; the first axis is the sample, a fixed-batch model runs a batch at a time),
            or an evaluation **dataset** (an image folder, ``.npz`` shard paths or a
            :class:`ortnpu.datasets.Dataset`, as :func:`ortnpu.evaluate_accuracy` takes):
            every score is then :func:`ortnpu.evaluate_accuracy` over the whole dataset
            (``eval_batch``/``eval_workers``/``eval_engine``/``eval_threads`` as its
            ``batch``/``workers``/``engine``/``threads``), the objective one of ``top1``
            (the dataset's labels), ``agreement``, ``cosine`` or ``sqnr``, and compare
            ranks the candidates on the first batch.
        metric: ``metric(float_outputs, npu_outputs) -> float``, higher is better, over all
            evaluation samples; ``"cosine"`` (default) or ``"sqnr"`` (worst output, no labels
            needed), :func:`cosine`/:func:`sqnr` for one output, :func:`top1` with labels. A
            one-argument callable scores the first output alone (the float model's score
            then comes from the float outputs).
        budget: largest accepted ``float score - score`` (default 0.01); ignored with ``goal``.
        goal: the score to reach (needed for SQNR, whose float score is infinite).
        config: base quantization choices.
        max_steps: most changes to make.
        candidates: float node names that may change (default: every NPU layer).
        max_candidates: layers tried per step: those :func:`ortnpu.compare` ranks worst by the
            error each adds alone (``None``: every candidate, in graph order, no compare run).
        allow_cpu: move a layer to the CPU when it is already in 16 bits.
        calibrator: a custom statistics collector (default: ``config.method``).
        progress: progress bars on stderr when it is a terminal.
        search: ``"greedy"``: each step tries every candidate alone and keeps the best;
            ``"group"``: first the worst ``k`` layers of compare's ranking go to int16
            together, ``k`` bisected to the smallest that reaches the goal (about
            ``log2(layers)`` trials; one 16-bit layer rarely carries a real model, measured on
            PP-OCRv4 det); if the goal is still missed, the worst ``k`` of the first
            ``max_candidates`` go to the CPU the same way; then greedy steps from there;
            ``"auto"`` (default): group when the model has more NPU layers than
            ``max_candidates``, else greedy.

    Returns:
        The best NPU graph and the report.

    Raises:
        CalibrationError: bad evaluation data (e.g. not one label per sample), or no finite goal.
        UnsupportedError: the target already has 16-bit activations and ``allow_cpu`` is off
            (on such a target the only change left is a layer to the CPU).
    """
    from ortnpu.passes import optimize

    start = time.perf_counter()
    t = load_target(target)
    wide = t.arithmetic.activation_bits != 8   # every activation already in 16 bits
    if wide and not allow_cpu:
        raise UnsupportedError(f"target {t.name} already has 16-bit activations, so autofix "
                               "can only move layers to the CPU, and allow_cpu is off")
    if max_candidates is not None and max_candidates < 1:
        raise CalibrationError(f"max_candidates must be at least 1 (or None for all), got "
                               f"{max_candidates}")
    if search not in SEARCHES:
        raise CalibrationError(f"unknown autofix search {search!r}; use one of "
                               f"{', '.join(SEARCHES)}")
    score_of = _as_metric(metric)
    given = config or QuantConfig()
    config = given.resolved(t.arithmetic)
    model = optimize(model)
    if given.chooses_equalization(t.arithmetic):
        # as quantize's default: equalized or not, by the output on the calibration data
        from ortnpu.quant.per_tensor import equalizable, replayable

        if equalizable(model, streams=config.equalize_streams):
            calibration_data = replayable(calibration_data, model)
            first = QuantizationResult()
            quantize(model, t, calibration_data, config=given, optimize=False, result=first)
            config = dataclasses.replace(config, equalize=bool(
                first.equalization is not None and first.equalization.equalized))
    if config.equalize:  # once, before calibrating: every trial quantizes these weights
        from ortnpu.quant.per_tensor import equalize, replayable

        calibration_data = replayable(calibration_data, model)
        model = equalize(model, calibration_data,
                         streams=config.equalize_streams and bool(config.per_channel))
        config = dataclasses.replace(config, equalize=False)
    data = _eval_dataset(eval_inputs)
    of_result = getattr(score_of, "of_result", None)
    if data is not None and of_result is None:
        raise CalibrationError("with an evaluation dataset the objective is one of top1, "
                               "agreement, cosine or sqnr (scored batch by batch by "
                               "evaluate_accuracy); a metric of whole output arrays needs the "
                               "evaluation inputs as arrays")
    out_names = [o.name for o in model.graph.output]

    def score_on_dataset(npu: onnx.ModelProto, bar: bool = False) -> float:
        from ortnpu.accuracy import evaluate_accuracy

        assert data is not None and of_result is not None
        res = evaluate_accuracy(model, npu, data, batch=eval_batch, workers=eval_workers,
                                engine=eval_engine, threads=eval_threads, progress=bar)
        return float(of_result(res))

    if data is None:
        feed = _feed(model, eval_inputs)
        try:
            float_sess = ort.InferenceSession(model.SerializeToString(),
                                              console.quiet_session_options(),
                                              providers=["CPUExecutionProvider"])
            float_out = dict(zip(out_names, run_samples(float_sess, feed, progress=progress,
                                                        desc="float model"), strict=True))
        except OrtNpuError:
            raise
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(f"{model.graph.name}: the float model does not run on the "
                             f"evaluation inputs: {first_line(exc)}") from None
        float_score = float(score_of(float_out, float_out))
    else:   # the float model scored against itself, like metric(float, float) above
        float_score = score_on_dataset(model, progress)
    if goal is None:
        budget = 0.01 if budget is None else float(budget)
        goal = float_score - budget
        if not math.isfinite(goal):
            raise CalibrationError(f"the float score of {_label(score_of)} is {float_score}, so "
                                   "a budget below it means nothing; give the goal to reach "
                                   "instead (e.g. goal=30 for an SQNR of 30 dB)")
    else:
        budget = math.nan
    collector = config.collector(calibrator, t.arithmetic, [o.name for o in model.graph.output])
    choose = calibrator is None and not wide and histogram_of(collector) is not None
    if choose or config.learned_rounding:   # read again: the range choice, the rounding
        from ortnpu.quant.per_tensor import replayable

        calibration_data = replayable(calibration_data, model)
    if config.learned_rounding and not config.reads_npu_inputs:
        collector = GramCollector(collector, find_layers(model))
    ranges = calibrate(model, calibration_data, collector, progress=progress)
    chosen = None
    if choose:
        chosen = choose_range_method(
            model, calibration_data, ranges,
            quantize_again(model, t, config, ranges, None))
    if config.reads_npu_inputs:   # once: every trial rounds the weights the same way
        ranges = read_npu_inputs(model, t, config, ranges, calibration_data,
                                 nearest=chosen[1] if chosen else None)

    def evaluate(cfg: QuantConfig) -> tuple[float, onnx.ModelProto, QuantizationResult]:
        res = QuantizationResult()
        npu = quantize(model, t, config=cfg, optimize=False, calibrated=ranges, result=res)
        if data is not None:
            return score_on_dataset(npu), npu, res
        got = run_samples(InferenceSession(npu), feed, progress=False)
        return float(score_of(float_out, dict(zip(out_names, got, strict=True)))), npu, res

    score, best_npu, res = evaluate(config)
    report = AutofixReport(float_score=float_score, initial_score=score, final_score=score,
                           budget=budget, goal=goal, metric=_label(score_of),
                           range_choice=chosen[0] if chosen else None)
    outputs_of = {n.name: n.output[0] for n in model.graph.node}
    fused = {p.node: p.fused_into for p in res.placements if p.fused_into}
    # layers of the float model only: the quantizer may place nodes it made itself (a Split
    # or Slice it rewrote, named '<node>/slice'), which no change of config can name
    npu_layers = [p.node for p in res.placements
                  if p.device == "NPU" and not p.fused_into and p.node in outputs_of]
    report.npu_layers = len(npu_layers)
    order = npu_layers
    report.ranked_by = "in graph order"
    many = max_candidates is not None and len(npu_layers) > max_candidates
    grouped = score < goal and (search == "group" or (search == "auto" and many))
    if score < goal and (many or grouped):
        try:
            ranking = feed if data is None else _first_batch(model, data, eval_batch)
            order = _ranked(model, best_npu, ranking, npu_layers, progress)
            report.ranked_by = "worst first by the error each adds alone (compare)"
        except OrtNpuError as exc:  # the search still works, only less well aimed
            report.ranked_by = f"in graph order (compare could not rank them: {first_line(exc)})"
            grouped = False   # a prefix of the graph order is no group of worst layers
        else:
            if not wide:   # 8-bit activations: what costs the output most goes first
                order, report.ranked_by = _output_first(
                    model, best_npu, ranking, order,
                    {n: _output_tensor(n, outputs_of, fused) for n in order}, progress,
                    report.ranked_by)
    allowed = None if candidates is None else set(candidates)
    order = [n for n in order if allowed is None or n in allowed]
    report.candidates = order[:max_candidates] if max_candidates is not None else list(order)
    first = 1
    # group steps: every ranked layer to int16 (8-bit targets), then at most max_candidates
    # of them to the CPU, each bisected; greedy steps go on from there
    groups = ([("int16", None)] if not wide else []) + \
        ([("cpu", max_candidates)] if allow_cpu else [])
    for action, limit in groups if grouped else []:
        if score >= goal or first > max_steps:
            break
        tensors = {n: _output_tensor(n, outputs_of, fused) for n in order}
        kept = _group_step(first, action, order, tensors, config, score, goal, evaluate,
                           report, progress, limit)
        if kept is not None:
            config, score, best_npu, res = kept
            fused = {p.node: p.fused_into for p in res.placements if p.fused_into}
            first += 1

    for step in range(first, max_steps + 1):
        if score >= goal:
            break
        placed = {p.node for p in res.placements if p.device == "NPU" and not p.fused_into}
        layers = [n for n in order if n in placed]
        if max_candidates is not None:
            layers = layers[:max_candidates]
        best: tuple[float, str, str, QuantConfig, onnx.ModelProto, QuantizationResult] | None
        best = None
        tried = 0
        for layer in console.progress(layers, desc=f"autofix step {step}", unit="trial",
                                      enabled=progress):
            tensor = _output_tensor(layer, outputs_of, fused)
            if wide or tensor in config.int16_tensors:
                if not allow_cpu:
                    continue
                cfg = dataclasses.replace(config, force_cpu=config.force_cpu | {layer})
                action = "cpu"
            else:
                cfg = dataclasses.replace(config, int16_tensors=config.int16_tensors | {tensor})
                action = "int16"
            tried += 1
            try:
                s, npu, r = evaluate(cfg)
            except OrtNpuError as exc:  # one layer that cannot change does not end the search
                report.trials.append(AutofixTrial(step, action, layer, tensor, score, None,
                                                  first_line(exc)))
                continue
            report.trials.append(AutofixTrial(step, action, layer, tensor, score, s))
            if best is None or s > best[0]:
                best = (s, action, layer, cfg, npu, r)
        if best is None or best[0] <= score:
            break  # no single change helps any more
        s, action, layer, cfg, npu, r = best
        report.steps.append(AutofixStep(action, layer, _output_tensor(layer, outputs_of, fused),
                                        s, float_score - s, before=score, tried=tried))
        config, score, best_npu, res = cfg, s, npu, r
        fused = {p.node: p.fused_into for p in res.placements if p.fused_into}
    report.final_score = score
    report.within_budget = score >= goal
    report.seconds = time.perf_counter() - start
    return best_npu, report


def _group_step(step: int, action: str, order: Sequence[str], tensors: Mapping[str, str],
                config: QuantConfig, score: float, goal: float,
                evaluate: Callable[[QuantConfig], tuple[float, onnx.ModelProto,
                                                        QuantizationResult]],
                report: AutofixReport, progress: bool, limit: int | None = None
                ) -> tuple[QuantConfig, float, onnx.ModelProto, QuantizationResult] | None:
    """A group step: the worst ``k`` layers to int16 (or to the CPU) at once, ``k`` bisected.

    All ranked layers first (at most ``limit``): if even that misses the goal, it is kept when
    it helps (later steps go on from there). Otherwise the smallest ``k`` whose graph reaches
    the goal, assuming more changed layers never hurt much (bisection keeps the best passing
    ``k`` it saw, so a non-monotonic score costs layers, not the goal).
    """
    if action == "int16":
        todo = [n for n in order if tensors[n] not in config.int16_tensors]
    else:
        todo = [n for n in order if n not in config.force_cpu]
    todo = todo[:limit] if limit is not None else todo
    if not todo:
        return None
    tried: dict[int, tuple[float, QuantConfig, onnx.ModelProto, QuantizationResult]] = {}

    def changed(group: Sequence[str]) -> QuantConfig:
        if action == "int16":
            return dataclasses.replace(config, int16_tensors=config.int16_tensors
                                       | {tensors[n] for n in group})
        return dataclasses.replace(config, force_cpu=config.force_cpu | set(group))

    def trial(k: int) -> float | None:
        group = todo[:k]
        label = f"worst {k} layer(s)"
        cfg = changed(group)
        try:
            s, npu, r = evaluate(cfg)
        except OrtNpuError as exc:
            report.trials.append(AutofixTrial(step, action, label, "", score, None,
                                              first_line(exc)))
            return None
        report.trials.append(AutofixTrial(step, action, label, tensors[group[-1]], score, s))
        tried[k] = (s, cfg, npu, r)
        return s

    n = len(todo)
    lo, hi = 0, n      # lo misses the goal (the start), hi is the best so far

    def sizes() -> Iterator[int]:
        yield n
        whole = tried.get(n)
        if whole is None or whole[0] < goal:
            return
        while hi - lo > 1:
            yield (lo + hi) // 2

    for k in console.progress(sizes(), total=1 + max(1, math.ceil(math.log2(n))),
                              desc=f"autofix {action} group (bisection)", unit="trial",
                              enabled=progress):
        got = trial(k)
        if k == n:
            continue
        if got is not None and got >= goal:
            hi = k
        else:
            lo = k
    whole = tried.get(n)
    if whole is None or whole[0] <= score:
        return None
    s, cfg, npu, r = tried[hi]
    group = tuple(todo[:hi])
    name = group[0] if hi == 1 else f"worst {hi} of {len(todo)} layers"
    report.steps.append(AutofixStep(action, name, tensors[group[0]] if hi == 1 else "",
                                    s, report.float_score - s, before=score, tried=len(tried),
                                    layers=() if hi == 1 else group))
    return cfg, s, npu, r


def _eval_dataset(eval_inputs: EvalData) -> Dataset | None:
    """The evaluation dataset, or None for evaluation arrays in memory."""
    from ortnpu.datasets import Dataset, as_dataset

    if isinstance(eval_inputs, Dataset):
        return eval_inputs
    if isinstance(eval_inputs, (str, os.PathLike)) or (
            isinstance(eval_inputs, (list, tuple)) and eval_inputs
            and all(isinstance(p, (str, os.PathLike)) for p in eval_inputs)):
        return as_dataset(eval_inputs)
    return None


def _first_batch(model: onnx.ModelProto, data: Dataset, batch: int) -> dict[str, np.ndarray]:
    """The first batch of an evaluation dataset (what compare ranks the candidates on)."""
    from ortnpu.feeds import cast_input, session_specs

    specs = session_specs(InferenceSession(model))
    task = next(iter(data.tasks(batch)), None)
    if task is None:
        raise CalibrationError("the evaluation dataset holds no samples")
    feed, _ = data.load(task.payload, specs)
    return {s.name: cast_input(s, feed[s.name], "the first evaluation batch") for s in specs
            if s.name in feed}


def _feed(model: onnx.ModelProto, eval_inputs: Mapping[str, np.ndarray] | np.ndarray
          ) -> dict[str, np.ndarray]:
    """The evaluation feed, checked against the model's inputs; float arrays as float32."""
    init = {x.name for x in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    if isinstance(eval_inputs, np.ndarray):
        if len(names) != 1:
            raise CalibrationError(f"eval_inputs as one array needs a single-input model; "
                                   f"inputs are {names}")
        eval_inputs = {names[0]: eval_inputs}
    if not isinstance(eval_inputs, Mapping):
        raise CalibrationError(f"eval_inputs must be an array or a dict of arrays, got "
                               f"{type(eval_inputs).__name__}")
    missing = [n for n in names if n not in eval_inputs]
    if missing:
        raise CalibrationError(f"the evaluation inputs lack {missing}; the model's inputs are "
                               f"{names}")
    feed = {}
    for n in names:
        a = np.asarray(eval_inputs[n])
        if a.ndim == 0 or len(a) == 0:
            raise CalibrationError(f"evaluation input {n!r} holds no samples (shape "
                                   f"{list(a.shape)}); the first axis is the sample")
        feed[n] = a.astype(np.float32, copy=False) if a.dtype.kind == "f" else a
    return feed


def _ranked(model: onnx.ModelProto, npu: onnx.ModelProto, feed: dict[str, np.ndarray],
            layers: list[str], progress: bool) -> list[str]:
    """``layers`` worst first by :func:`ortnpu.compare`'s isolated SQNR (the error each adds
    on its own); layers compare cannot isolate follow in graph order."""
    from ortnpu.comparison import compare

    report = compare(model, npu, feed, progress=progress)
    wanted = set(layers)
    ranked = [x.name for x in report.layers
              if x.device == "NPU" and x.isolated is not None and x.name in wanted]
    seen = set(ranked)
    return ranked + [n for n in layers if n not in seen]


def _output_first(model: onnx.ModelProto, npu: onnx.ModelProto, feed: dict[str, np.ndarray],
                  order: list[str], activations: dict[str, str], progress: bool,
                  ranked_by: str) -> tuple[list[str], str]:
    """``order`` with the layers whose activation costs the model's output at least
    :data:`OUTPUT_FIRST_DB` in front (:func:`ortnpu.quant.sensitivity.output_gains`), and how
    the candidates are now ranked. compare's order alone put MobileNetV2's first three
    activations, its costliest at the output, after blocks 10-17 (autofix moved 33 layers to
    int16 for an agreement goal of 0.85, 6 with these first) and one convolution of PP-OCRv4's
    detector after 190 others (193 layers for cosine 0.99, 43 with it first)."""
    from ortnpu.quant.sensitivity import output_gains, rank_by_output

    try:
        gains = output_gains(model, npu, feed, activations, progress=progress)
    except Exception as exc:  # onnxruntime's own types too: compare's order stays
        return order, f"{ranked_by}; the output check could not run: {first_line(exc)}"
    ranked = rank_by_output(gains, order, OUTPUT_FIRST_DB)
    moved = sum(1 for n in order if gains.get(n, 0.0) >= OUTPUT_FIRST_DB)
    if not moved:
        return order, ranked_by
    return ranked, (f"first the {moved} layer(s) whose activation alone costs the output "
                    f"{OUTPUT_FIRST_DB:g} dB or more (8-bit grids simulated in the float "
                    f"model), then {ranked_by}")


def _output_tensor(layer: str, outputs_of: dict[str, str], fused: dict[str, str]) -> str:
    """The activation a layer produces, after the activation fused into it (if any)."""
    for act, into in fused.items():
        if into == layer:
            return outputs_of[act]
    return outputs_of[layer]


__all__ = ["DEFAULT_MAX_CANDIDATES", "METRICS", "SEARCHES", "AutofixReport", "AutofixStep",
           "AutofixTrial", "Metric", "agreement", "autofix", "cosine", "sqnr", "top1"]
