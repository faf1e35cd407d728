"""Self-contained HTML rendering of an evaluation report (inline CSS and SVG)."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from ortnpu.report.svg import (
    COLORS,
    CPU_FILL,
    NPU_FILL,
    cycles_chart,
    node_graph,
    partition_overview,
    partition_strip,
)
from ortnpu.report.text import group_label, human_bytes, human_count, op_summary

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
details>summary{cursor:pointer}details ul{margin:4px 0 4px 0;padding-left:18px}
td details li{margin:1px 0}td.reason{max-width:900px}
p.names{margin:4px 0 4px 14px;font-family:monospace;font-size:11px}
"""

#: Above this many nodes the per-node drawing is left out (the overview shows the partition).
NODE_GRAPH_LIMIT = 300
#: Above this many rows the layer table starts folded.
OPEN_TABLE_LIMIT = 200


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
    plan = report.plan
    parts += ['<h2 id="graph">Partition</h2>',
              f'<p class="key"><span style="background:{NPU_FILL}">NPU subgraph</span>'
              f'<span style="background:{CPU_FILL}">CPU island</span> one box per NPU '
              "subgraph and per group of CPU nodes. The strip shows every node in execution "
              "order; below it, the groups from the top, edges carrying data between them "
              "(thicker: more connections). Hover a slice or a box for its op "
              "types, reasons and nodes.</p>",
              f"<p>{partition_strip(report)}</p>",
              f'<div class="scroll">{partition_overview(report)}</div>']
    parts += _cpu_groups(report)
    parts += _subgraph_table(report)
    key = "".join(f'<span style="background:{c};color:#fff">{b}</span>'
                  for b, c in COLORS.items())
    parts += ['<h2 id="chart">Cycles per layer</h2>', f'<p class="key">{key}</p>',
              f'<div class="scroll">{cycles_chart(report)}</div>']
    rows = report.layers()
    parts += ['<h2 id="layers">Layers</h2>',
              f"<details{' open' if len(rows) <= OPEN_TABLE_LIMIT else ''}><summary>"
              f"{len(rows)} layers in execution order</summary>"
              '<div class="scroll"><table>',
              "<tr><th>#</th><th>node</th><th>op</th><th>where</th><th>reason</th>"
              "<th>MACs</th><th>weights</th><th>activations</th><th>SRAM fit</th>"
              "<th>DRAM</th><th>cycles</th><th>bound</th><th>time (us)</th></tr>"]
    for i, row in enumerate(rows):
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
    parts.append("</table></div></details>")
    if len(plan.order) <= NODE_GRAPH_LIMIT:
        parts += ['<h2 id="nodes">Node graph</h2>',
                  "<details><summary>every node, coloured by placement (red edges cross a "
                  "subgraph boundary; hover a node for its reason)</summary>",
                  f'<div class="scroll">{node_graph(report)}</div></details>']
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


def _cpu_groups(report: EvaluationReport) -> list[str]:
    """CPU nodes counted per (reason, op type); each row unfolds to its nodes."""
    plan = report.plan
    cpu = plan.cpu_nodes
    parts = [f'<h2 id="cpu">CPU nodes ({len(cpu)})</h2>']
    if not cpu:
        return [*parts, "<p>Every node runs on the NPU.</p>"]
    groups = plan.cpu_groups()
    parts.append(f"<p>{len(groups)} group(s) by reason and op type; unfold a row for its "
                 "nodes.</p><table><tr><th>count</th><th>op</th><th>reason</th></tr>")
    for cause, op, nodes in groups:
        own = {n: plan.reasons[n].split(": ", 1)[-1] for n in nodes}
        if all(r == cause for r in own.values()):  # the names say it all
            body = f'<p class="names">{", ".join(escape(n) for n in nodes)}</p>'
        else:
            body = "<ul>" + "".join(f"<li><b>{escape(n)}</b>: {escape(r)}</li>"
                                    for n, r in own.items()) + "</ul>"
        parts.append(_row([
            f'<td class="n">{len(nodes)}</td>', f"<td>{escape(op)}</td>",
            f'<td class="reason"><details><summary>{escape(group_label(plan, cause, nodes))}'
            f"</summary>{body}</details></td>"], "CPU"))
    parts.append("</table>")
    return parts


def _subgraph_table(report: EvaluationReport) -> list[str]:
    """One row per NPU subgraph: size, op types, MACs, boundary tensors."""
    plan = report.plan
    if not plan.subgraphs:
        return []
    macs = {x.name: x.macs for x in report.estimate.layers}
    open_attr = " open" if len(plan.subgraphs) <= 20 else ""
    parts = ['<h2 id="subgraphs">NPU subgraphs</h2>',
             f"<details{open_attr}><summary>{len(plan.subgraphs)} subgraph(s), "
             f"{len(plan.npu_nodes)} nodes</summary><div class=\"scroll\"><table>"
             "<tr><th>subgraph</th><th>nodes</th><th>op types</th><th>MACs</th>"
             "<th>first .. last node</th><th>inputs</th><th>outputs</th></tr>"]
    for sg in plan.subgraphs:
        parts.append(_row([
            f"<td>{sg.name}</td>", f'<td class="n">{len(sg.nodes)}</td>',
            f"<td>{escape(op_summary([plan.op_types[n] for n in sg.nodes], limit=6))}</td>",
            f'<td class="n">{human_count(sum(macs.get(n, 0) for n in sg.nodes))}</td>',
            f"<td>{escape(sg.nodes[0])} .. {escape(sg.nodes[-1])}</td>",
            f'<td class="n" title="{escape(", ".join(sg.inputs))}">{len(sg.inputs)}</td>',
            f'<td class="n" title="{escape(", ".join(sg.outputs))}">{len(sg.outputs)}</td>']))
    parts.append("</table></div></details>")
    return parts
