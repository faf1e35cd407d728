"""Plain-text rendering of an evaluation report."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ortnpu.report.evaluation import EvaluationReport


def human_count(n: float) -> str:
    """``1234567`` -> ``1.23 M``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def render_text(report: EvaluationReport, top: int = 10) -> str:
    """Summary, subgraphs, every CPU node with its reason, and the slowest layers."""
    s = report.summary
    t = report.target
    lines = [
        f"model {report.model.get('name') or '?'}: {s['nodes']} nodes; target {t.name}"
        + (" (illustrative hardware numbers)" if s["illustrative"] else ""),
        f"  NPU {s['npu_nodes']} nodes in {s['subgraphs']} subgraph(s), CPU {s['cpu_nodes']} "
        f"nodes; {100 * s['npu_mac_fraction']:.1f}% of {human_count(s['macs'])}MACs on the NPU",
        f"  latency {s['latency_ms']:.3f} ms ({s['fps']:.1f} fps): NPU {s['npu_time_ms']:.3f} ms"
        f" + CPU {s['cpu_time_ms']:.3f} ms + hand-over {s['overhead_ms']:.3f} ms",
        f"  weights {human_bytes(s['weight_bytes'])}, DRAM traffic "
        f"{human_bytes(s['dram_bytes'])} per inference",
    ]
    if report.verification:
        v = report.verification
        lines.append(f"  optimized vs original: max abs error {v['max_abs_error']:.3g} "
                     f"(relative to output range {v['max_relative_error']:.3g})")
    for sg in report.plan.subgraphs:
        lines.append(f"  {sg.name}: {len(sg.nodes)} nodes {sg.nodes[0]} .. {sg.nodes[-1]}; "
                     f"in {', '.join(sg.inputs)}; out {', '.join(sg.outputs)}")
    cpu = report.plan.cpu_nodes
    if cpu:
        ops = Counter(report.plan.op_types[n] for n in cpu)
        lines.append(f"CPU nodes ({len(cpu)}; " +
                     ", ".join(f"{op} x{k}" for op, k in ops.most_common()) + "):")
        lines += [f"  {report.plan.reasons[n]}" for n in cpu]
    layers = sorted((x for x in report.estimate.layers if x.time_us > 0),
                    key=lambda x: -x.time_us)[:top]
    if layers:
        lines.append(f"slowest layers (of {len(report.estimate.layers)}):")
        for x in layers:
            where = "CPU" if x.placement == "CPU" else f"NPU {x.cycles} cycles"
            lines.append(f"  {x.name:<32} {x.op:<18} {where:<22} {x.time_us:10.1f} us  "
                         f"{human_count(x.macs)}MACs  bound {x.bound}")
    lines += [f"note: {n}" for n in report.estimate.notes]
    return "\n".join(lines)
