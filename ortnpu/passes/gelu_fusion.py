"""Fuse the five-node erf GELU of an exported transformer into one ``Gelu``."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex

#: onnxruntime's contrib domain: its ``Gelu`` is the exact (erf) GELU at any opset, where
#: ONNX's own ``Gelu`` needs opset 20 (torch's opset-17 exports write the five nodes instead)
CONTRIB_DOMAIN = "com.microsoft"


def _scalar(index: GraphIndex, name: str) -> float | None:
    value = index.constant(name)
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.reshape(-1)[0])


def _close(value: float | None, want: float) -> bool:
    return value is not None and math.isclose(value, want, rel_tol=1e-5)


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The input of binary ``node`` that is not ``name`` (None when both are, or neither)."""
    if len(node.input) != 2 or list(node.input).count(name) != 1:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _single(index: GraphIndex, name: str, op: str) -> onnx.NodeProto | None:
    node = index.only_consumer(name)
    if node is None or node.op_type != op or node.domain not in ("", "ai.onnx"):
        return None
    return node


def match_erf_gelu(erf: onnx.NodeProto, index: GraphIndex
                   ) -> tuple[str, list[onnx.NodeProto]] | None:
    """``(x, nodes)`` when ``erf`` is the middle of ``0.5 · x · (1 + erf(x / √2))``.

    Recognised forms (either operand order of each binary op): ``Div(x, √2)`` or
    ``Mul(x, 1/√2)`` → Erf → ``Add(·, 1)`` → then either ``Mul(x, ·)`` → ``Mul(·, 0.5)`` or
    ``Mul(·, Mul(x, 0.5))``. ``nodes`` are the nodes the Gelu replaces, the last one writing
    the result; every tensor between them has no other reader and is no graph output.
    """
    scale = index.producer.get(erf.input[0])
    if scale is None or scale.domain not in ("", "ai.onnx") or \
            index.only_consumer(erf.input[0]) is None:
        return None
    if scale.op_type == "Div" and _close(_scalar(index, scale.input[1]), math.sqrt(2.0)):
        x = scale.input[0]
    elif scale.op_type == "Mul":
        x = next((a for a, b in (scale.input, scale.input[::-1])
                  if _close(_scalar(index, b), math.sqrt(0.5))), None)
        if x is None:
            return None
    else:
        return None
    add = _single(index, erf.output[0], "Add")
    if add is None or not _close(_scalar(index, _other(add, erf.output[0]) or ""), 1.0):
        return None
    mul = _single(index, add.output[0], "Mul")
    if mul is None:
        return None
    partner = _other(mul, add.output[0])
    if partner == x:                       # Mul(x, 1 + erf) then Mul(·, 0.5)
        half = _single(index, mul.output[0], "Mul")
        if half is None or not _close(_scalar(index, _other(half, mul.output[0]) or ""), 0.5):
            return None
        return x, [scale, erf, add, mul, half]
    halved = index.producer.get(partner or "")   # Mul(Mul(x, 0.5), 1 + erf)
    if halved is None or halved.op_type != "Mul" or halved.domain not in ("", "ai.onnx") or \
            index.only_consumer(halved.output[0]) is None or x not in halved.input or \
            not _close(_scalar(index, _other(halved, x) or ""), 0.5):
        return None
    return x, [scale, erf, add, halved, mul]


class FuseErfGelu(Pass):
    """Replace ``0.5 · x · (1 + erf(x / √2))`` written as five nodes by one ``Gelu``.

    Why: TFLite's converter turns this pattern into its GELU op, and an integer NPU runs it
    as one table; quantized node by node, the Erf (an op TFLite has no kernel for) would stay
    on the CPU and each of the five tensors would be rounded on its own. The ``Gelu`` written
    is onnxruntime's contrib op (``com.microsoft``, the same op its transformer optimizer
    writes), which runs at any opset when a target leaves it on the CPU.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        replaced: dict[str, onnx.NodeProto] = {}   # output of a matched node -> the Gelu
        dropped: set[str] = set()
        changes: list[str] = []
        for node in graph.node:
            if node.op_type != "Erf" or node.domain not in ("", "ai.onnx"):
                continue
            found = match_erf_gelu(node, index)
            if found is None:
                continue
            x, nodes = found
            outputs = {o for n in nodes for o in n.output}
            if outputs & dropped:
                continue
            last = nodes[-1]
            name = node.name.rsplit("/", 1)[0] + "/Gelu" if "/" in node.name else \
                f"{node.name or last.output[0]}_gelu"
            gelu = helper.make_node("Gelu", [x], [last.output[0]], name=name,
                                    domain=CONTRIB_DOMAIN)
            dropped |= outputs
            replaced[last.output[0]] = gelu
            changes.append(f"erf GELU around {node.name!r} ({len(nodes)} nodes) became Gelu "
                           f"{name!r}")
        if not changes:
            return []
        new_nodes = []
        for node in graph.node:
            if node.output and node.output[0] in replaced:
                new_nodes.append(replaced[node.output[0]])
            elif not set(node.output) & dropped:
                new_nodes.append(node)
        del graph.node[:]
        graph.node.extend(new_nodes)
        gone = dropped - set(replaced)
        keep = [vi for vi in graph.value_info if vi.name not in gone]
        del graph.value_info[:]
        graph.value_info.extend(keep)
        if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
        return changes
