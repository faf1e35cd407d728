"""Export of NPU graphs to standard ONNX that any ONNX runtime can run.

Three styles (one module each), chosen with ``style``:

* ``integer`` (``integer.py``): only default-domain integer ops; bit-exact with the simulator.
* ``fake-quant`` (``fakequant.py``): float ops on integer-valued tensors (N2D2's
  FakeQuantization); exact wherever float32 holds every intermediate, and the export says where
  it cannot.
* ``qdq`` (``qdq.py``): QuantizeLinear/DequantizeLinear around float ops for other toolchains;
  the model's metadata states where its rounding differs from the target's.

Each style is a table with one lowering per op of ``ortnpu.domain.OPS``; ``graph.py`` drives it.
"""

from __future__ import annotations

import onnx

from ortnpu.errors import ModelError, UnsupportedError

STYLES = ("integer", "fake-quant", "qdq")


def export(model: onnx.ModelProto, style: str = "integer",
           implicit_casting: bool = False) -> onnx.ModelProto:
    """Lower every ``com.ortnpu`` node of an NPU graph to standard ONNX ops.

    Args:
        model: the NPU graph.
        style: ``"integer"``, ``"fake-quant"`` or ``"qdq"``.
        implicit_casting: drop the Cast round trips between lowered ops (int64 → int8 → int64,
            float → int8 → float) that onnxruntime does not need; graph outputs keep their
            types. Implied by ``fake-quant`` between float ops.

    Returns:
        A model that passes ``onnx.checker.check_model(full_check=True)``; its metadata
        ``ortnpu.export.style`` names the style, and for the inexact styles
        ``ortnpu.export.exact`` / ``ortnpu.export.notes`` say where results can differ.

    Raises:
        UnsupportedError: unknown style, a node whose parameters are not constants, or a
            model without any ``com.ortnpu`` node (a float model: nothing to export).
        ModelError: ``model`` is not an ONNX model, or not a valid NPU graph (the checks of
            :func:`ortnpu.validate.check_model`, so export refuses what validation refuses).
    """
    from ortnpu.validate import check_model, check_npu_nodes, initializers_as_constants

    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    origin = model.graph.name or "<model>"
    check_model(model, origin)
    check_npu_nodes(model, origin, rescale_values=True)
    from ortnpu.domain.spec import DOMAIN
    from ortnpu.validate import all_nodes

    if not any(n.domain == DOMAIN for n in all_nodes(model.graph)):
        raise UnsupportedError(f"{origin}: no NPU node to export; quantize the model first "
                               f"(`ortnpu quantize`): it has no {DOMAIN} node")
    model = initializers_as_constants(model)
    if style == "integer":
        from ortnpu.exporters import integer
        from ortnpu.exporters.graph import lower_model

        post = integer.drop_implicit_casts if implicit_casting else None
        return lower_model(model, integer.LOWERINGS, style, post,
                           {"ortnpu.export.exact": "true",
                            "ortnpu.export.implicit_casting": str(implicit_casting).lower()},
                           opaque_dequantize=True)
    if style == "fake-quant":
        from ortnpu.exporters import fakequant

        return fakequant.export_fake_quant(model, implicit_casting)
    if style == "qdq":
        from ortnpu.exporters import qdq

        return qdq.export_qdq(model)
    raise UnsupportedError(f"unknown export style {style!r}; use one of {', '.join(STYLES)}")

__all__ = ["STYLES", "export"]
