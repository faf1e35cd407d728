"""``ortnpu.evaluate``: support verdicts, partition and performance estimate in one report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from ortnpu.errors import ModelError
from ortnpu.estimate import estimate
from ortnpu.onnx_types import np_dtype, type_name
from ortnpu.partition import prepare
from ortnpu.passes.graph import GraphIndex, node_inputs, shape_of
from ortnpu.placement import batch_one as fix_batch_one
from ortnpu.placement import place
from ortnpu.report.evaluation import EvaluationReport
from ortnpu.target.spec import Target, load_target


def load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """Return ``model`` itself, or load it from a file path.

    Raises:
        ModelError: the file is missing or not an ONNX model.
    """
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, Path)):
        raise ModelError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        loaded = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model: {exc}") from None
    if not loaded.graph.node:
        raise ModelError(f"{path}: the model has no nodes (is it an ONNX model?)")
    return loaded


def rewrite_note(result: Any) -> str:
    """One note line for a rewrite placement applied before deciding (quantize applies it too):
    the pass, how many changes, and the first ones."""
    shown = "; ".join(result.changes[:2])
    more = f"; {len(result.changes) - 2} more" if len(result.changes) > 2 else ""
    return (f"rewritten into NPU forms by {result.name} ({len(result.changes)}, quantize does "
            f"the same): {shown}{more}")


def model_facts(model: onnx.ModelProto, name: str = "") -> dict[str, Any]:
    """Name, producer, opsets, inputs and outputs (name, shape, type), node count."""
    inits = {t.name for t in model.graph.initializer}

    def info(v: onnx.ValueInfoProto) -> dict[str, Any]:
        elem = v.type.tensor_type.elem_type
        return {"name": v.name, "shape": shape_of(v),
                "dtype": (type_name(elem) if np_dtype(elem) is None else np_dtype(elem).name)
                if elem else None}

    return {
        "name": name or model.graph.name,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [info(i) for i in model.graph.input if i.name not in inits],
        "outputs": [info(o) for o in model.graph.output],
        "node_count": len(model.graph.node),
    }


def evaluate(model: onnx.ModelProto | str | Path, target: Target | str | None = None, *,
             optimize: bool = False, input_shapes: Mapping[str, Sequence[int]] | None = None,
             force_cpu: Sequence[str] = (), force_npu: Sequence[str] = (),
             npu_inputs: Sequence[str] | None = None, npu_outputs: Sequence[str] | None = None,
             min_subgraph_nodes: int | None = None, verify: bool = False,
             optimize_options: Mapping[str, Any] | None = None, name: str = "",
             optimize_log: Sequence[Mapping[str, Any]] | None = None,
             verification: Mapping[str, Any] | None = None,
             batch_one: bool = True) -> EvaluationReport:
    """Evaluate a float model on a target: per-node verdicts, partition, estimate.

    Args:
        model: the model or a path to an ``.onnx`` file; never modified.
        target: a :class:`~ortnpu.target.Target`, preset name or ``.toml`` path (default
            ``tflite-int8``).
        optimize: run :func:`ortnpu.optimize` first (the report then lists its passes).
        input_shapes: fixed shapes for dynamic inputs; implies the FixInputShapes pass when
            ``optimize`` is set, else they are applied alone.
        force_cpu: node names or op types to put on the CPU.
        force_npu: node names or op types to put on the NPU.
        npu_inputs: tensor names where the NPU part starts (pre-processing stays on the CPU).
        npu_outputs: tensor names where the NPU part ends (post-processing stays on the CPU).
        min_subgraph_nodes: overrides the target's minimum NPU subgraph size.
        verify: with ``optimize``, compare the optimized and original outputs on random inputs.
        optimize_options: further keyword arguments of :func:`ortnpu.optimize`.
        name: the model's name in the report (default: the file name or graph name).
        optimize_log: per-pass results of an optimization already done by the caller
            (``PassResult.to_dict()`` of each pass), shown in the report.
        verification: an output comparison already done by the caller
            (:func:`ortnpu.passes.verify.compare_models`), shown in the report.
        batch_one: an input whose only dynamic dim is the first (the batch) is evaluated with
            batch 1, and the report says so; set False to keep it dynamic.

    Returns:
        The :class:`~ortnpu.report.EvaluationReport`.

    Raises:
        ModelError: unreadable or malformed model, bad option values.
        TargetError: unknown or malformed target.
    """
    if not name and isinstance(model, (str, Path)):
        name = Path(model).name
    original = load_model(model)
    target = load_target(target)
    optimize_log = [dict(d) for d in optimize_log] if optimize_log is not None else None
    verification = dict(verification) if verification is not None else None
    work = original
    if optimize:
        from ortnpu.passes import optimize as run_optimize

        work, result = run_optimize(original, input_shapes=input_shapes, target=target,
                                    return_results=True, **dict(optimize_options or {}))
        optimize_log = [d.to_dict() for d in result.details]
        if verify:
            from ortnpu.passes.verify import compare_models

            verification = compare_models(original, work, input_shapes=input_shapes)
    elif input_shapes:
        from ortnpu.passes import FixInputShapes

        work = FixInputShapes(input_shapes)(original).model
    batch_notes: list[str] = []
    if batch_one:
        work, batch_notes = fix_batch_one(work)
    rewrites: list[Any] = []
    work = prepare(work, target, rewrites, keep=force_cpu)
    plan = place(work, target, force_cpu=force_cpu, force_npu=force_npu,
                 npu_inputs=npu_inputs, npu_outputs=npu_outputs,
                 min_subgraph_nodes=min_subgraph_nodes, batch=False)
    est = estimate(work, target, plan)
    index = GraphIndex(work.graph)
    edges = []
    for node in work.graph.node:
        for x in node_inputs(node):
            producer = index.producer.get(x)
            if producer is not None and producer.name != node.name and \
                    producer.op_type != "Constant":
                edges.append((producer.name, node.name))
    est.notes[:0] = batch_notes + [rewrite_note(r) for r in rewrites]
    return EvaluationReport(model=model_facts(work, name), target=target, plan=plan,
                            estimate=est, edges=list(dict.fromkeys(edges)),
                            optimize=optimize_log, verification=verification)


__all__ = ["evaluate", "load_model", "model_facts"]

