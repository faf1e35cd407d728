"""Plain-text rendering of an evaluation report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ortnpu.partition import PartitionPlan
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


def macs_text(macs: float) -> str:
    """``651 MMACs``, ``512 MACs``, ``no MACs``."""
    if not macs:
        return "no MACs"
    text = human_count(macs)
    return text + ("MACs" if text[-1].isalpha() else " MACs")


def op_summary(ops: list[str], limit: int = 4) -> str:
    """``Conv×12, Add×6, Relu×6, +3 op types`` for a list of op types."""
    counts = Counter(ops).most_common()
    text = ", ".join(f"{op}×{k}" for op, k in counts[:limit])
    return text + (f", +{len(counts) - limit} op types" if len(counts) > limit else "")


def group_label(plan: PartitionPlan, cause: str, nodes: list[str]) -> str:
    """What a group of CPU nodes shows as its reason: the node's own when it is alone."""
    return plan.reasons[nodes[0]] if len(nodes) == 1 else cause


def cpu_group_lines(groups: Sequence[tuple[str, str, list[str]]], reasons: Mapping[str, str],
                    verbose: bool = False) -> list[str]:
    """The CPU table: count, op type and reason per group; ``verbose`` adds every node."""
    total = sum(len(nodes) for _, _, nodes in groups)
    lines = [f"CPU nodes ({total}) by reason and op type"
             + ("" if verbose else "; --verbose lists every node") + ":"]
    width = max(len(op) for _, op, _ in groups)
    lines.append(f"  {'count':>5}  {'op':<{width}}  reason")
    for cause, op, nodes in groups:
        label = reasons[nodes[0]] if len(nodes) == 1 else cause
        lines.append(f"  {len(nodes):>5}  {op:<{width}}  {label}")
        if verbose:
            lines += [f"         {reasons[n]}" for n in nodes]
    return lines


def render_text(report: EvaluationReport, top: int = 10, verbose: bool = False,
                subgraphs: int = 8) -> str:
    """Summary, subgraphs, CPU nodes grouped by (reason, op type), the slowest layers.

    ``verbose`` lists every subgraph and every CPU node under its group; otherwise the text
    stays a screenful on a 1000-node model.
    """
    s = report.summary
    t = report.target
    plan = report.plan
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
    shown = plan.subgraphs if verbose else sorted(
        plan.subgraphs, key=lambda sg: -len(sg.nodes))[:subgraphs]
    if plan.subgraphs:
        lines.append(f"NPU subgraphs ({len(plan.subgraphs)}"
                     + ("" if len(shown) == len(plan.subgraphs) else
                        f", the {len(shown)} largest; --verbose lists all") + "):")
    for sg in sorted(shown, key=lambda sg: sg.index):
        lines.append(f"  {sg.name}: {len(sg.nodes)} nodes {sg.nodes[0]} .. {sg.nodes[-1]} "
                     f"({op_summary([plan.op_types[n] for n in sg.nodes])}); "
                     f"{len(sg.inputs)} in, {len(sg.outputs)} out")
    if plan.cpu_nodes:
        lines += cpu_group_lines(plan.cpu_groups(), plan.reasons, verbose)
    layers = sorted((x for x in report.estimate.layers if x.time_us > 0),
                    key=lambda x: -x.time_us)[:top]
    if layers:
        lines.append(f"slowest layers (of {len(report.estimate.layers)}):")
        for x in layers:
            where = "CPU" if x.placement == "CPU" else f"NPU {x.cycles} cycles"
            lines.append(f"  {x.name:<32} {x.op:<18} {where:<22} {x.time_us:10.1f} us  "
                         f"{macs_text(x.macs)}  bound {x.bound}")
    lines += [f"note: {n}" for n in report.estimate.notes]
    return "\n".join(lines)
