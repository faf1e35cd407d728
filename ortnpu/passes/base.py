"""The pass interface: one class per graph pass, a result that says what changed, a manager.

A pass takes an :class:`onnx.ModelProto` and returns a :class:`PassResult` holding a *new*
model (the input is never mutated), whether anything changed and one sentence per change. The
:class:`PassManager` runs passes in order, optionally repeating a list until nothing changes.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx

from ortnpu.errors import ModelError

if TYPE_CHECKING:
    from ortnpu.passes.graph import GraphIndex


@dataclass
class PassResult:
    """What one pass (or a whole pipeline) did.

    Attributes:
        model: the model after the pass (a new object; the input is left untouched).
        modified: whether the pass changed anything.
        changes: one human-readable sentence per change, naming the nodes involved.
        name: name of the pass that produced this result.
        details: per-pass results when this result comes from a :class:`PassManager`.
    """

    model: onnx.ModelProto
    modified: bool
    changes: list[str] = field(default_factory=list)
    name: str = ""
    details: list[PassResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary (without the model)."""
        out: dict[str, object] = {"pass": self.name, "modified": self.modified,
                                  "changes": list(self.changes)}
        if self.details:
            out["passes"] = [d.to_dict() for d in self.details]
        return out


class Pass(abc.ABC):
    """Base class of a graph pass.

    Subclasses implement :meth:`apply`, which receives a private copy of the model that it may
    edit in place, and returns the list of changes it made (empty when nothing changed).
    """

    #: Short name shown in reports; defaults to the class name.
    name: str = ""

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        """Run the pass on a copy of ``model``.

        Args:
            model: the model to transform; not modified.

        Returns:
            The result, with the transformed copy.
        """
        if not isinstance(model, onnx.ModelProto):
            raise ModelError(f"{self.label}: expected an onnx.ModelProto, got "
                             f"{type(model).__name__}")
        work = onnx.ModelProto()
        work.CopyFrom(model)
        changes = self.apply(work)
        return PassResult(model=work if changes else model, modified=bool(changes),
                          changes=changes, name=self.label)

    @property
    def label(self) -> str:
        """The pass's display name."""
        return self.name or type(self).__name__

    @abc.abstractmethod
    def apply(self, model: onnx.ModelProto) -> list[str]:
        """Transform ``model`` in place and return one sentence per change."""


class NodeRewritePass(Pass):
    """A pass that rewrites one node at a time until no node matches any more.

    Each rewrite may change the graph around the node, so after every change the graph index
    and the shapes are rebuilt and the walk starts again. Subclasses say which nodes are
    candidates (:meth:`candidate`) and try one (:meth:`rewrite`): a sentence when the graph
    changed, ``None`` when the node does not qualify.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        from ortnpu.passes.graph import GraphIndex, shapes_and_types

        changes: list[str] = []
        graph = model.graph
        while True:
            index = GraphIndex(graph)
            shapes, _ = shapes_and_types(model)
            for node in graph.node:
                if node.domain in ("", "ai.onnx") and self.candidate(node):
                    change = self.rewrite(graph, index, shapes, node)
                    if change:
                        changes.append(change)
                        break
            else:
                return changes

    def candidate(self, node: onnx.NodeProto) -> bool:
        """Whether ``node`` (of the standard domain) is worth trying; every node by default."""
        return True

    @abc.abstractmethod
    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex, shapes: dict,
                node: onnx.NodeProto) -> str | None:
        """Rewrite around ``node`` in place; one sentence if the graph changed, else ``None``."""


class Repeat(Pass):
    """Run a list of passes again and again until none changes the model.

    Args:
        passes: the passes to repeat, in order.
        max_iterations: safety bound on the number of rounds.
    """

    def __init__(self, passes: Sequence[Pass], max_iterations: int = 4) -> None:
        self.passes = list(passes)
        self.max_iterations = max_iterations
        self.name = "Repeat(" + ", ".join(p.label for p in self.passes) + ")"

    def apply(self, model: onnx.ModelProto) -> list[str]:
        changes: list[str] = []
        current = model
        for _ in range(self.max_iterations):
            round_changes: list[str] = []
            for p in self.passes:
                result = p(current)
                current = result.model
                round_changes += [f"{p.label}: {c}" for c in result.changes]
            changes += round_changes
            if not round_changes:
                break
        if changes:
            model.CopyFrom(current)
        return changes


class PassManager:
    """Run passes in order and collect their results.

    Args:
        passes: the passes of the pipeline, run in this order.

    Example:
        >>> pm = PassManager([NameNodes(), InferShapes(), FoldBatchNorm()])
        >>> result = pm(model)
        >>> for r in result.details: print(r.name, r.changes)
    """

    def __init__(self, passes: Iterable[Pass]) -> None:
        self.passes = list(passes)

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        """Run every pass; return the combined result with per-pass ``details``."""
        details: list[PassResult] = []
        current = model
        for p in self.passes:
            result = p(current)
            details.append(result)
            current = result.model
        changes = [f"{r.name}: {c}" for r in details for c in r.changes]
        return PassResult(model=current, modified=bool(changes), changes=changes,
                          name="PassManager", details=details)
