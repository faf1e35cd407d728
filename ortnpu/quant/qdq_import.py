"""``import_qdq``: an already-quantized model into an NPU graph, with the model's own scales.

The model's quantization is read (:mod:`ortnpu.quant.qdq_graph`), fitted to the target with
every change reported (:mod:`ortnpu.quant.qdq_convert`), and handed to the quantizer as a
:class:`~ortnpu.quant.QuantPreset`, so an imported model and a model quantized directly with
the same parameters give the same NPU graph.
"""

from __future__ import annotations

import json

import onnx

from ortnpu.quant.qdq_convert import Conversion, check_supported, describe, plan
from ortnpu.quant.qdq_graph import ImportedGraph, read_quantized
from ortnpu.quant.quantizer import (
    META_TENSORS,
    QuantConfig,
    QuantizationResult,
    QuantPreset,
    quantize,
)
from ortnpu.target import Target, load_target


def _float_graph(imported: ImportedGraph) -> onnx.ModelProto:
    """Fuse MatMul + bias Add into one fully connected layer (names and weights kept)."""
    from ortnpu.passes import FuseMatMulAdd, InferShapes, PassManager

    return PassManager([InferShapes(), FuseMatMulAdd()])(imported.model).model


def import_qdq(model: onnx.ModelProto, target: Target | str | None = None, *,
               report: list | None = None,
               result: QuantizationResult | None = None) -> onnx.ModelProto:
    """Build the NPU graph of an already-quantized (QDQ or QOperator) model.

    Args:
        model: the quantized model (``onnx.load``-ed).
        target: a :class:`Target`, a preset name or a TOML path (default ``tflite-int8``).
        report: when given, receives one :class:`Conversion` per place where the NPU graph
            re-expresses or changes the model's quantization (empty when it uses it as is).
        result: filled with the placement of every float node, when given.

    Returns:
        The NPU graph, with the model's input and output names.

    Raises:
        ModelError: not a model, or a float model (use ``ortnpu.quantize``).
        UnsupportedError: a structure that cannot be imported; the message names the node.
    """
    target = load_target(target)
    imported = read_quantized(model)
    check_supported(model)
    imported.model = _float_graph(imported)
    fit = plan(imported, target)
    preset = QuantPreset(params=dict(fit.params), weights=dict(fit.weights),
                         biases=dict(fit.biases))
    res = result if result is not None else QuantizationResult()
    # the model quantized its Softmax nodes itself: they run as it says, however long their
    # rows (placement's wide-Softmax rule is a choice quantize makes for float models)
    npu = quantize(imported.model, target, None, preset=preset, optimize=False,
                   config=QuantConfig(force_cpu=frozenset(fit.force_cpu),
                                      wide_softmax_on_cpu=False), result=res)
    conversions = list(fit.conversions) + _unexpected(npu, fit.params, res, imported)
    if report is not None:
        report.extend(conversions)
    return npu


def _unexpected(npu: onnx.ModelProto, planned: dict, res: QuantizationResult,
                imported: ImportedGraph) -> list[Conversion]:
    """Parameters the quantizer chose differently from the plan, and quantization dropped."""
    from ortnpu.quant.params import QuantParams

    meta = {p.key: p.value for p in npu.metadata_props}
    final = {k: QuantParams(v["scale"], v["zero_point"], v["dtype"])
             for k, v in json.loads(meta.get(META_TENSORS, "{}")).items()}
    out = []
    for tensor, p in final.items():
        want = planned.get(tensor)
        if want is not None and want != p:
            out.append(Conversion(tensor, f"{want.dtype} {want.scale:.9g}/{want.zero_point} → "
                                  f"{p.dtype} {p.scale:.9g}/{p.zero_point}",
                                  "the NPU op's lowering fixes its output parameters"))
    device = {pl.node: pl.device for pl in res.placements}
    producer = {o: n.name for n in imported.model.graph.node for o in n.output}
    for tensor in imported.params:
        if tensor in final:
            continue
        node = producer.get(tensor)
        where = (f"it is computed on the CPU by '{node}'" if node is not None
                 and device.get(node) == "CPU" else "it is a graph input")
        out.append(Conversion(tensor, "quantization dropped: the tensor stays float",
                              f"{where} and no NPU node reads it"))
    return out


__all__ = ["Conversion", "describe", "import_qdq"]
