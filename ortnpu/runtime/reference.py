"""Run an NPU graph without onnxruntime: onnx's reference evaluator plus our numpy kernels.

A second executor of the same graph, independent of onnxruntime and of the C kernels, used to
check that what onnxruntime computes through the custom-op hook is exactly the numpy reference,
graph-wide. It is slow; use it on small inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from ortnpu.domain import DOMAIN, OPS, spec_of
from ortnpu.domain.spec import parse_op_type


def _op_class(op_type: str) -> type[OpRun]:
    spec = spec_of(op_type)
    _, _, out_dtype = parse_op_type(op_type)

    def _run(self: OpRun, *inputs: np.ndarray, **_: Any) -> tuple[np.ndarray]:
        attrs = {a.name: helper.get_attribute_value(a) for a in self.onnx_node.attribute}
        full = spec.full_attrs(attrs)
        arrays = [np.asarray(x) for x in inputs]
        spec.validate(arrays, full, out_dtype)
        return (spec.reference(arrays, full, out_dtype),)

    return type(op_type, (OpRun,), {"op_domain": DOMAIN, "_run": _run})


_CLASSES = [_op_class(t) for spec in OPS for t, _, _ in spec.op_types()]


def run_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                  outputs: list[str] | None = None) -> list[np.ndarray]:
    """Evaluate ``model`` with onnx's reference evaluator and ortnpu's numpy kernels.

    Args:
        model: an NPU graph.
        feeds: inputs by name.
        outputs: names of tensors to return (default: the graph outputs); intermediate tensors
            are allowed.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for opset in copy.opset_import:
        # onnx's evaluator implements QuantizeLinear/DequantizeLinear from opset 19 on; their
        # integer semantics are the same since opset 13.
        if opset.domain in ("", "ai.onnx") and opset.version < 21:
            opset.version = 21
    copy.ir_version = max(copy.ir_version, 10)
    evaluator = ReferenceEvaluator(copy, new_ops=_CLASSES)
    return evaluator.run(outputs, dict(feeds))
