"""``ortnpu optimize``: run the graph passes and write the optimized float model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ortnpu.cli.options import add_input_args, input_options

#: Largest relative output error (to the output range) accepted by --verify.
VERIFY_TOLERANCE = 1e-4


def split_names(values: Sequence[str] | None) -> list[str]:
    """Repeated and comma-separated option values as one list."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def add_optimize_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``optimize`` and ``opt-and-eval``."""
    from ortnpu.passes import PASS_NAMES

    add_input_args(p)
    p.add_argument("--no-fuse-activations", action="store_true",
                   help="do not mark ReLU/Clip as fused into the layer before them")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer weight equalization of Conv -> ReLU -> Conv pairs")
    p.add_argument("--skip", action="append", metavar="PASS", choices=PASS_NAMES,
                   help=f"leave out a pass (repeatable): {', '.join(PASS_NAMES)}")
    p.add_argument("--no-verify", action="store_true",
                   help="do not compare the optimized model's outputs with the original's")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize", help="optimize a float model for an NPU (same outputs)",
        description="Run the graph passes (shape inference, constant folding, Identity/Dropout "
                    "and no-op removal, BatchNormalization folding, Pad fusion, MatMul+Add -> "
                    "Gemm, optional weight equalization, activation "
                    "fusion marks) and write the optimized float model. Prints what each pass "
                    "changed, then checks on random inputs that the outputs are unchanged.",
        epilog="Exit codes: 0 ok; 1 the optimized outputs differ from the original's by more "
               f"than {VERIFY_TOLERANCE:g} of the output range (and more than 1e-06 "
               "absolute); 2 bad input (unreadable "
               "model, unknown input name, an output check that would need a tensor above "
               "512 MiB or cannot run with default sizes for dynamic dimensions: give "
               "--input-shape or --no-verify); 3 internal error.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", required=True, help="where to write the optimized model")
    p.add_argument("--target", default=None,
                   help="target preset or .toml file whose rules decide activation fusion")
    p.add_argument("-v", "--verbose", action="store_true", help="list every change")
    add_optimize_arguments(p)
    p.set_defaults(func=_run)


def optimize_file(args: argparse.Namespace) -> tuple[Any, Any, Any, dict | None, int]:
    """Load, optimize, verify, print the pass log.

    Returns:
        (original, optimized, pass result, output comparison or None, exit code).
    """
    from ortnpu.passes import fix_inputs, optimize
    from ortnpu.passes.verify import compare_models
    from ortnpu.validate import load_model

    original = load_model(args.model)
    inputs = input_options(args)
    shapes = inputs["input_shapes"]
    optimized, result = optimize(original, **inputs, target=args.target,
                                 fuse_activations=not args.no_fuse_activations,
                                 equalize=args.equalize, skip=args.skip or (),
                                 return_results=True)
    before, after = len(original.graph.node), len(optimized.graph.node)
    print(f"optimized {args.model}: {before} -> {after} nodes")
    limit = None if getattr(args, "verbose", False) else 3
    for d in result.details:
        if not d.changes:
            continue
        print(f"  {d.name}: {len(d.changes)} change(s)")
        for c in d.changes[:limit]:
            print(f"    {c}")
        if limit is not None and len(d.changes) > limit:
            print(f"    ... {len(d.changes) - limit} more (use -v)")
    check = None
    code = 0
    if not args.no_verify:
        # frozen inputs: the reference is the original with the same constants
        reference = fix_inputs(original, freeze=inputs["freeze"])
        check = compare_models(reference, optimized, input_shapes=shapes,
                               tolerance=VERIFY_TOLERANCE)
        ok = check["ok"]
        print(f"  outputs unchanged: max abs error {check['max_abs_error']:.3g}, "
              f"{check['max_relative_error']:.3g} of the output range "
              f"({'ok' if ok else 'FAILED'}; tolerance {VERIFY_TOLERANCE:g} of the range, or "
              f"{check['noise_floor']:g} absolute)")
        code = 0 if ok else 1
    return original, optimized, result, check, code


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model

    output_path(args.output, args.model, args.target)
    _, optimized, _, _, code = optimize_file(args)
    save_model(optimized, args.output)
    print(f"wrote {args.output}")
    return code
