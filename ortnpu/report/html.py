"""Self-contained HTML rendering of an evaluation report (inline CSS and SVG)."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from ortnpu.report.svg import COLORS, CPU_FILL, NPU_FILL, cycles_chart, partition_graph
from ortnpu.report.text import human_bytes, human_count

if TYPE_CHECKING:
    from ortnpu.report.evaluation import EvaluationReport

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px}
th{background:#f3f3f3;text-align:left;position:sticky;top:0}td.n{text-align:right}
tr.CPU td{background:#fff4ea}.summary td{font-size:14px}.muted{color:#777}
.scroll{overflow:auto;border:1px solid #eee;max-height:720px}
.key span{display:inline-block;padding:1px 8px;margin-right:6px;border-radius:3px}
"""


def _row(cells: list[str], cls: str = "") -> str:
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>"


def render_html(report: EvaluationReport) -> str:
    """The whole page."""
    s = report.summary
    t = report.target
    model_name = escape(str(report.model.get("name") or "model"))
    summary_rows = [
        ("target", f"{escape(t.name)}"
                   + (' <span class="muted">(illustrative hardware numbers)</span>'
                      if s["illustrative"] else "")),
        ("nodes", f"{s['nodes']}: {s['npu_nodes']} on the NPU in {s['subgraphs']} "
                  f"subgraph(s), {s['cpu_nodes']} on the CPU"),
        ("MACs", f"{human_count(s['macs'])} ({100 * s['npu_mac_fraction']:.1f}% on the NPU)"),
        ("latency", f"{s['latency_ms']:.3f} ms ({s['fps']:.1f} fps): NPU "
                    f"{s['npu_time_ms']:.3f} ms, CPU {s['cpu_time_ms']:.3f} ms, hand-over "
                    f"{s['overhead_ms']:.3f} ms"),
        ("memory", f"weights {human_bytes(s['weight_bytes'])}, DRAM traffic "
                   f"{human_bytes(s['dram_bytes'])} per inference"),
    ]
    if report.verification:
        v = report.verification
        summary_rows.append(("optimized vs original",
                             f"max abs error {v['max_abs_error']:.3g}, relative to the output "
                             f"range {v['max_relative_error']:.3g} ({v['samples']} random "
                             "inputs)"))
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>ortnpu evaluation: {model_name} on {escape(t.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>ortnpu evaluation: {model_name}</h1>",
        f'<p class="muted">{escape(t.description)}</p>',
        '<h2 id="summary">Summary</h2><table class="summary">',
        *(_row([f"<th>{k}</th>", f"<td>{v}</td>"]) for k, v in summary_rows),
        "</table>",
    ]
    if report.estimate.notes:
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.estimate.notes)
                     + "</ul>")
    cpu = report.plan.cpu_nodes
    parts.append(f'<h2 id="cpu">CPU nodes ({len(cpu)})</h2>')
    if cpu:
        parts.append("<table><tr><th>node</th><th>op</th><th>reason</th></tr>")
        parts += [_row([f"<td>{escape(n)}</td>", f"<td>{escape(report.plan.op_types[n])}</td>",
                        f"<td>{escape(report.plan.reasons[n])}</td>"]) for n in cpu]
        parts.append("</table>")
    else:
        parts.append("<p>Every node runs on the NPU.</p>")
    key = "".join(f'<span style="background:{c};color:#fff">{b}</span>'
                  for b, c in COLORS.items())
    parts += ['<h2 id="chart">Cycles per layer</h2>', f'<p class="key">{key}</p>',
              f'<div class="scroll">{cycles_chart(report)}</div>']
    parts += ['<h2 id="layers">Layers</h2><div class="scroll"><table>',
              "<tr><th>#</th><th>node</th><th>op</th><th>where</th><th>reason</th>"
              "<th>MACs</th><th>weights</th><th>activations</th><th>SRAM fit</th>"
              "<th>DRAM</th><th>cycles</th><th>bound</th><th>time (us)</th></tr>"]
    for i, row in enumerate(report.layers()):
        where = row["placement"] + (f" ({row['subgraph']})" if row["subgraph"] is not None
                                    else "")
        parts.append(_row([
            f'<td class="n">{i}</td>', f"<td>{escape(row['name'])}</td>",
            f"<td>{escape(row['op'])}</td>", f"<td>{where}</td>",
            f"<td>{escape(row['reason'])}</td>",
            f'<td class="n">{human_count(row["macs"])}</td>',
            f'<td class="n">{human_bytes(row["weight_bytes"])}</td>',
            f'<td class="n">{human_bytes(row["input_bytes"] + row["output_bytes"])}</td>',
            f"<td>{'yes' if row['sram_fit'] else 'no'}</td>",
            f'<td class="n">{human_bytes(row["dram_bytes"])}</td>',
            f'<td class="n">{row["cycles"]}</td>', f"<td>{row['bound']}</td>",
            f'<td class="n">{row["time_us"]:.2f}</td>'], row["placement"]))
    parts.append("</table></div>")
    parts += ['<h2 id="graph">Partition</h2>',
              f'<p class="key"><span style="background:{NPU_FILL}">NPU</span>'
              f'<span style="background:{CPU_FILL}">CPU</span> red edges cross a subgraph '
              "boundary; hover a node for its reason.</p>",
              f'<div class="scroll">{partition_graph(report)}</div>']
    if report.optimize:
        parts.append('<h2 id="optimize">Optimization passes</h2><ul>')
        for p in report.optimize:
            changes = p.get("changes", [])
            parts.append(f"<li><b>{escape(p['pass'])}</b>: {len(changes)} change(s)"
                         + ("<ul>" + "".join(f"<li>{escape(c)}</li>" for c in changes[:50])
                            + (f"<li>… {len(changes) - 50} more</li>" if len(changes) > 50
                               else "") + "</ul>" if changes else "") + "</li>")
        parts.append("</ul>")
    parts.append('<p class="muted">Generated by ortnpu.</p></body></html>')
    return "\n".join(parts)
