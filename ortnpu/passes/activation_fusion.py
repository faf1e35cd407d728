"""Mark ReLU/Clip activations that the NPU applies as the output clamp of the layer before."""

from __future__ import annotations

import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, clip_bounds, get_meta, set_meta

#: ``metadata_props`` key on the producing layer: the activation it absorbs, e.g. ``Relu``.
FUSED_ACTIVATION_KEY = "ortnpu.fused_activation"
#: ``metadata_props`` key on the activation node: the name of the layer it is fused into.
FUSED_INTO_KEY = "ortnpu.fused_into"

#: Layers whose output an NPU can clamp on the way out.
FUSABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul",
                     "AveragePool", "GlobalAveragePool", "MaxPool", "Concat")


class MarkFusedActivations(Pass):
    """Record ``Relu``/``Clip`` activations fused into the layer that produces their input.

    The graph stays standard ONNX and computes exactly what it computed before: the activation
    node is **kept**, and the fusion is recorded in ``metadata_props`` of both nodes
    (``ortnpu.fused_activation`` on the layer, e.g. ``Relu`` or ``Clip(0,6)``;
    ``ortnpu.fused_into`` on the activation). The partitioner keeps the pair together, the
    estimator charges the activation no cycles, and the quantizer turns it into an output clamp.

    Fusion happens when the target lists the activation in ``[support] fused_activations``, the
    layer's op is one the target runs, the layer's output feeds only the activation, and a Clip's
    bounds are constants.

    Args:
        target: the target whose rules apply; ``None`` uses the default support rules.
    """

    def __init__(self, target: object | None = None) -> None:
        from ortnpu.target.spec import SupportRules

        self.rules = target.support if target is not None else SupportRules()  # type: ignore[attr-defined]

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        changes: list[str] = []
        allowed = set(self.rules.fused_activations)
        for act in graph.node:
            if act.op_type not in allowed or act.domain not in ("", "ai.onnx"):
                continue
            producer = index.producer.get(act.input[0])
            if (producer is None or producer.op_type not in FUSABLE_PRODUCERS
                    or producer.op_type not in self.rules.op_types
                    or index.only_consumer(act.input[0]) is not act
                    or get_meta(producer, FUSED_ACTIVATION_KEY) is not None):
                continue
            label = self._label(index, act)
            if label is None:
                continue
            set_meta(producer, FUSED_ACTIVATION_KEY, label)
            set_meta(act, FUSED_INTO_KEY, producer.name)
            changes.append(f"fused {act.op_type} {act.name!r} into {producer.op_type} "
                           f"{producer.name!r} as {label} (node kept, marked in metadata_props)")
        return changes

    @staticmethod
    def _label(index: GraphIndex, act: onnx.NodeProto) -> str | None:
        if act.op_type != "Clip":
            return act.op_type
        bounds = clip_bounds(index, act)
        if bounds is None:
            return None
        low = "-inf" if bounds[0] is None else f"{bounds[0]:g}"
        high = "inf" if bounds[1] is None else f"{bounds[1]:g}"
        return f"Clip({low},{high})"
