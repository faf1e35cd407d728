"""``ortnpu evaluate``: per-node verdicts, partition and estimate of a model on a target."""

from __future__ import annotations

import argparse
from typing import Any

from ortnpu.cli.options import add_input_shape_arg

EPILOG = ("Exit codes: 0 ok; 1 --require-npu was given and some nodes run on the CPU; 2 bad "
          "input (unreadable model, unknown target, unknown node name...); 3 internal error.")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``evaluate`` and ``opt-and-eval``."""
    p.add_argument("--target", default=None,
                   help="target preset name or .toml file (default tflite-int8)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--html", metavar="FILE", help="write the report as one HTML file")
    p.add_argument("--force-cpu", action="append", metavar="NAME|OP",
                   help="run these nodes (names or op types, comma-separated) on the CPU")
    p.add_argument("--force-npu", action="append", metavar="NAME|OP",
                   help="run these nodes (names or op types, comma-separated) on the NPU")
    p.add_argument("--npu-inputs", action="append", metavar="TENSOR",
                   help="tensors where the NPU part starts; what computes them stays on the CPU")
    p.add_argument("--npu-outputs", action="append", metavar="TENSOR",
                   help="tensors where the NPU part ends; what follows stays on the CPU")
    p.add_argument("--min-subgraph-nodes", type=int, metavar="N",
                   help="smallest NPU subgraph (overrides the target)")
    p.add_argument("--require-npu", action="store_true",
                   help="exit with code 1 when any node runs on the CPU")
    p.add_argument("--quiet", action="store_true", help="print only the summary lines")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="support verdicts, NPU/CPU partition and performance estimate",
        description="Check every node against the target's support rules, partition the "
                    "graph into convex NPU subgraphs and CPU nodes (each with its reason), "
                    "estimate cycles per layer from the target's hardware numbers, and print "
                    "a report; optionally write it as JSON and HTML.",
        epilog=EPILOG)
    p.add_argument("model", help=".onnx file (run `ortnpu optimize` first, or use opt-and-eval)")
    add_input_shape_arg(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every CPU node and every NPU subgraph (default: CPU nodes "
                        "counted per reason and op type)")
    add_evaluate_arguments(p)
    p.set_defaults(func=_run)


def evaluate_and_report(args: argparse.Namespace, model: Any, name: str,
                        **extra: Any) -> int:
    """Evaluate ``model``, print, write files; return the exit code."""
    from ortnpu.cli.cmd_optimize import split_names
    from ortnpu.evaluation import evaluate

    if args.min_subgraph_nodes is not None and args.min_subgraph_nodes < 1:
        from ortnpu.errors import ModelError

        raise ModelError("--min-subgraph-nodes must be at least 1")
    report = evaluate(model, args.target, force_cpu=split_names(args.force_cpu),
                      force_npu=split_names(args.force_npu),
                      npu_inputs=split_names(args.npu_inputs) or None,
                      npu_outputs=split_names(args.npu_outputs) or None,
                      min_subgraph_nodes=args.min_subgraph_nodes, name=name, **extra)
    text = report.to_text(verbose=getattr(args, "verbose", False))
    print("\n".join(text.splitlines()[:5]) if args.quiet else text)
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    if args.html:
        report.write_html(args.html)
        print(f"wrote {args.html}")
    if args.require_npu and report.plan.cpu_nodes:
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ortnpu.cli.files import output_path
    from ortnpu.cli.options import parse_input_shapes
    from ortnpu.validate import load_model

    for out in (args.json, args.html):
        if out:
            output_path(out, args.model, args.target)

    return evaluate_and_report(args, load_model(args.model), Path(args.model).name,
                               input_shapes=parse_input_shapes(args.input_shape))
