"""``ortnpu demo``: the whole pipeline on the bundled digits CNN with real data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="optimize → evaluate → quantize → simulate → compare on the bundled model",
        description="Run the main job end to end on the bundled digits CNN (real scikit-learn "
                    "digits data): optimize, evaluate, quantize with real calibration data, run "
                    "the NPU graph in onnxruntime, and print float vs integer accuracy and where "
                    "every node ran.")
    p.add_argument("--target", default="tflite-int8",
                   help="target preset or TOML file (default: tflite-int8)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="also write optimized.onnx, npu.onnx and report.html into DIR")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu.demo import run_demo
    from ortnpu.domain import kernels

    print(f"kernels: {kernels.describe()}")
    run_demo(args.target, out_dir=args.out)
    return 0
