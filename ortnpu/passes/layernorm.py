"""Decompose ONNX ``LayerNormalization`` into the ops TFLite runs a LayerNorm with."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import all_tensor_names, opset_version, shape_of, unique_name


def layernorm_problem(node: onnx.NodeProto, rank: int | None, used: set[str]) -> str | None:
    """Why ``node`` (a LayerNormalization) is not decomposed, or ``None``.

    Decomposed: a normalization over the last axis only (TFLite's MEAN over the channels),
    float32 statistics (``stash_type`` 1), the optional ``Mean``/``InvStdDev`` outputs unread.
    """
    axis = -1
    stash = 1
    for a in node.attribute:
        if a.name == "axis":
            axis = int(a.i)
        if a.name == "stash_type":
            stash = int(a.i)
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        return (f"it normalizes from axis {axis} of a rank-{rank if rank else '?'} input; ortnpu "
                "decomposes a LayerNorm over the last axis only (TFLite's MEAN over the "
                "channels), the other axes would need a mean over several axes")
    if stash != 1:
        return f"stash_type {stash} is not float32"
    if any(o and o in used for o in node.output[1:]):
        return ("its Mean or InvStdDev output is read; ortnpu decomposes a LayerNorm whose "
                "only output is Y")
    return None


class DecomposeLayerNorm(Pass):
    """Replace ``LayerNormalization`` over the last axis by ReduceMean → Sub → Mul(d, d) →
    ReduceMean → Add(eps) → Sqrt → Div → Mul(scale) → Add(bias).

    Why: an integer NPU runs a LayerNorm as TFLite does, as MEAN, SQUARED_DIFFERENCE, MEAN, ADD,
    RSQRT, MUL, MUL, ADD on 8- or 16-bit tensors, each with its own quantization; the float
    decomposition gives calibration each of those tensors and the lowering rules the pattern
    (the square of the difference becomes SQUARED_DIFFERENCE, Sqrt → Div becomes RSQRT · MUL).
    ``ortnpu.evaluate`` and ``ortnpu.quantize`` both apply it, so they place the same nodes; the
    nodes are named ``<layernorm name>/mean`` etc., and the last one writes the original output.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        opset = opset_version(model, 17)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        ranks: dict[str, int] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            dims = shape_of(vi)
            if dims:
                ranks[vi.name] = len(dims)
        taken = all_tensor_names(graph) | {o for n in graph.node for o in n.output}
        names = {n.name for n in graph.node}
        changes: list[str] = []
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or \
                    layernorm_problem(node, ranks.get(node.input[0]), used) is not None:
                new_nodes.append(node)
                continue
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            base = node.name or node.output[0]

            def t(suffix: str, base: str = base) -> str:
                return unique_name(taken, f"{base}/{suffix}")

            def nm(suffix: str, base: str = base) -> str:
                return unique_name(names, f"{base}/{suffix}")

            def mean(x: str, y: str, suffix: str) -> onnx.NodeProto:
                if opset >= 18:
                    axes = t("axes")
                    graph.initializer.append(numpy_helper.from_array(
                        np.array([-1], np.int64), axes))
                    return helper.make_node("ReduceMean", [x, axes], [y], name=nm(suffix),
                                            keepdims=1)
                return helper.make_node("ReduceMean", [x], [y], name=nm(suffix), axes=[-1],
                                        keepdims=1)

            x, scale = node.input[0], node.input[1]
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            mu, d, sq, var, ve, sd, nrm = (t(s) for s in ("mean", "centered", "squared",
                                                         "variance", "variance_eps", "std",
                                                         "normalized"))
            eps_name = t("epsilon")
            graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32),
                                                             eps_name))
            scaled = t("scaled") if bias else node.output[0]
            new_nodes += [
                mean(x, mu, "mean"),
                helper.make_node("Sub", [x, mu], [d], name=nm("sub")),
                helper.make_node("Mul", [d, d], [sq], name=nm("square")),
                mean(sq, var, "variance"),
                helper.make_node("Add", [var, eps_name], [ve], name=nm("add_epsilon")),
                helper.make_node("Sqrt", [ve], [sd], name=nm("sqrt")),
                helper.make_node("Div", [d, sd], [nrm], name=nm("div")),
                helper.make_node("Mul", [nrm, scale], [scaled], name=nm("scale"))]
            if bias:
                new_nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]],
                                                  name=nm("bias")))
            changes.append(f"LayerNormalization {node.name!r} became ReduceMean, Sub, Mul, "
                           "ReduceMean, Add, Sqrt, Div, Mul" + (", Add" if bias else ""))
        if changes:
            del graph.node[:]
            graph.node.extend(new_nodes)
        return changes
