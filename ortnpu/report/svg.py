"""Inline SVG drawings of a report: cycles per layer, and the graph coloured by NPU/CPU."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ortnpu.report.evaluation import EvaluationReport

COLORS = {"compute": "#2f6fbf", "memory": "#8e44ad", "fused": "#9ec5ef", "view": "#c8d6e5",
          "cpu": "#e67e22"}
NPU_FILL, CPU_FILL = "#d6e6fa", "#fbe1c8"
NPU_STROKE, CPU_STROKE = "#2f6fbf", "#d35400"


def cycles_chart(report: EvaluationReport, bar: int = 6, height: int = 220) -> str:
    """Bar chart: NPU cycles per layer (coloured by bound); CPU layers as clock-equivalent."""
    clock = report.target.hardware.clock_mhz
    rows = []
    for layer in report.estimate.layers:
        value = layer.cycles if layer.placement == "NPU" else layer.time_us * clock
        if value > 0:
            rows.append((layer, value))
    if not rows:
        return "<p>No layer does any work.</p>"
    peak = max(v for _, v in rows)
    bar = max(bar, min(24, 900 // len(rows)))
    left, bottom = 60, 20
    width = max(520, left + len(rows) * (bar + 1) + 10)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height + bottom}" role="img" aria-label="cycles per layer">']
    for frac in (0.0, 0.5, 1.0):
        y = height - frac * (height - 10)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="10">{_short(frac * peak)}</text>')
    for i, (layer, value) in enumerate(rows):
        h = max(1.0, value / peak * (height - 10))
        x = left + i * (bar + 1)
        color = COLORS.get(layer.bound, "#888")
        tip = (f"{layer.name} ({layer.op}) {layer.placement}: "
               + (f"{layer.cycles} cycles, {layer.bound} bound" if layer.placement == "NPU"
                  else f"{layer.time_us:.1f} us on the CPU"))
        parts.append(f'<rect x="{x}" y="{height - h:.1f}" width="{bar}" height="{h:.1f}" '
                     f'fill="{color}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="{left}" y="{height + 15}" font-size="11">layers in execution '
                 f'order ({len(rows)} with work; CPU bars: CPU time x NPU clock)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _depths(order: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
    depth: dict[str, int] = {}
    for n in order:
        depth[n] = 1 + max((depth[p] for p in preds[n] if p in depth), default=-1)
    return depth


def partition_graph(report: EvaluationReport, box_w: int = 150, box_h: int = 24,
                    gap_x: int = 20, gap_y: int = 22) -> str:
    """The node graph, top to bottom, boxes filled by placement and framed by subgraph."""
    plan = report.plan
    order = plan.order
    depth = _depths(order, report.edges)
    rows: dict[int, list[str]] = defaultdict(list)
    for n in order:
        rows[depth[n]].append(n)
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in report.edges:
        preds[b].append(a)
    pos: dict[str, tuple[float, float]] = {}
    for d in sorted(rows):
        # order a row by the mean x of its predecessors (barycenter), keeping file order on ties
        row = sorted(rows[d], key=lambda n: (
            sum(pos[p][0] for p in preds[n] if p in pos) / max(1, sum(
                1 for p in preds[n] if p in pos)) if any(p in pos for p in preds[n]) else 0.0))
        for i, n in enumerate(row):
            pos[n] = (10 + i * (box_w + gap_x), 10 + d * (box_h + gap_y))
    width = 20 + max(len(r) for r in rows.values()) * (box_w + gap_x)
    height = 20 + (max(rows) + 1) * (box_h + gap_y)
    sub_of = {n: sg.index for sg in plan.subgraphs for n in sg.nodes}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11" role="img" '
             'aria-label="partition graph">']
    for a, b in report.edges:
        if a in pos and b in pos:
            x1, y1 = pos[a][0] + box_w / 2, pos[a][1] + box_h
            x2, y2 = pos[b][0] + box_w / 2, pos[b][1]
            cross = plan.placement[a] != plan.placement[b] or sub_of.get(a) != sub_of.get(b)
            stroke = "#c0392b" if cross else "#999"
            parts.append(f'<path d="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + gap_y:.0f} '
                         f'{x2:.0f},{y2 - gap_y:.0f} {x2:.0f},{y2:.0f}" fill="none" '
                         f'stroke="{stroke}" stroke-width="{1.6 if cross else 1}"/>')
    for n in order:
        x, y = pos[n]
        npu = plan.placement[n] == "NPU"
        fill, stroke = (NPU_FILL, NPU_STROKE) if npu else (CPU_FILL, CPU_STROKE)
        tag = f"npu_{sub_of[n]}" if n in sub_of else "CPU"
        label = f"{plan.op_types[n]} {n}"
        if len(label) > 24:
            label = label[:23] + "…"
        parts.append(f'<g><title>{escape(plan.reasons.get(n, n))}</title>'
                     f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" '
                     f'fill="{fill}" stroke="{stroke}"/>'
                     f'<text x="{x + 4}" y="{y + 15}">{escape(label)}</text>'
                     f'<text x="{x + box_w - 4}" y="{y + 15}" text-anchor="end" '
                     f'fill="{stroke}" font-size="9">{tag}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
