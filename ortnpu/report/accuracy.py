"""Self-contained HTML page of an accuracy evaluation (:func:`ortnpu.evaluate_accuracy`).

Same look as the evaluation report (:mod:`ortnpu.report.html`: its style sheet, inline SVG, no
scripts or external files), so a page can be mailed or archived next to the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from ortnpu.report.html import _CSS, _row

if TYPE_CHECKING:
    from ortnpu.accuracy import AccuracyResult

LOSS, GAIN = "#c0392b", "#16a085"
#: classes drawn in the per-class chart (the worst drops; the table lists every class)
CHART_CLASSES = 40


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _points(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:+.2f}"


def _db(v: float) -> str:
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.2f}"


def _class_name(c: int, names: Sequence[str] | None) -> str:
    return f"{c} ({names[c]})" if names and 0 <= c < len(names) else str(c)


def drop_chart(result: AccuracyResult, names: Sequence[str] | None = None,
               row: int = 16, width: int = 360) -> str:
    """Horizontal bars of the per-class drop, worst first (red: accuracy lost, green: won)."""
    rows = sorted(result.per_class, key=lambda c: (-c["drop"], c["class"]))[:CHART_CLASSES]
    if not rows:
        return "<p>No labels: no per-class accuracy.</p>"
    peak = max(abs(c["drop"]) for c in rows) or 1.0
    labels = {c["class"]: _class_name(c["class"], names) for c in rows}
    left = max(80, 7 * max(len(v) for v in labels.values()) + 12)
    mid = left + width // 2
    height = row * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" '
             f'height="{height}" role="img" aria-label="top-1 drop per class">',
             f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height - 24}" stroke="#999"/>']
    for k, c in enumerate(rows):
        y = k * row + 4
        w = abs(c["drop"]) / peak * (width // 2)
        x = mid - w if c["drop"] < 0 else mid
        tip = (f"class {labels[c['class']]}: float {_pct(c['float'])}, NPU {_pct(c['npu'])}, "
               f"drop {_points(c['drop'])} points, {c['samples']} samples")
        parts.append(f'<text x="{left - 6}" y="{y + row - 5}" text-anchor="end" '
                     f'font-size="11">{escape(labels[c["class"]])}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{row - 4}" '
                     f'fill="{LOSS if c["drop"] > 0 else GAIN}"><title>{escape(tip)}</title>'
                     "</rect>")
        parts.append(f'<text x="{left + width + 4}" y="{y + row - 5}" font-size="10">'
                     f'{_points(c["drop"])}</text>')
    more = len(result.per_class) - len(rows)
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="11">top-1 drop in points '
                 f"(float minus NPU; red: lost, green: won; scale ±{100 * peak:.2f})"
                 + (f", {more} more classes in the table" if more > 0 else "")
                 + "</text></svg>")
    return "".join(parts)


def render_html(result: AccuracyResult, class_names: Sequence[str] | None = None) -> str:
    """The whole page; ``class_names[i]`` names class ``i`` (an image folder's folders)."""
    r = result
    title = f"ortnpu accuracy: {escape(r.npu_model or 'NPU graph')}"
    rate = f", {r.samples / r.seconds:.1f} samples/s" if r.seconds > 0 else ""
    summary: list[tuple[str, str]] = [
        ("models", f"NPU graph {escape(r.npu_model)} against float model "
                   f"{escape(r.float_model)}, output {escape(r.output)}"),
        ("data", f"{r.samples} samples in {r.batches} batches"),
        ("run", f"{r.seconds:.1f} s{rate}; {escape(r.engine)}, {r.workers} worker(s)"
                + (f", {r.resumed} batches resumed from a checkpoint" if r.resumed else "")),
    ]
    if r.float_top1 is not None:
        summary += [("top-1", f"float {_pct(r.float_top1)}, NPU {_pct(r.npu_top1)}: "
                              f"<b>drop {_points(r.top1_drop)} points</b>"),
                    (f"top-{r.topk}", f"float {_pct(r.float_topk)}, NPU {_pct(r.npu_topk)}")]
    if r.agreement is not None:
        summary.append(("top-1 agreement", f"{_pct(r.agreement)} of the samples get the same "
                                           "class from both models"))
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{title}</title><style>{_CSS}tr.loss td{{background:#fadbd8}}</style>"
        "</head><body>",
        f"<h1>{title}</h1>",
        '<p class="muted">The float model and its NPU graph over a whole dataset '
        "(ortnpu.evaluate_accuracy); the numbers do not depend on the engine or the number of "
        "workers.</p>",
        '<h2 id="summary">Summary</h2><table class="summary">',
        *(_row([f"<th>{k}</th>", f"<td>{v}</td>"]) for k, v in summary),
        "</table>",
    ]
    if r.per_class:
        lost = sum(1 for c in r.per_class if c["drop"] > 0)
        parts += ['<h2 id="classes">Per class</h2>',
                  f"<p>{lost} of {len(r.per_class)} classes lose top-1 accuracy on the NPU "
                  "graph. Hover a bar for its numbers.</p>",
                  f'<div class="scroll">{drop_chart(r, class_names)}</div>',
                  f"<details{' open' if len(r.per_class) <= 100 else ''}><summary>"
                  f"{len(r.per_class)} classes, largest drop first</summary>"
                  '<div class="scroll"><table><tr><th>class</th><th>samples</th>'
                  "<th>float top-1</th><th>NPU top-1</th><th>drop (points)</th></tr>"]
        for c in sorted(r.per_class, key=lambda c: (-c["drop"], c["class"])):
            parts.append(_row([
                f"<td>{escape(_class_name(c['class'], class_names))}</td>",
                f'<td class="n">{c["samples"]}</td>', f'<td class="n">{_pct(c["float"])}</td>',
                f'<td class="n">{_pct(c["npu"])}</td>',
                f'<td class="n">{_points(c["drop"])}</td>'], "loss" if c["drop"] > 0 else ""))
        parts.append("</table></div></details>")
    parts += ['<h2 id="outputs">Outputs</h2>',
              "<p>Error of the NPU graph's outputs against the float model's over all "
              "samples.</p><table><tr><th>output</th><th>SQNR (dB)</th><th>cosine</th>"
              "<th>max abs error</th><th>mean abs error</th><th>values</th></tr>"]
    for name, m in r.outputs.items():
        parts.append(_row([f"<td>{escape(name)}</td>", f'<td class="n">{_db(m.sqnr_db)}</td>',
                           f'<td class="n">{m.cosine:.6f}</td>',
                           f'<td class="n">{m.max_abs_error:.4g}</td>',
                           f'<td class="n">{m.mean_abs_error:.4g}</td>',
                           f'<td class="n">{m.count}</td>']))
    parts.append("</table>")
    if r.user:
        parts += ['<h2 id="metrics">Your metrics</h2>',
                  "<p>Mean per sample of each value the metric returned.</p>"
                  "<table><tr><th>metric</th><th>mean</th></tr>",
                  *(_row([f"<td>{escape(k)}</td>", f'<td class="n">{v:.6g}</td>'])
                    for k, v in r.user.items()),
                  "</table>"]
    parts.append('<p class="muted">Generated by ortnpu accuracy.</p></body></html>')
    return "\n".join(parts) + "\n"


__all__ = ["drop_chart", "render_html"]
