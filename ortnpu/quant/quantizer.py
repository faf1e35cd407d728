"""Post-training quantization of a float model into an NPU graph.

The NPU graph keeps the float model's input and output names and types: float in, float out,
``QuantizeLinear``/``DequantizeLinear`` at the boundaries between NPU and CPU parts. NPU parts are
``com.ortnpu`` nodes; every node left on the CPU carries its reason in ``doc_string``. The target
travels in ``metadata_props`` so the graph runs without being told the target again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper

from ortnpu.domain import DOMAIN, DOMAIN_VERSION
from ortnpu.errors import ModelError, OrtNpuError, UnsupportedError, first_line
from ortnpu.passes.graph import implicit_inputs, node_inputs
from ortnpu.passes.name_nodes import NameNodes
from ortnpu.passes.weight_links import carry_params, carry_weights
from ortnpu.placement import place
from ortnpu.quant.adaround import AdaRoundOptions, GramCollector, find_layers
from ortnpu.quant.calibrate import (
    CalibrationData,
    Calibrator,
    WithChannelMeans,
    calibrate,
    make_calibrator,
)
from ortnpu.quant.context import GraphView, QuantContext
from ortnpu.quant.emitter import Emitter
from ortnpu.quant.equalize_choice import EqualizeChoice
from ortnpu.quant.lowering import RULE_OF_OP, Match
from ortnpu.quant.range_choice import (
    RangeChoice,
    choose_range_method,
    histogram_of,
    quantize_again,
)
from ortnpu.target import Arithmetic, Target, load_target
from ortnpu.validate import all_nodes

META_TARGET = "ortnpu.target"
META_TARGET_TOML = "ortnpu.target_toml"
META_TENSORS = "ortnpu.tensors"
META_PLACEMENT = "ortnpu.placement"


@dataclass(frozen=True)
class Placement:
    """Where one float node runs in the NPU graph, and why if on the CPU."""

    node: str
    op_type: str
    device: str          # "NPU" or "CPU"
    reason: str = ""
    fused_into: str = ""  # name of the NPU node that absorbed it (fused activations)


@dataclass
class QuantizationResult:
    """Side information of :func:`quantize`: placements per float node."""

    placements: list[Placement] = field(default_factory=list)
    #: what the ``auto`` range method chose, when it compared (see ``range_choice``)
    range_choice: RangeChoice | None = None
    #: whether equalization was kept on a per-channel target (see ``equalize_choice``)
    equalization: EqualizeChoice | None = None


def _prepare(model: onnx.ModelProto, optimize: bool, equalize: bool = False,
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             freeze: Mapping[str, object] | None = None,
             target: Target | None = None, keep: Iterable[str] = ()) -> onnx.ModelProto:
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"quantize expects an onnx.ModelProto, got {type(model).__name__}; "
                         "load the file with onnx.load first")
    from ortnpu.validate import check_model, initializers_as_constants

    check_model(model, model.graph.name or "<model>", check_npu=False)
    model = initializers_as_constants(model)
    from ortnpu.passes import fix_inputs
    from ortnpu.passes import optimize as run_optimize

    if optimize:
        model = run_optimize(model, equalize=equalize, input_shapes=input_shapes, freeze=freeze)
    else:
        model = fix_inputs(model, input_shapes=input_shapes, freeze=freeze)
    from ortnpu.passes.npu_forms import npu_forms

    # as placement's prepare: evaluate and quantize see one graph
    model = npu_forms(model, target, keep=keep)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise ModelError(f"{model.graph.name}: shape inference failed: {exc}") from None
    for k, node in enumerate(inferred.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
    return inferred


def _upgrade_opset(model: onnx.ModelProto, needed: int) -> onnx.ModelProto:
    """The model at the default-domain opset the NPU graph needs (13: per-channel
    QuantizeLinear; 21: int16 QuantizeLinear), converted by onnx's version converter.

    The NPU graph declares that opset and keeps the CPU nodes of the float model: an older
    model's Squeeze, Unsqueeze, Split or Reduce* nodes must change form (attributes that became
    inputs), or onnxruntime refuses the graph (measured on PP-OCRv4 rec, opset 12).
    """
    version = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    if not version or version >= needed:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, needed)
        converted = onnx.shape_inference.infer_shapes(converted)
    except Exception as exc:  # the converter raises plain RuntimeErrors
        raise ModelError(
            f"{model.graph.name}: the model uses opset {version}; the NPU graph needs {needed} "
            f"and onnx's version converter failed: {first_line(exc)}; convert the model "
            f"(onnx.version_converter.convert_version(model, {needed})) and fix what it "
            "reports") from None
    for k, node in enumerate(converted.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
    # the converter writes new attribute-turned-inputs (Squeeze axes...) as Constant nodes and
    # an old Reshape's shape as a Shape chain: fold them, or the NPU graph has CPU nodes the
    # float model's placement lacks; only what it added: folding anything else (a Gather of
    # constant data) made quantize on 16-bit targets place nodes that evaluate kept on the CPU
    from ortnpu.passes import FoldConstants

    before = {o for n in model.graph.node for o in n.output}
    added = {o for n in converted.graph.node for o in n.output} - before
    return FoldConstants(only=added)(converted).model


@dataclass(frozen=True)
class QuantConfig:
    """Choices of one quantization run; the target decides everything not set here.

    Attributes:
        per_channel: per-channel weights (``None``: the target's rule).
        method: activation range method: ``auto`` (the default: per tensor, the range with the
            least expected squared error on the target's grid, the model's outputs their
            observed extremes with headroom for unseen samples (``headroom``); on 8-bit
            targets kept only when
            the model's output on the calibration data is closer to float than with every
            tensor's extremes, :mod:`ortnpu.quant.range_choice`), ``minmax``, ``percentile``,
            ``entropy``, ``mse`` or ``headroom`` (:class:`~ortnpu.quant.HistogramCalibrator`).
        percentile: the percentile of the ``percentile`` method.
        method_overrides: per-tensor methods, e.g. ``{"logits": "minmax"}``.
        int16_tensors: activations kept in 16 bits on an 8-bit target (mixed precision; the
            layers touching them use TFLite's 16x8 arithmetic).
        force_cpu: node names or op types kept on the CPU.
        force_npu: node names or op types lowered although placement would keep them on the
            CPU (a target limit, an output head kept in float); not what ortnpu cannot lower.
        equalize: cross-layer weight equalization before quantizing (Conv→ReLU→Conv pairs, and
            Conv→Clip(0, c)→Conv pairs with the calibration data's channel maxima; same float
            outputs, weight ranges better suited to per-tensor weights). ``None`` (the
            default): on when the weights are per tensor (:mod:`ortnpu.quant.per_tensor`);
            on per-channel targets with 8-bit activations, when the model has such pairs and
            calibration data is given, the model is quantized both ways and the graph whose
            output on the calibration data is closer to float is kept
            (:mod:`ortnpu.quant.equalize_choice`, ``QuantizationResult.equalization``).
        equalize_streams: with equalization on per-channel weights (chosen by the output, or
            ``equalize=True``), also scale the channels of each residual stream (the tensors
            residual sums tie together: MobileNetV2's linear bottlenecks) towards one scale by
            their RMS on the calibration data (:class:`~ortnpu.passes.EqualizeStreams`; same
            float outputs). On by default: MobileNetV2 keeps it (top-1 agreement with float
            79.8 % → 81.6 %, 99.16 % of the confident crops, logits SQNR on the evaluation crops
            +0.7 dB), EfficientNet-Lite0's output chooses no equalization, as before
            (docs/measurements.md).
        bias_correction: add to each conv/fully-connected bias the mean error its quantized
            weights cause, ``Σ_k E[x_k]·(w - w_q)``, measured on the calibration data.
            ``None`` (the default): on when the weights are per tensor, where it recovers
            most of the loss (MobileNetV2 on n2d2-int8, docs/measurements.md); off for
            per-channel weights, where it cost MobileNetV2 0.6 points of agreement with float.
        rounding: how conv/fully-connected weights are rounded to their integer grid (scales
            and clipping are the same either way): ``"nearest"``; ``"gptq"`` (error feedback,
            :mod:`ortnpu.quant.gptq`: each weight's rounding error offset by the not yet
            rounded weights of the same output, against the layer's inputs on the
            calibration data as the NPU graph quantizes them); ``"adaround"`` (learned
            rounding, :mod:`ortnpu.quant.adaround`, Adam per layer: a little better on
            MobileNetV2, worse on EfficientNet-Lite0, ~10x the CPU); ``"auto"`` (the
            default): ``"gptq"`` for per-channel weights the quantizer rounds itself,
            ``"nearest"`` otherwise (per-tensor weights get bias correction instead; imported
            QDQ weights are the model's own). Measured in docs/measurements.md.
        adaround: shorthand for ``rounding="adaround"``.
        adaround_iterations: Adam steps per layer of the learned rounding.
        adaround_inputs: what the learned rounding's loss feeds each layer: ``"quantized"``
            (the default) its float input through the input tensor's own quantization (scale
            and zero point of the nearest-rounded NPU graph; one more float pass over the
            calibration data), so that the rounding also offsets the input grid's error;
            ``"float"`` the float input (the paper's basic form).
        adaround_bias_correction: with ``adaround_inputs="quantized"`` (and always with
            ``"gptq"``), add to each learned layer's bias its measured mean output error on
            those quantized inputs,
            ``W·E[x] - A·E[x_q]`` (empirical bias correction: also the mean shift that the
            input's clipping leaves, which the per-channel-mean correction cannot see).
        wide_softmax_on_cpu: keep a Softmax over rows too long for the int16 SOFTMAX's exp
            table in float (``ortnpu.placement.wide_softmax_problem``); ``import_qdq`` turns it
            off, since the imported model quantized its Softmax itself.
    """

    per_channel: bool | None = None
    method: str = "auto"
    percentile: float = 99.99
    method_overrides: tuple[tuple[str, str], ...] = ()
    int16_tensors: frozenset[str] = frozenset()
    force_cpu: frozenset[str] = frozenset()
    force_npu: frozenset[str] = frozenset()
    equalize: bool | None = None
    equalize_streams: bool = True
    bias_correction: bool | None = None
    rounding: str = "auto"
    adaround: bool = False
    adaround_iterations: int = 1000
    adaround_inputs: str = "quantized"
    adaround_bias_correction: bool = True
    wide_softmax_on_cpu: bool = True

    def resolved(self, arith: Arithmetic, *, fixed_weights: bool = False) -> QuantConfig:
        """These choices with ``per_channel``, ``equalize`` and ``bias_correction`` decided for
        a target (``fixed_weights``: the caller fixes the weights, nothing may change them)."""
        import dataclasses

        from ortnpu.quant.per_tensor import per_tensor_default

        per_channel = arith.per_channel if self.per_channel is None else self.per_channel

        def pick(setting: bool | None) -> bool:
            if setting is None and fixed_weights:
                return False
            return per_tensor_default(setting, per_channel)

        rounding = "adaround" if self.adaround else self.rounding
        if rounding not in ROUNDINGS:
            raise UnsupportedError(f"rounding must be one of {', '.join(ROUNDINGS)}, got "
                                   f"{rounding!r}")
        if rounding == "auto":
            rounding = "gptq" if per_channel and not fixed_weights else "nearest"
        return dataclasses.replace(self, per_channel=per_channel, equalize=pick(self.equalize),
                                   bias_correction=pick(self.bias_correction),
                                   rounding=rounding)

    def chooses_equalization(self, arith: Arithmetic) -> bool:
        """Whether :func:`quantize` decides equalization by the output (both ways quantized,
        the graph closer to float kept): left unset, per-channel weights, 8-bit activations.
        autofix asks the same question, so both make the same choice."""
        return (self.equalize is None and bool(self.resolved(arith).per_channel)
                and arith.activation_bits == 8)

    @property
    def learned_rounding(self) -> bool:
        """Whether weights are rounded by a solver on calibration statistics (resolved)."""
        return self.adaround or self.rounding in ("gptq", "adaround")

    @property
    def reads_npu_inputs(self) -> bool:
        """Whether the learned rounding reads each layer's input as the NPU graph quantizes
        it (one nearest-rounded quantization and one more pass over the calibration data)."""
        return self.learned_rounding and not (
            (self.adaround or self.rounding == "adaround") and self.adaround_inputs == "float")

    def collector(self, calibrator: Calibrator | None = None,
                  arith: Arithmetic | None = None, outputs: Iterable[str] = ()) -> Calibrator:
        """The statistics collector these choices need (``calibrator`` replaces the method's);
        bias correction also needs per-channel means. ``arith`` (the target's arithmetic)
        tells the range methods the activation grid they choose a range for; int16 tensors
        keep their observed extremes (the 8-bit grid's clipping trade-off does not apply). The
        model's ``outputs`` under ``auto`` take the ``headroom`` method, their extremes widened
        for samples beyond the calibration data: clipping trades a few large values for finer
        steps, and a classifier's largest logits are its answer (EfficientNet-Lite0: clipped
        logits flipped 4 of the 126 crops the float model is sure of, the observed extremes
        2, where the two top logits of cup and coffee mug both saturated, with headroom none;
        docs/measurements.md)."""
        kept = dict.fromkeys(outputs, "headroom") if self.method == "auto" else {}
        overrides = kept | {t: "minmax" for t in self.int16_tensors} | \
            dict(self.method_overrides)
        grid = {} if arith is None else {"levels": 2 ** arith.activation_bits,
                                         "symmetric": arith.activation_symmetric}
        collector = calibrator or make_calibrator(
            self.method, percentile=self.percentile, overrides=overrides, **grid)
        return WithChannelMeans(collector) if self.bias_correction else collector


#: the ``QuantConfig.rounding`` choices
ROUNDINGS = ("auto", "nearest", "gptq", "adaround")


@dataclass
class QuantPreset:
    """Parameters fixed by the caller instead of calibration (used by ``import_qdq``).

    Attributes:
        params: activation tensor -> parameters.
        weights: weight initializer -> (int8 weights in the float layout, float scales).
        biases: bias initializer -> int64 values in accumulator units.
    """

    params: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    biases: dict = field(default_factory=dict)


class _NoCalibration:
    """Stands in for a calibrator when every parameter comes from a preset."""

    def collect(self, name: str, values: object) -> None:  # pragma: no cover - unused
        pass

    def range_of(self, name: str) -> tuple[float, float]:
        from ortnpu.errors import CalibrationError

        raise CalibrationError(f"tensor {name!r} has no quantization parameters in the model "
                               "and no calibration data was given")


def quantize(model: onnx.ModelProto, target: Target | str | None = None,
             calibration_data: CalibrationData = None, *,
             config: QuantConfig | None = None, per_channel: bool | None = None,
             method: str | None = None, optimize: bool = True,
             calibrator: Calibrator | None = None, calibrated: Calibrator | None = None,
             force_cpu: Iterable[str] = (),
             preset: QuantPreset | None = None,
             result: QuantizationResult | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             freeze: Mapping[str, object] | None = None) -> onnx.ModelProto:
    """Quantize a float model for ``target`` into an NPU graph.

    Args:
        model: the float model.
        target: a :class:`Target`, a preset name or a TOML path (default ``tflite-int8``).
        calibration_data: real samples: an array (single input), an iterable of input dicts or
            an ``onnxruntime.quantization.CalibrationDataReader``.
        config: a :class:`QuantConfig`; ``per_channel``, ``method`` and ``force_cpu`` are
            shortcuts that override its fields.
        optimize: run :func:`ortnpu.optimize` first (folds BatchNormalization etc.).
        calibrator: a custom statistics collector (overrides ``method``).
        calibrated: a calibrator already filled by :func:`~ortnpu.quant.calibrate` on this
            (optimized) model; calibration is then skipped (autofix quantizes many times).
        preset: parameters fixed by the caller (QDQ import) instead of calibration.
        result: filled with the placement of every float node, when given.
        input_shapes: fixed shapes for dynamic inputs, ``{"x": [1, 3, 224, 224]}``.
        freeze: inputs replaced by constants, ``{"sr": 16000}``: the NPU graph has no such
            input, an ``If`` on it keeps only the branch taken; calibration data may still
            hold the frozen inputs (they are ignored).

    Returns:
        The NPU graph as an ``onnx.ModelProto``.
    """
    import dataclasses

    config = config or QuantConfig()
    if per_channel is not None:
        config = dataclasses.replace(config, per_channel=per_channel)
    if method is not None:
        config = dataclasses.replace(config, method=method)
    if force_cpu:
        config = dataclasses.replace(config, force_cpu=config.force_cpu | frozenset(force_cpu))
    target = load_target(target)
    if calibration_data is None and preset is None and calibrated is None:
        raise UnsupportedError("quantize needs calibration data: real samples of the model's "
                               "inputs (an array, dicts, or a CalibrationDataReader)")
    if (config.chooses_equalization(target.arithmetic) and preset is None and calibrated is None
            and calibrator is None and calibration_data is not None):
        from ortnpu.quant.per_tensor import equalizable

        prepared = _prepare(model, optimize, False, input_shapes, freeze, target,
                            config.force_cpu)
        if equalizable(prepared, streams=config.equalize_streams):
            return _quantize_choosing_equalization(
                model, prepared, target, calibration_data, config, optimize=optimize,
                result=result, input_shapes=input_shapes, freeze=freeze)
    auto_rounding = config.rounding == "auto" and not config.adaround
    config = config.resolved(target.arithmetic, fixed_weights=preset is not None)
    if calibrated is not None and config.learned_rounding \
            and not isinstance(calibrated, GramCollector):
        if not auto_rounding:
            raise UnsupportedError(f"rounding={config.rounding!r} needs the layers' input "
                                   "statistics: pass calibration data, or a calibrator that "
                                   "ortnpu.quant.read_npu_inputs filled")
        config = dataclasses.replace(config, rounding="nearest")
    model = _prepare(model, optimize, False, input_shapes, freeze, target, config.force_cpu)
    model = _upgrade_opset(model, 21 if target.arithmetic.activation_bits == 16 or
                           config.int16_tensors else 13)
    model = NameNodes()(model).model  # unique node names: placement and Placement key by name
    if config.equalize:
        from ortnpu.quant.per_tensor import equalize, replayable

        data = None
        if calibrated is None and calibration_data is not None:
            data = calibration_data = replayable(calibration_data, model)
        model = equalize(model, data, ignore=frozenset(freeze or ()),
                         streams=config.equalize_streams and bool(config.per_channel))
    view = GraphView.build(model)
    choice = None
    if calibrated is not None:
        calib = calibrated
    elif calibration_data is not None:
        collector = config.collector(calibrator, target.arithmetic,
                                     [o.name for o in model.graph.output])
        choose = (calibrator is None and preset is None
                  and target.arithmetic.activation_bits == 8
                  and histogram_of(collector) is not None)
        if choose or config.reads_npu_inputs:
            # the data is read again to score the two range choices, or to read the layers'
            # quantized inputs
            from ortnpu.quant.per_tensor import replayable

            calibration_data = replayable(calibration_data, model)
        if config.learned_rounding and not config.reads_npu_inputs:
            # the layers' float input statistics are gathered in the same pass
            collector = GramCollector(collector, find_layers(model))
        calib = calibrate(model, calibration_data, collector, ignore=frozenset(freeze or ()))
        chosen = choose_range_method(
            model, calibration_data, calib, quantize_again(model, target, config, calib, preset),
            ignore=frozenset(freeze or ())) if choose else None
        kept = None
        if chosen is not None:
            choice, kept, kept_result = chosen
        if config.reads_npu_inputs:   # the kept ranges' graph rounds to nearest: read its inputs
            calib = read_npu_inputs(model, target, config, calib, calibration_data,
                                    preset=preset, nearest=kept, ignore=frozenset(freeze or ()))
        elif kept is not None and not config.learned_rounding:
            # the kept ranges' graph is this quantization's result
            if result is not None:
                result.placements = kept_result.placements
                result.range_choice = choice
            return kept
    else:
        calib = _NoCalibration()
    preset = preset or QuantPreset()
    # a layer npu_forms rebuilt (a patch embedding, a ConvTranspose, a 1-D Conv) takes the
    # given integer weights of the layer it replaces, in its own layout, and its output's
    # given parameters where a value-moving node now writes that output
    preset = dataclasses.replace(preset, weights=carry_weights(model, preset.weights),
                                 params=carry_params(model, preset.params))
    per_channel = target.arithmetic.per_channel if config.per_channel is None \
        else config.per_channel
    learned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    deltas: dict[str, np.ndarray] = {}
    if config.learned_rounding and isinstance(calib, GramCollector):
        options = AdaRoundOptions(iterations=config.adaround_iterations)
        solver = config.rounding
        stale = calib.stale(config.int16_tensors)
        # a layer whose input changed width keeps GPTQ's rounding: the Gram of its int8
        # inputs is the wider grid's plus the int8 noise on the diagonal, a damping. AdaRound's
        # rounding, learned to offset the int8 grid's error, and any measured bias do not carry
        # over (nearest rounding, no bias delta for those)
        learned = {k: v for k, v in calib.learned(target.arithmetic, per_channel, options,
                                                  solver).items()
                   if (solver == "gptq" or k not in stale)
                   and k not in preset.weights}   # the caller's exact win
        if config.adaround_bias_correction or solver == "gptq":
            deltas = {k: v for k, v in calib.bias_deltas(target.arithmetic, per_channel,
                                                          options, solver).items()
                      if k not in preset.weights and k not in stale}
    ctx = QuantContext(view=view, target=target, calibrator=calib,
                       per_channel=bool(config.per_channel), wide_tensors=config.int16_tensors,
                       observed_tensors=config.int16_tensors.difference(
                           dict(config.method_overrides)),
                       preset_params=dict(preset.params), preset_weights=dict(preset.weights),
                       learned_weights=learned,
                       preset_biases=dict(preset.biases),
                       bias_correction=bool(config.bias_correction), bias_deltas=deltas)
    out = Emitter(ctx)
    for name in [*view.constants, *(i.name for i in model.graph.input),
                 *(o for n in all_nodes(model.graph) for o in n.output)]:
        out._names.add(name)   # subgraph bodies' own names too: a new name must not shadow one
    out.float_ready.update(i.name for i in model.graph.input)
    plan = place(model, target, force_cpu=sorted(config.force_cpu),
                 force_npu=sorted(config.force_npu), strict_names=False,
                 wide_softmax_on_cpu=config.wide_softmax_on_cpu)
    unplaced = [n.name for n in model.graph.node if n.name not in plan.placement]
    if unplaced:
        # placement reads a dynamic batch as 1 and rewrites that copy into NPU forms: a rewrite
        # that needs the batch static would give it nodes this graph lacks
        inputs = ", ".join(i.name for i in model.graph.input)
        raise ModelError(f"{model.graph.name or '<model>'}: placement (which reads a dynamic "
                         f"batch as 1) and quantize rewrote the graph differently around "
                         f"{', '.join(map(repr, unplaced[:3]))}; fix the batch with "
                         f"--input-shape (inputs: {inputs}) and report the model")
    by_name = {n.name: n for n in model.graph.node}
    fused_of: dict[str, list[onnx.NodeProto]] = {}
    for absorbed_name, producer in plan.fused_into.items():
        fused_of.setdefault(producer, []).append(by_name[absorbed_name])
    placements: list[Placement] = []
    absorbed: dict[str, str] = {}
    for node in model.graph.node:
        if node.name in absorbed:
            placements.append(Placement(node.name, node.op_type, "NPU",
                                        fused_into=absorbed[node.name]))
            continue
        if plan.placement[node.name] == "CPU":
            reason: str | None = plan.reasons[node.name]
        elif node.name in plan.fused_into and plan.verdicts[node.name].supported:
            reason = _calibration_gap(node, ctx)  # its producer fell back: lower it alone
        elif node.name in plan.fused_into:
            reason = plan.verdicts[node.name].reason
        else:
            reason = _calibration_gap(node, ctx)
        if reason is None:
            rule = RULE_OF_OP[node.op_type]
            fused = fused_of.get(node.name, [])
            bias = next((f for f in fused if f.op_type == "Add"), None)
            act = next((f for f in fused if f.op_type != "Add"), None)
            if bias is not None and node.output[0] in ctx.preset_params:
                bias = act = None   # an imported model quantized the product: keep its step
            state = out.snapshot()
            try:
                rule.emit(Match(node, act, bias), ctx, out)
            except (ValueError, OrtNpuError) as exc:
                out.restore(state)
                reason = str(exc) if str(exc).startswith(f"{node.op_type} '") else \
                    f"{node.op_type} '{node.name}': {exc}"
            else:
                placements.append(Placement(node.name, node.op_type, "NPU"))
                for f in (bias, act):
                    if f is not None:
                        absorbed[f.name] = node.name
                continue
        _emit_cpu(node, out, reason)
        placements.append(Placement(node.name, node.op_type, "CPU", reason))
    for o in model.graph.output:
        out.float_input(o.name)
    if result is not None:
        result.placements = placements
        result.range_choice = choice
    return _assemble(model, target, out, placements)


def _quantize_choosing_equalization(model: onnx.ModelProto, prepared: onnx.ModelProto,
                                    target: Target, calibration_data: CalibrationData,
                                    config: QuantConfig, *,
                                    optimize: bool, result: QuantizationResult | None,
                                    input_shapes: Mapping[str, Sequence[int]] | None,
                                    freeze: Mapping[str, object] | None) -> onnx.ModelProto:
    """:func:`quantize` with and without equalization, the graph closer to float kept
    (:mod:`ortnpu.quant.equalize_choice`; per-channel 8-bit targets, ``equalize=None``).
    ``prepared`` is ``model`` as quantize prepares it: the float reference of the choice."""
    import dataclasses

    from ortnpu.quant.equalize_choice import choose_equalization
    from ortnpu.quant.per_tensor import replayable

    data = replayable(calibration_data, model)

    def run(equalize: bool) -> tuple[onnx.ModelProto, QuantizationResult]:
        res = QuantizationResult()
        npu = quantize(model, target, data, config=dataclasses.replace(config, equalize=equalize),
                       optimize=optimize, result=res, input_shapes=input_shapes, freeze=freeze)
        return npu, res

    choice, npu, kept = choose_equalization(prepared, data, run,
                                            ignore=frozenset(freeze or ()))
    if result is not None:
        result.placements = kept.placements
        result.range_choice = kept.range_choice
        result.equalization = choice
    return npu


def read_npu_inputs(model: onnx.ModelProto, target: Target, config: QuantConfig,
                    calib: Calibrator, data: CalibrationData, *,
                    preset: QuantPreset | None = None, nearest: onnx.ModelProto | None = None,
                    ignore: frozenset[str] = frozenset()) -> GramCollector:
    """``calib`` with every layer's input statistics as the NPU graph quantizes that input,
    for the learned rounding (``QuantConfig.rounding``/``adaround_inputs``).

    Args:
        model: the prepared float model, as calibrated.
        target: the target.
        config: the resolved choices.
        calib: the filled calibrator (its ranges are the NPU graph's).
        data: the calibration data, replayable (it is read once more).
        preset: the caller's fixed parameters.
        nearest: the NPU graph of these ranges with nearest rounding, when one was already
            made (``auto``'s range choice makes it); else it is made here.
        ignore: inputs of the data to drop (frozen inputs).

    Returns:
        A :class:`~ortnpu.quant.adaround.GramCollector` around ``calib``: pass it to
        :func:`quantize` as ``calibrated`` (autofix does, once for all its trials).
    """
    from ortnpu.quant.adaround import read_quantized_inputs
    from ortnpu.quant.range_choice import calibration_feeds, quantize_again

    if config.adaround_inputs not in ("quantized", "float"):
        raise UnsupportedError(f"adaround_inputs must be 'quantized' or 'float', got "
                               f"{config.adaround_inputs!r}")
    if nearest is None:
        nearest, _ = quantize_again(model, target, config, calib, preset)()
    collector = GramCollector(calib, find_layers(model),
                              need_cross=config.rounding == "adaround",
                              wide=frozenset(config.int16_tensors))
    read_quantized_inputs(collector, model, nearest,
                          calibration_feeds(model, data, 1 << 30, ignore))
    return collector


def _calibration_gap(node: onnx.NodeProto, ctx: QuantContext) -> str | None:
    """Why an NPU node cannot be quantized after all: an input calibration never saw.

    Placement (:func:`ortnpu.placement.place`) decided everything that depends on the model and
    the target; only the calibration data can still leave a tensor without a range.
    """
    rule = RULE_OF_OP.get(node.op_type)
    for t in (rule.reads(node, ctx) if rule is not None else node.input):
        if t and t not in ctx.view.constants and t not in ctx.params \
                and t not in ctx.preset_params:
            try:
                ctx.calibrator.range_of(t)
            except OrtNpuError:
                return (f"{node.op_type} '{node.name}': input {t!r} is not a float tensor seen "
                        "during calibration")
    return None


def _emit_cpu(node: onnx.NodeProto, out: Emitter, reason: str) -> None:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    del copy.input[:]
    copy.input.extend(out.float_input(i) if i else i for i in node.input)
    for name in implicit_inputs(node):
        out.float_input(name)  # outer tensors a subgraph body reads keep their float names
    copy.doc_string = f"CPU: {reason}"
    out.nodes.append(copy)
    out.float_ready.update(o for o in node.output if o)


def _drop_unused_npu_nodes(out: Emitter, outputs: set[str]) -> None:
    """Remove the nodes nothing reads (a Sqrt's table when its only reader, a Div, took RSQRT
    from the Sqrt's input; a Sub whose only reader, a square, took SQUARED_DIFFERENCE from its
    operands) and the value infos of their tensors. Nodes with subgraphs stay."""
    while True:
        read = {i for n in out.nodes for i in node_inputs(n)} | outputs
        dead = [k for k, n in enumerate(out.nodes)
                if not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in n.attribute)
                and not any(o in read for o in n.output if o)]
        if not dead:
            break
        gone = {o for k in dead for o in out.nodes[k].output}
        for k in reversed(dead):
            del out.nodes[k]
        out.value_info[:] = [v for v in out.value_info if v.name not in gone]


def _assemble(model: onnx.ModelProto, target: Target, out: Emitter,
              placements: list[Placement]) -> onnx.ModelProto:
    g = model.graph
    _drop_unused_npu_nodes(out, {o.name for o in g.output})
    used = {i for n in out.nodes for i in node_inputs(n)}
    initializers = [i for i in g.initializer if i.name in used] + out.initializers
    graph = helper.make_graph(out.nodes, g.name or "npu_graph", list(g.input), list(g.output),
                              initializer=initializers, value_info=out.value_info,
                              doc_string=f"NPU graph for target {target.name}, made by ortnpu")
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx", DOMAIN)]
    default = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [13])
    if out.needs_opset21:
        default = max(default, 21)
    opsets += [helper.make_opsetid("", max(default, 13)),
               helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    npu = helper.make_model(graph, opset_imports=opsets, producer_name="ortnpu",
                            ir_version=max(model.ir_version, 10 if default >= 21 else 8))
    tensors = {name: {**p.to_dict(), "int_name": out.int_tensors.get(name, "")}
               for name, p in out.ctx.params.items()}
    meta = {META_TARGET: target.name, META_TARGET_TOML: target.to_toml(),
            META_TENSORS: json.dumps(tensors, sort_keys=True),
            META_PLACEMENT: json.dumps([p.__dict__ for p in placements])}
    for k, v in {p.key: p.value for p in model.metadata_props}.items():
        if not k.startswith("ortnpu.target") and k not in meta:
            meta[k] = v
    helper.set_model_props(npu, meta)
    return npu
