"""Passes that replace single nodes by small subgraphs in one walk over the graph.

The NPU-form rewrites (a patch embedding as space-to-depth and a 1x1 Conv, a ConvTranspose as
zero insertion and a Conv, a 1-D Conv as a 2-D one, a Softmax moved to the last axis) all do
the same bookkeeping: walk the nodes once, keep the ones that do not qualify, emit new nodes
with fresh names in place of the ones that do, add shape constants and re-laid-out weights,
and drop the old weights nothing else reads. :class:`Replacement` holds that bookkeeping and
:class:`ReplaceNodesPass` the walk, so each rewrite only says what a node becomes.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import (
    GraphIndex,
    Shape,
    all_tensor_names,
    opset_version,
    rebuild_nodes,
    replace_initializer,
    shapes_and_types,
    unique_name,
)


class Replacement:
    """The graph being rewritten and the nodes that will replace its node list.

    Attributes:
        graph: the graph (initializers are added to it as the walk goes).
        index: producers, consumers and constants of the graph before the walk.
        shapes: the inferred shapes of the graph before the walk.
        nodes: the new node list, in order.
        dropped: initializers (or Constant outputs) to remove at the end.
        opset: the model's default-domain opset (0 when it declares none).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.index = GraphIndex(self.graph)
        self.shapes: dict[str, Shape] = shapes_and_types(model)[0]
        self.nodes: list[onnx.NodeProto] = []
        self.dropped: set[str] = set()
        self.opset = opset_version(model)
        self._tensors = all_tensor_names(self.graph)
        self._node_names = {n.name for n in self.graph.node}

    def tensor(self, base: str) -> str:
        """A tensor name no other tensor of the graph has, ``base`` if it is free."""
        return unique_name(self._tensors, base)

    def add(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str,
            *, fresh_name: bool = True, **attrs: object) -> onnx.NodeProto:
        """Append a standard-domain node; its name is made unique unless ``fresh_name`` is
        False (the node that takes over the replaced node's name)."""
        node = helper.make_node(op_type, list(inputs), list(outputs),
                                name=unique_name(self._node_names, name) if fresh_name
                                else name, **attrs)
        self.nodes.append(node)
        return node

    def constant(self, base: str, value: np.ndarray) -> str:
        """A new initializer holding ``value``; returns its (unique) name."""
        name = self.tensor(base)
        replace_initializer(self.graph, name, value)
        return name

    def int64(self, base: str, values: Sequence[int]) -> str:
        """A new int64 initializer (a shape, pads, starts...); returns its name."""
        return self.constant(base, np.array(list(values), np.int64))

    def retire(self, weight: str) -> None:
        """Drop ``weight`` at the end if the node being replaced is its only reader."""
        if len(self.index.consumers.get(weight, [])) == 1:
            self.dropped.add(weight)


class ReplaceNodesPass(Pass):
    """A pass that replaces qualifying nodes in one walk, keeping every other node in place.

    Subclasses implement :meth:`replace`; :meth:`applies_to` can turn the pass off for a
    whole model (an opset it does not handle). Nodes named in :attr:`keep` (by name or op
    type: the user's ``force_cpu``) are left whole, so that the user's choice still names
    a node of the graph (an unrolled LSTM has no node of the LSTM's name).
    """

    #: node names or op types never replaced
    keep: frozenset[str] = frozenset()

    def apply(self, model: onnx.ModelProto) -> list[str]:
        if not self.applies_to(model):
            return []
        work = Replacement(model)
        changes: list[str] = []
        for node in model.graph.node:
            kept = node.name in self.keep or node.op_type in self.keep
            change = None if kept else self.replace(node, work)
            if change is None:
                work.nodes.append(node)
            else:
                changes.append(change)
        if changes:
            rebuild_nodes(model.graph, work.nodes, work.dropped)
        return changes

    def applies_to(self, model: onnx.ModelProto) -> bool:
        """Whether the pass can change this model at all; True by default."""
        return True

    @abc.abstractmethod
    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        """Append what ``node`` becomes to ``work.nodes`` and return one sentence, or return
        ``None`` (appending nothing) to keep the node as it is."""


def node_base(node: onnx.NodeProto) -> str:
    """The stem for the names of what replaces ``node``: its name, else its first output."""
    return node.name or node.output[0]
