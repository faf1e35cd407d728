"""Inline SVG drawings of a report: cycles per layer, and the graph coloured by NPU/CPU."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ortnpu.partition import PartitionPlan
    from ortnpu.report.evaluation import EvaluationReport

COLORS = {"compute": "#2f6fbf", "output": "#16a085", "sram": "#c0392b", "memory": "#8e44ad",
          "fused": "#9ec5ef", "view": "#c8d6e5", "cpu": "#e67e22"}
#: Legend text of each bound: the term of the roofline that limits the layer.
BOUND_LABELS = {"compute": "compute", "output": "output writes", "sram": "SRAM",
                "memory": "external memory", "cpu": "CPU"}
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
    left, bottom = 60, 38
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
               + (f"{layer.cycles} cycles, {BOUND_LABELS.get(layer.bound, layer.bound)} bound"
                  f" (compute {layer.compute_cycles}, output {layer.output_cycles}, SRAM "
                  f"{layer.sram_cycles}, external memory {layer.memory_cycles})"
                  if layer.placement == "NPU" else f"{layer.time_us:.1f} us on the CPU"))
        parts.append(f'<rect x="{x}" y="{height - h:.1f}" width="{bar}" height="{h:.1f}" '
                     f'fill="{color}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="{left}" y="{height + 15}" font-size="11">layers in execution '
                 f'order ({len(rows)} with work; CPU bars: CPU time x NPU clock)</text>')
    x = left
    for bound in dict.fromkeys(layer.bound for layer, _ in rows):
        label = BOUND_LABELS.get(bound, bound)
        parts.append(f'<rect x="{x}" y="{height + 24}" width="10" height="10" '
                     f'fill="{COLORS.get(bound, "#888")}"/><text x="{x + 13}" '
                     f'y="{height + 33}" font-size="11">{escape(label)} bound</text>')
        x += 24 + 7 * len(label) + 40
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


def node_graph(report: EvaluationReport, box_w: int = 150, box_h: int = 24,
               gap_x: int = 20, gap_y: int = 22) -> str:
    """Every node, top to bottom, boxes filled by placement and tagged by subgraph (small
    models; :func:`partition_overview` is the picture that scales)."""
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
             'aria-label="node graph">']
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


def _fit(text: str, width: float, size: float = 11) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels at font ``size`` (approximate)."""
    chars = max(4, int(width / (size * 0.56)))
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _groups(plan: PartitionPlan) -> list[tuple[str, str, list[str]]]:
    """(id, "NPU"|"CPU", nodes) of every NPU subgraph and CPU island, in execution order."""
    groups = [(sg.name, "NPU", list(sg.nodes)) for sg in plan.subgraphs]
    seen = {n for _, _, nodes in groups for n in nodes}
    islands = [list(i) for i in plan.cpu_islands]
    seen |= {n for i in islands for n in i}
    islands += [[n] for n in plan.order if n not in seen]  # nodes of an older plan
    groups += [(f"cpu_{k}", plan.placement[i[0]], i) for k, i in enumerate(islands)]
    position = {n: k for k, n in enumerate(plan.order)}
    return sorted(groups, key=lambda g: min(position[n] for n in g[2]))


def _layers(count: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Longest-path layer of each group of a DAG (groups already in a topological-ish order)."""
    succ: dict[int, list[int]] = defaultdict(list)
    indeg = [0] * count
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    layer = [0] * count
    ready = [g for g in range(count) if indeg[g] == 0]
    done = 0
    while ready:
        g = ready.pop(0)
        done += 1
        for h in succ[g]:
            layer[h] = max(layer[h], layer[g] + 1)
            indeg[h] -= 1
            if indeg[h] == 0:
                ready.append(h)
    if done < count:  # a cycle (not from a convex plan): fall back to execution order
        return list(range(count))
    return layer


def short_cause(cause: str) -> str:
    """A few words for a box: ``no lowering``, ``target: max_rank``, ``force_cpu``..."""
    if "no integer lowering" in cause:
        return "no integer lowering"
    keys = re.findall(r"\[support\] (\w+)", cause)
    if keys:
        return "target: " + ", ".join(dict.fromkeys(keys))
    for words, short in (("forced to the CPU", "force_cpu"), ("outside the NPU region",
                                                                "outside the NPU region"),
                         ("quantizes float32", "not float32"), ("constant", "constant")):
        if words in cause:
            return short
    return cause


def partition_strip(report: EvaluationReport, width: int = 1100, height: int = 26) -> str:
    """Every node in execution order as a thin slice, NPU blue and CPU orange: where the CPU
    islands sit along the model, at a glance, whatever its size."""
    plan = report.plan
    if not plan.order:
        return ""
    step = width / len(plan.order)
    sub_of = {n: sg.name for sg in plan.subgraphs for n in sg.nodes}
    runs: list[tuple[int, int, str]] = []
    for i, n in enumerate(plan.order):
        key = sub_of.get(n, "CPU")
        if runs and runs[-1][2] == key:
            runs[-1] = (runs[-1][0], i + 1, key)
        else:
            runs.append((i, i + 1, key))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2}" '
             f'height="{height + 16}" font-family="sans-serif" font-size="10" role="img" '
             'aria-label="partition strip">']
    for a, b, key in runs:
        npu = key != "CPU"
        names = plan.order[a:b]
        tip = (f"{key if npu else 'CPU'}: nodes {a}..{b - 1} ({b - a}): "
               + op_summary_of(plan, names))
        parts.append(f'<rect x="{1 + a * step:.2f}" y="1" width="{max(0.8, (b - a) * step):.2f}" '
                     f'height="{height}" fill="{NPU_STROKE if npu else CPU_STROKE}">'
                     f"<title>{escape(tip)}</title></rect>")
    parts.append(f'<text x="1" y="{height + 13}">node 0</text><text x="{width + 1}" '
                 f'y="{height + 13}" text-anchor="end">node {len(plan.order) - 1} (execution '
                 "order)</text></svg>")
    return "".join(parts)


def op_summary_of(plan: PartitionPlan, names: Sequence[str], limit: int = 4) -> str:
    """The op-type summary of some nodes of ``plan``."""
    from ortnpu.report.text import op_summary

    return op_summary([plan.op_types[n] for n in names], limit=limit)


def partition_overview(report: EvaluationReport, box_w: int = 230, box_h: int = 50,
                       gap_x: int = 26, gap_y: int = 36, per_row: int = 6,
                       rows_per_column: int = 16) -> str:
    """The partition contracted: one box per NPU subgraph and per CPU island, layered top down.

    Boxes hold the node count, the op types and (NPU) the MACs or (CPU) the main reasons; edges
    carry the number of node-to-node connections between two groups. A 1000-node model becomes
    a few dozen to a few hundred boxes: a layer with more than ``per_row`` groups wraps onto
    further rows, and after ``rows_per_column`` rows the drawing continues in the next column
    to the right (read it like newspaper columns), so a deep model stays near one screen high.
    """
    from ortnpu.report.text import macs_text

    plan = report.plan
    groups = _groups(plan)
    of = {n: k for k, (_, _, nodes) in enumerate(groups) for n in nodes}
    links: dict[tuple[int, int], int] = defaultdict(int)
    for a, b in report.edges:
        if a in of and b in of and of[a] != of[b]:
            links[(of[a], of[b])] += 1
    layer = _layers(len(groups), list(links))
    preds: dict[int, list[int]] = defaultdict(list)
    for a, b in links:
        preds[b].append(a)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for g in range(len(groups)):
        by_layer[layer[g]].append(g)
    rows: list[list[int]] = []
    x_of: dict[int, float] = {}
    for d in sorted(by_layer):
        members = by_layer[d]
        members.sort(key=lambda g: (sum(x_of[p] for p in preds[g] if p in x_of)
                                    / max(1, sum(p in x_of for p in preds[g]))
                                    if any(p in x_of for p in preds[g]) else 0.0))
        for start in range(0, len(members), per_row):
            rows.append(members[start:start + per_row])
            for i, g in enumerate(rows[-1]):
                x_of[g] = i
    column_gap = 3 * gap_x
    pos: dict[int, tuple[float, float]] = {}
    x0 = 10.0
    width = 0.0
    column: dict[int, int] = {}
    for c in range(0, len(rows), rows_per_column):
        chunk = rows[c:c + rows_per_column]
        for r, members in enumerate(chunk):
            for i, g in enumerate(members):
                pos[g] = (x0 + i * (box_w + gap_x), 24 + r * (box_h + gap_y))
                column[g] = c
        width = x0 + max(len(m) for m in chunk) * (box_w + gap_x)
        x0 = width + column_gap
    width += 10
    height = 34 + min(len(rows), rows_per_column) * (box_h + gap_y)
    macs = {x.name: x.macs for x in report.estimate.layers}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11" role="img" '
             'aria-label="partition graph">']
    outgoing: dict[int, list[str]] = defaultdict(list)
    incoming: dict[int, list[str]] = defaultdict(list)
    for (a, b), count in links.items():
        if column[a] != column[b]:  # named at both ends instead of a line across the page
            outgoing[a].append(groups[b][0])
            incoming[b].append(groups[a][0])
            continue
        x1, y1 = pos[a][0] + box_w / 2, pos[a][1] + box_h
        x2, y2 = pos[b][0] + box_w / 2, pos[b][1]
        bend = min(gap_y * 2.5, max(gap_y, abs(y2 - y1) / 2))
        stroke = 1 + min(4.0, count.bit_length() - 1)
        parts.append(f'<path d="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + bend:.0f} {x2:.0f},'
                     f'{y2 - bend:.0f} {x2:.0f},{y2:.0f}" fill="none" stroke="#8a8a8a" '
                     f'stroke-opacity="0.7" stroke-width="{stroke:.1f}"><title>'
                     f'{count} connection(s) {escape(groups[a][0])} → {escape(groups[b][0])}'
                     '</title></path>')
    for g, (gid, where, nodes) in enumerate(groups):
        x, y = pos[g]
        npu = where == "NPU"
        fill, stroke = (NPU_FILL, NPU_STROKE) if npu else (CPU_FILL, CPU_STROKE)
        ops = op_summary_of(plan, nodes, limit=3)
        causes = Counter(plan.causes.get(n) or plan.reasons[n] for n in nodes)
        if npu:
            detail = macs_text(sum(macs.get(n, 0) for n in nodes))
            title = f"{gid}: {len(nodes)} node(s) on the NPU"
        else:
            shorts = Counter(short_cause(c) for c in causes.elements())
            detail = ", ".join(f"{c} ×{k}" if len(shorts) > 1 else c
                               for c, k in shorts.most_common())
            title = f"CPU island: {len(nodes)} node(s)"
        tip = [title, op_summary_of(plan, nodes, limit=12)]
        if not npu:
            tip += [f"{k}× {c}" for c, k in causes.most_common(6)]
        tip += nodes[:12] + ([f"… {len(nodes) - 12} more"] if len(nodes) > 12 else [])
        head = f"{gid} · {len(nodes)} node{'s' if len(nodes) > 1 else ''}" + \
            ("" if npu else " on the CPU")
        parts.append(
            f'<g><title>{escape(chr(10).join(tip))}</title>'
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
            f'<text x="{x + 8}" y="{y + 15}" font-weight="bold" fill="{stroke}">'
            f'{escape(head)}</text>'
            f'<text x="{x + 8}" y="{y + 30}">{escape(_fit(ops, box_w - 16))}</text>'
            f'<text x="{x + 8}" y="{y + 44}" fill="#555" font-size="10">'
            f'{escape(_fit(detail, box_w - 16, 10))}</text></g>')
        for names, dy, arrow in ((outgoing.get(g), box_h + 12, "→ "),
                                 (incoming.get(g), -4, "← ")):
            if names:
                label = _fit(arrow + ", ".join(names), box_w / 2 - 8, 10)
                parts.append(f'<text x="{x + box_w / 2 + 6}" y="{y + dy}" fill="#666" '
                             f'font-size="10">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
