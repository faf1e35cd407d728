"""Remove Identity, inference-mode Dropout and same-type Cast nodes."""

from __future__ import annotations

import onnx

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, remove_nodes, rename_input, shapes_and_types


def bypass(graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Remove single-input ``node`` whose output equals its input; return False if impossible.

    When the output is a graph output, the producer of the input is renamed instead so the
    graph keeps its output names. Impossible when the input is a graph input, an initializer
    or itself a graph output (the graph then needs the node to hold two names).
    """
    x, y = node.input[0], node.output[0]
    if y not in index.graph_outputs:
        rename_input(graph, y, x)
        remove_nodes(graph, [node])
        return True
    producer = index.producer.get(x)
    if producer is None or x in index.graph_outputs or x in index.graph_inputs:
        return False
    for i, out in enumerate(producer.output):
        if out == x:
            producer.output[i] = y
    rename_input(graph, x, y)
    for vi in graph.value_info:
        if vi.name == x:
            vi.name = y
    remove_nodes(graph, [node])
    return True


class RemoveIdentity(Pass):
    """Remove ``Identity`` nodes, ``Dropout`` nodes that run in inference mode and ``Cast``
    nodes to the type their input already has.

    A Dropout whose mask output is read, or whose ``training_mode`` input is not the constant
    false, is kept. A Cast is removed only when its input's element type is known and equals
    ``to`` (exported audio models cast float32 to float32: Silero VAD has three, each a CPU
    node between NPU layers).
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        changes: list[str] = []
        graph = model.graph
        _, types = shapes_and_types(model)
        kinds = ("Identity", "Dropout", "Cast")
        for name in [n.name for n in graph.node if n.op_type in kinds]:
            index = GraphIndex(graph)
            node = next((n for n in graph.node if n.name == name), None)
            if node is None or node.domain not in ("", "ai.onnx") or not node.input:
                continue
            if node.op_type == "Cast":
                to = next((a.i for a in node.attribute if a.name == "to"), None)
                if to is None or types.get(node.input[0], 0) != to:
                    continue
            if node.op_type == "Dropout":
                if len(node.output) > 1 and node.output[1] and (
                        node.output[1] in index.consumers
                        or node.output[1] in index.graph_outputs):
                    continue
                if len(node.input) > 2 and node.input[2]:
                    mode = index.constant(node.input[2])
                    if mode is None or bool(mode):
                        continue
            if bypass(graph, index, node):
                changes.append(f"removed {node.op_type} {name!r}")
        return changes
