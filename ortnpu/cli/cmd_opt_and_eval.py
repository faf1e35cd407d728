"""``ortnpu opt-and-eval``: optimize, check the outputs are unchanged, then evaluate."""

from __future__ import annotations

import argparse

from ortnpu.cli.cmd_evaluate import add_evaluate_arguments
from ortnpu.cli.cmd_optimize import VERIFY_TOLERANCE, add_optimize_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "opt-and-eval", help="optimize then evaluate in one go",
        description="Run `ortnpu optimize` (and check on random inputs that the outputs are "
                    "unchanged), then `ortnpu evaluate` on the optimized model. The report "
                    "includes what each pass changed and the output comparison.",
        epilog="Exit codes: 0 ok; 1 the optimized outputs differ from the original's by more "
               f"than {VERIFY_TOLERANCE:g} of the output range, or --require-npu was given "
               "and some nodes run on the CPU; 2 bad input; 3 internal error.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", help="also write the optimized model here")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every pass change, CPU node and NPU subgraph")
    add_optimize_arguments(p)
    add_evaluate_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ortnpu.cli.cmd_evaluate import evaluate_and_report
    from ortnpu.cli.cmd_optimize import optimize_file
    from ortnpu.cli.files import output_path, save_model

    for out in (args.output, args.json, args.html):
        if out:
            output_path(out, args.model, args.target)
    _, optimized, result, check, code = optimize_file(args)
    if args.output:
        save_model(optimized, args.output)
        print(f"wrote {args.output}")
    report_code = evaluate_and_report(args, optimized, Path(args.model).name,
                                      optimize_log=[d.to_dict() for d in result.details],
                                      verification=check)
    return max(code, report_code)
