"""The evaluation report: what runs where, why, and how fast."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortnpu.errors import OrtNpuError
from ortnpu.estimate import Estimate
from ortnpu.partition import PartitionPlan
from ortnpu.target.spec import Target

#: Identifier and version of the JSON schema of :meth:`EvaluationReport.to_dict`.
SCHEMA = "ortnpu.evaluation"
SCHEMA_VERSION = 1


@dataclass
class EvaluationReport:
    """Result of :func:`ortnpu.evaluate`.

    ``str(report)`` is a text summary, :meth:`to_dict` the JSON form (schema in
    docs/evaluate.md), :meth:`to_html` one self-contained HTML page.

    Attributes:
        model: facts about the evaluated model (name, opset, inputs, outputs, node count).
        target: the target evaluated against.
        plan: the NPU/CPU partition.
        estimate: the performance estimate.
        edges: (producer, consumer) node-name pairs, for drawing the graph.
        optimize: per-pass results when the model was optimized first, else None.
        verification: optimized-vs-original comparison when it was run, else None.
    """

    model: dict[str, Any]
    target: Target
    plan: PartitionPlan
    estimate: Estimate
    edges: list[tuple[str, str]] = field(default_factory=list)
    optimize: list[dict[str, Any]] | None = None
    verification: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """The headline numbers."""
        t = self.estimate.totals
        return {
            "nodes": len(self.plan.order),
            "npu_nodes": len(self.plan.npu_nodes),
            "cpu_nodes": len(self.plan.cpu_nodes),
            "subgraphs": len(self.plan.subgraphs),
            "macs": t["macs"],
            "npu_mac_fraction": t["npu_mac_fraction"],
            "weight_bytes": t["weight_bytes"],
            "dram_bytes": t["dram_bytes"],
            "npu_time_ms": t["npu_time_ms"],
            "cpu_time_ms": t["cpu_time_ms"],
            "overhead_ms": t["overhead_ms"],
            "latency_ms": t["latency_ms"],
            "fps": t["fps"],
            "illustrative": self.estimate.illustrative,
        }

    def layers(self) -> list[dict[str, Any]]:
        """One row per node: the estimate plus the placement reason."""
        rows = []
        for layer in self.estimate.layers:
            row = layer.to_dict()
            row["reason"] = self.plan.reasons.get(layer.name, "")
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible data (stable schema, see docs/evaluate.md)."""
        hw = self.target.hardware
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model,
            "target": {"name": self.target.name, "description": self.target.description,
                       "origin": self.target.origin, "illustrative": hw.illustrative,
                       "hardware": {k: getattr(hw, k) for k in hw.__dataclass_fields__}},
            "summary": self.summary,
            "layers": self.layers(),
            "partition": self.plan.to_dict(),
            "notes": list(self.estimate.notes),
            "optimize": self.optimize,
            "verification": self.verification,
        }

    def to_json(self, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text (infinite numbers become null)."""
        return json.dumps(_finite(self.to_dict()), indent=indent)

    def to_html(self) -> str:
        """One self-contained HTML page (inline CSS and SVG, no web access needed)."""
        from ortnpu.report.html import render_html

        return render_html(self)

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        _write(path, self.to_json() + "\n")

    def write_html(self, path: str | Path) -> None:
        """Write :meth:`to_html` to ``path``."""
        _write(path, self.to_html())

    def to_text(self, verbose: bool = False) -> str:
        """The text report: CPU nodes grouped by (reason, op type) with counts; ``verbose``
        also lists every node under its group and every subgraph."""
        from ortnpu.report.text import render_text

        return render_text(self, verbose=verbose)

    def __str__(self) -> str:
        return self.to_text()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write(path: str | Path, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OrtNpuError(f"cannot write {path}: {exc}") from None
