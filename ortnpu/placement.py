"""Placement: the one decision of where each node of a float model runs, and why.

:func:`place` is the single source of truth that ``ortnpu.evaluate``, ``ortnpu.quantize`` (and
through it ``import_qdq``) call, and that an execution provider can call: a node runs on the NPU
only when **both** hold:

1. ortnpu can lower it to integer ``com.ortnpu`` ops: standard domain, float32 tensors, a
   lowering rule for its op (:data:`ortnpu.quant.lowering.RULE_OF_OP`) whose check passes;
2. the target's NPU runs it: the ``[support]`` rules
   (:func:`ortnpu.target.support.target_problems`).

Every reason is true: advice to edit the target (``add it to op_types``, ``remove it from
cpu_preferred``, raise a limit) is given only when ortnpu can lower the node, and then it lists
every target limit the node breaks, so that following it moves the node. When ortnpu cannot
lower a node, the reason says so and gives no target advice. User overrides (``force_cpu``,
``force_npu``, the NPU region) come first; ``force_npu`` overrides the target's limits but not a
missing lowering. Fused activations (a Relu/Clip that becomes the output clamp of the layer
before) are decided here too. An output head that one 8-bit scale cannot hold (a graph-output
Concat joining bounded scores with an unbounded tensor, :func:`output_head_problem`) stays on the
CPU in float by default, and so does a Softmax over rows too long for the int16 SOFTMAX's exp
table (:func:`wide_softmax_problem`). The NPU nodes are then grouped into convex subgraphs
(:mod:`ortnpu.partition`); subgraphs below ``min_subgraph_nodes`` go back to the CPU.

Shapes are read with a dynamic batch fixed to 1 (the simulated NPU runs one sample after the
other), the same for every caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from ortnpu.errors import ModelError
from ortnpu.partition import (
    CPU,
    NPU,
    Constants,
    PartitionPlan,
    cluster,
    prepare,
    region_of,
    subgraphs_of,
)
from ortnpu.passes.graph import GraphIndex, shape_of, shapes_and_types, topological_order
from ortnpu.target.spec import Target, load_target
from ortnpu.target.support import STANDARD_DOMAINS, Verdict, is_standard, target_problems

#: Element types ortnpu quantizes; other tensors (int64 indices, bool masks...) stay float/CPU.
QUANTIZABLE = (onnx.TensorProto.FLOAT,)


def batch_one(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Fix inputs whose only dynamic dim is axis 0 to batch 1; return the model and notes."""
    from ortnpu.passes import FixInputShapes

    inits = {t.name for t in model.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for inp in model.graph.input:
        dims = shape_of(inp)
        if inp.name in inits or not dims:
            continue
        rest_static = all(isinstance(d, int) and d > 0 for d in dims[1:])
        if rest_static and not (isinstance(dims[0], int) and dims[0] > 0):
            shapes[inp.name] = [1, *dims[1:]]
    if not shapes:
        return model, []
    fixed = FixInputShapes(shapes)(model).model
    names = ", ".join(repr(n) for n in shapes)
    return fixed, [f"input(s) {names} have a dynamic batch; evaluated with batch 1 (use "
                   "--input-shape to choose another)"]


#: What removes an op ortnpu does not lower, where `ortnpu optimize` does (true of its passes).
_NO_LOWERING_HINTS = {
    "BatchNormalization": "; `ortnpu optimize` folds it into the layer before it",
    "Dropout": "; `ortnpu optimize` removes it (inference mode)",
    "Constant": "; `ortnpu optimize` turns it into an initializer",
}

_QUOTED = re.compile(r"'[^']*'")
_BRACKETS = re.compile(r"\[[^\]]*\?[^\]]*\]")


def cause_of(problem: str) -> str:
    """The grouping key of a reason: without the node label, tensor names and dynamic shapes.

    ``Conv 'c7': input 'x_7' has a dynamic shape [?, 3]; ...`` and the same on another node
    give one key, so a report can say "×24" instead of listing 24 near-identical lines.
    """
    return _BRACKETS.sub("[…]", _QUOTED.sub("'…'", problem))


def cpu_lines(placements: Iterable[Any], verbose: bool = False) -> list[str]:
    """The grouped CPU table of a quantizer's placements (``node``, ``op_type``, ``device``,
    ``reason``), as ``ortnpu evaluate`` prints it, for the CLIs that quantize."""
    from ortnpu.partition import group_by_cause
    from ortnpu.report.text import cpu_group_lines

    cpu = [p for p in placements if p.device == CPU]
    if not cpu:
        return []
    reasons = {p.node: p.reason for p in cpu}

    def cause(p: Any) -> str:
        label = f"{p.op_type} '{p.node}': "
        return cause_of(p.reason[len(label):] if p.reason.startswith(label) else p.reason)

    groups = group_by_cause((p.node, p.op_type, cause(p)) for p in cpu)
    return cpu_group_lines(groups, reasons, verbose)


class _Lowering:
    """Whether ortnpu can lower a node to integer ops (the lowering rules' own checks)."""

    def __init__(self, model: onnx.ModelProto, target: Target,
                 dtypes: Mapping[str, int]) -> None:
        from ortnpu.quant.context import GraphView, QuantContext

        self.ctx = QuantContext(view=GraphView.build(model), target=target, calibrator=None,
                                per_channel=target.arithmetic.per_channel)  # type: ignore[arg-type]
        self.dtypes = dtypes
        self._folded: set[str] | None = None

    def problem(self, node: onnx.NodeProto) -> str | None:
        """``None`` when a rule lowers ``node``, else why not (without the node label)."""
        from ortnpu.quant.lowering import RULE_OF_OP

        op = node.op_type
        if not is_standard(node):
            return (f"op of domain {node.domain!r} is not a standard ONNX op; ortnpu lowers "
                    "standard ops only, so it runs on the CPU")
        rule = RULE_OF_OP.get(op)
        if rule is None:
            return (f"ortnpu has no integer lowering for {op} yet; it runs on the CPU in float"
                    + self._hint(node))
        view = self.ctx.view
        for kind, names in (("input", node.input), ("output", node.output)):
            for name in names:
                dtype = self.dtypes.get(name)
                if name and view.const(name) is None and dtype and dtype not in QUANTIZABLE:
                    dname = onnx.helper.tensor_dtype_to_np_dtype(dtype).name \
                        if dtype != onnx.TensorProto.STRING else "string"
                    return (f"{kind} '{name}' is {dname}; ortnpu quantizes float32 tensors "
                            f"only, so it runs on the CPU in {dname}")
        message = rule.check(node, self.ctx)
        if message is None:
            return None
        label = f"{op} '{node.name}': "
        return message[len(label):] if message.startswith(label) else message

    def _hint(self, node: onnx.NodeProto) -> str:
        """What `ortnpu optimize` would do about an op without lowering, when it would."""
        if node.op_type != "BatchNormalization":
            return _NO_LOWERING_HINTS.get(node.op_type, "")
        if self._folded is None:  # ask the pass itself, once: the hint must be true
            from ortnpu.passes import FoldBatchNorm

            try:
                after = FoldBatchNorm()(self.ctx.view.model).model
                self._folded = {n.name for n in self.ctx.view.model.graph.node} - \
                    {n.name for n in after.graph.node}
            except ModelError:
                self._folded = set()
        return _NO_LOWERING_HINTS["BatchNormalization"] if node.name in self._folded else ""

    def fused_nodes(self, node: onnx.NodeProto, target: Target) -> list[onnx.NodeProto]:
        """The nodes the lowering of ``node`` absorbs, in graph order: a MatMul's bias Add
        (:func:`~ortnpu.quant.lowering.fusable_bias`), then the Relu/Clip that becomes its
        output clamp."""
        from ortnpu.quant.lowering import RULE_OF_OP, fusable_activation, fusable_bias

        rule = RULE_OF_OP.get(node.op_type)
        if rule is None or not rule.fuses_activation:
            return []
        bias = fusable_bias(node, self.ctx)
        act = fusable_activation(node, self.ctx)
        if act is not None and act.op_type not in target.support.fused_activations:
            act = None
        return [n for n in (bias, act) if n is not None]


#: Ops whose output range is fixed by the op, whatever the data: (low, high).
BOUNDED_OUTPUTS: dict[str, tuple[float, float]] = {
    "Sigmoid": (0.0, 1.0), "Softmax": (0.0, 1.0), "HardSigmoid": (0.0, 1.0),
    "Tanh": (-1.0, 1.0)}


#: Ops whose output holds the values of their first input, moved (output_head_problem looks
#: through them for the op that bounds the values).
_MOVES_VALUES = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                           "Identity"})


def output_head_problem(node: onnx.NodeProto, index: GraphIndex,
                        graph_outputs: set[str], target: Target) -> str | None:
    """Why a model-output Concat stays on the CPU in float, or ``None``.

    A detector writes boxes (pixels, up to the image size) and class scores (a Sigmoid's
    [0, 1]) into one output Concat. Lowered, the Concat has one scale: with 8-bit activations
    the scores keep a few levels or none (measured on the zoo's YOLO-style head: class-score
    cosine 0.00 on tflite-int8 and n2d2-int8). On the CPU each input leaves the NPU on its own
    scale and the Concat joins float values; it costs nothing, the output is dequantized
    anyway. The decision needs no data (evaluate has none): some inputs come from an op whose
    range is fixed (:data:`BOUNDED_OUTPUTS`), others from ops whose range only calibration
    knows. Targets with 16-bit activations hold both (cosine 1.00 on tflite-a16w8).
    """
    if node.op_type != "Concat" or target.arithmetic.activation_bits != 8 or \
            not any(o in graph_outputs for o in node.output):
        return None
    bounded, free = [], []
    for name in node.input:
        producer = index.producer.get(name)
        # through ops that only move values (a Softmax over an inner axis sits between two
        # Transposes once placement's prepare moved it to the last axis)
        while producer is not None and producer.op_type in _MOVES_VALUES and producer.input:
            producer = index.producer.get(producer.input[0])
        if producer is None:
            continue   # a constant or a model input: nothing to tell from the graph
        span = BOUNDED_OUTPUTS.get(producer.op_type)
        if span is not None:
            bounded.append(f"'{name}' ({producer.op_type}, in [{span[0]:g}, {span[1]:g}])")
        else:
            free.append(f"'{name}'")
    if not bounded or not free:
        return None
    return (f"output head kept in float: it joins {', '.join(bounded)} with "
            f"{', '.join(free)} (a range only the data sets) into the model output "
            f"'{node.output[0]}'; one 8-bit scale for all would leave the bounded inputs "
            "only the levels the widest input spares (boxes up to 640 leave scores in [0, 1] "
            "under one level), so each input leaves the NPU on its own scale (force_npu "
            "lowers it anyway)")


#: Largest share of a confident row's probability that a wide int16 Softmax may lose to its
#: exp table's floor before it stays on the CPU by default (rows up to 165 values pass).
SOFTMAX_FLOOR_SHARE = 0.01


def wide_softmax_problem(node: onnx.NodeProto, shapes: Mapping[str, Any],
                         target: Target) -> str | None:
    """Why a Softmax over a long row stays on the CPU in float, or ``None``.

    TFLite's int16 SOFTMAX reads every value far below the row maximum as 2/32767 instead of
    about 0 (:func:`ortnpu.domain.ops_softmax.int16_floor_share`). Over an OCR recognizer's 6625
    classes those floors take 29 % of the sum, and the top probability of a confident step
    reads 0.71 (measured on PP-OCRv4 rec, tflite-a16w8: the largest single loss, 11.3 dB
    alone). The 8-bit SOFTMAX counts such values as 0 and is limited to 511 values anyway.
    Data-free, so evaluate and quantize decide alike.
    """
    from ortnpu.domain.ops_softmax import int16_floor_share

    arith = target.arithmetic
    if node.op_type != "Softmax" or arith.activation_bits <= 8 or \
            not arith.rounding.startswith("tflite"):
        return None
    shape = shapes.get(node.input[0]) if node.input else None
    depth = shape[-1] if shape else None
    if not isinstance(depth, int) or depth < 2:
        return None
    share = int16_floor_share(depth)
    if share <= SOFTMAX_FLOOR_SHARE:
        return None
    return (f"a Softmax over rows of {depth} values kept in float: the int16 SOFTMAX reads "
            "each value 10 or more below its row maximum as exp(-10) (2 of 32767) instead of "
            f"about 0, so on a confident row the other {depth - 1} values take "
            f"{share:.0%} of the sum and the top probability reads {1 - share:.2f} instead of "
            f"1.00 (at most {SOFTMAX_FLOOR_SHARE:.0%} is accepted); force_npu lowers it "
            "anyway")


def _target_reason(problems: Sequence[tuple[str, str]]) -> str:
    """One sentence from the target's problems; it names everything that must change."""
    keys = [k for k, _ in problems]
    texts = [t for _, t in problems]
    edits = (["remove it from cpu_preferred"] if "cpu_preferred" in keys else []) + \
        (["add it to op_types"] if "op_types" in keys else [])
    if len(texts) == 1 and keys[0] == "cpu_preferred":
        return texts[0] + "; remove it from that list to run it on the NPU"
    if len(texts) == 1 and keys[0] == "op_types":
        return texts[0] + "; add it to op_types in the target file to run it on the NPU"
    if len(texts) == 1:
        return texts[0]
    others = len(texts) - len(edits)
    todo = edits + (["lift the other limits named"] if others else [])
    return "; ".join(texts) + f"; to run it on the NPU, {' and '.join(todo)}"


def _matches(node: onnx.NodeProto, selectors: Iterable[str]) -> str | None:
    for s in selectors:
        if s in (node.name, node.op_type):
            return s
    return None


def _check_selectors(nodes: Sequence[onnx.NodeProto], selectors: Sequence[str],
                     option: str) -> None:
    known = {n.name for n in nodes} | {n.op_type for n in nodes}
    unknown = [s for s in selectors if s not in known]
    if unknown:
        raise ModelError(f"{option} names {', '.join(map(repr, unknown))}: neither a node name "
                         "nor an op type of the model")


def place(model: onnx.ModelProto, target: Target | str | None = None, *,
          force_cpu: Sequence[str] = (), force_npu: Sequence[str] = (),
          npu_inputs: Sequence[str] | None = None, npu_outputs: Sequence[str] | None = None,
          min_subgraph_nodes: int | None = None, batch: bool = True,
          strict_names: bool = True, wide_softmax_on_cpu: bool = True) -> PartitionPlan:
    """Decide NPU or CPU for every node of a float model, with a reason, fusions and subgraphs.

    Args:
        model: the (optimized) float model; not modified. Unnamed nodes are named
            ``<op>_<index>`` as :class:`~ortnpu.passes.NameNodes` does.
        target: a :class:`~ortnpu.target.Target`, preset name or TOML path.
        force_cpu: node names or op types to run on the CPU whatever the checks say.
        force_npu: node names or op types to run on the NPU although the target's limits
            refuse them (a node ortnpu cannot lower still stays on the CPU, with that reason).
        npu_inputs: tensors where the NPU part starts (pre-processing stays on the CPU).
        npu_outputs: tensors where the NPU part ends (post-processing stays on the CPU).
        min_subgraph_nodes: overrides the target's ``[support] min_subgraph_nodes``.
        batch: read a dynamic batch (the only dynamic dim, axis 0 of an input) as 1.
        strict_names: refuse ``force_cpu``/``force_npu`` names that match no node.
        wide_softmax_on_cpu: keep a Softmax over long rows in float on int16 targets
            (:func:`wide_softmax_problem`); off for a model that quantized its Softmax itself.

    Returns:
        The :class:`~ortnpu.partition.PartitionPlan` (placement, reasons, causes, fusions,
        convex subgraphs, notes).

    Raises:
        ModelError: not a model, a cyclic graph, unknown names in the options, or a node both
            forced to the CPU and to the NPU.
        TargetError: unknown target.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"placement expects an onnx.ModelProto, got {type(model).__name__}")
    target = load_target(target)
    notes: list[str] = []
    if batch:
        model, notes = batch_one(model)
    model = prepare(model, target, keep=force_cpu)
    graph = model.graph
    order = topological_order(graph)
    index = GraphIndex(graph)
    shapes, dtypes = shapes_and_types(model)
    constants = Constants(index)
    lowering = _Lowering(model, target, dtypes)

    force_cpu, force_npu = list(force_cpu), list(force_npu)
    if strict_names:
        _check_selectors(order, force_cpu, "force_cpu")
        _check_selectors(order, force_npu, "force_npu")
    tensors = set(index.producer) | index.graph_inputs
    for option, names in (("npu_inputs", npu_inputs or ()), ("npu_outputs", npu_outputs or ())):
        unknown = [t for t in names if t not in tensors]
        if unknown:
            raise ModelError(f"{option} names {', '.join(map(repr, unknown))}: not a tensor "
                             "computed by the model or a model input")
    region = None
    if npu_inputs or npu_outputs:
        region = region_of(index, list(npu_inputs or []),
                           list(npu_outputs or [o.name for o in graph.output]))

    graph_outputs = {o.name for o in graph.output}
    placement: dict[str, str] = {}
    problems: dict[str, str] = {}
    verdicts: dict[str, Verdict] = {}
    user_cpu: set[str] = set()
    for node in order:
        label = f"{node.op_type} '{node.name}'"
        cpu_by, npu_by = _matches(node, force_cpu), _matches(node, force_npu)
        if cpu_by and npu_by:
            raise ModelError(f"{label} is forced to the CPU ({cpu_by!r}) and to the NPU "
                             f"({npu_by!r}); choose one")
        found = target_problems(target, node, shapes, dtypes=dtypes, constants=constants,
                                require_shapes=True)
        blocked = lowering.problem(node) if node.op_type != "Constant" else None
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            problem = ("holds a constant, nothing to compute; `ortnpu optimize` turns it into "
                       "an initializer")
        elif cpu_by:
            problem = f"forced to the CPU by the user (force_cpu {cpu_by!r})"
            user_cpu.add(node.name)
        elif region is not None and node.name not in region:
            problem = (f"outside the NPU region cut by npu_inputs {list(npu_inputs or [])} / "
                       f"npu_outputs {list(npu_outputs or [])}; it runs on the CPU as pre- or "
                       "post-processing")
            user_cpu.add(node.name)
        elif blocked is not None:
            problem = (f"forced to the NPU by the user, but {blocked}" if npu_by else blocked)
        elif npu_by:
            problem = ""
        elif found:
            problem = _target_reason(found)
        else:
            problem = (output_head_problem(node, index, graph_outputs, target)
                       or (wide_softmax_problem(node, shapes, target) if wide_softmax_on_cpu
                           else None) or "")
        if blocked is not None:
            verdicts[node.name] = Verdict(False, f"{label}: {blocked}")
        elif found:
            verdicts[node.name] = Verdict(False, f"{label}: {_target_reason(found)}")
        else:
            verdicts[node.name] = Verdict(True, f"{label}: runs on the NPU")
        placement[node.name] = CPU if problem else NPU
        if problem:
            problems[node.name] = problem
        elif npu_by and found:
            problems[node.name] = (f"forced to the NPU by the user (the target's check said: "
                                   f"{_target_reason(found)})")

    by_name = {n.name: n for n in order}
    fused_into: dict[str, str] = {}
    for node in order:
        if placement[node.name] != NPU or node.name in fused_into:
            continue   # (an absorbed bias Add does not fuse the activation its producer took)
        for absorbed in lowering.fused_nodes(node, target):
            if absorbed.name in user_cpu:
                break   # (an activation after a bias kept on the CPU cannot fuse either)
            fused_into[absorbed.name] = node.name
            placement[absorbed.name] = NPU
            problems.pop(absorbed.name, None)

    groups = cluster(order, index, placement, set(constants))
    minimum = min_subgraph_nodes or target.support.min_subgraph_nodes
    kept: list[list[str]] = []
    for members in groups:
        if len(members) >= minimum:
            kept.append(members)
            continue
        for name in members:
            placement[name] = CPU
            fused_into.pop(name, None)
            problems[name] = (f"supported, but its NPU subgraph would have only "
                              f"{len(members)} node(s), fewer than the minimum {minimum} "
                              "([support] min_subgraph_nodes); the transfers would cost more "
                              "than the NPU saves")
    inverse = {n: NPU if p == CPU else CPU for n, p in placement.items()}
    islands = cluster(order, index, inverse, set(constants))
    reasons: dict[str, str] = {}
    causes: dict[str, str] = {}
    for node in order:
        name = node.name
        label = f"{node.op_type} '{name}'"
        if name in fused_into:
            role = "bias" if node.op_type == "Add" else "output clamp"
            text = f"fused into {by_name[fused_into[name]].op_type} '{fused_into[name]}' as " \
                   f"its {role}"
        else:
            text = problems.get(name, "runs on the NPU")
        reasons[name] = f"{label}: {text}"
        causes[name] = cause_of(text)
    options: dict[str, Any] = {
        "force_cpu": force_cpu, "force_npu": force_npu, "npu_inputs": list(npu_inputs or []),
        "npu_outputs": list(npu_outputs or []), "min_subgraph_nodes": minimum,
        "batch_one": batch, "wide_softmax_on_cpu": wide_softmax_on_cpu}
    return PartitionPlan(placement=placement, reasons=reasons, verdicts=verdicts,
                         subgraphs=subgraphs_of(kept, order, index, set(constants)),
                         order=[n.name for n in order],
                         op_types={n.name: n.op_type for n in order}, target=target.name,
                         options=options, causes=causes, fused_into=fused_into, notes=notes,
                         cpu_islands=islands)


__all__ = ["BOUNDED_OUTPUTS", "QUANTIZABLE", "SOFTMAX_FLOOR_SHARE", "batch_one", "cause_of",
           "cpu_lines", "output_head_problem", "place", "wide_softmax_problem"]
