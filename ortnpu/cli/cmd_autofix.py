"""``ortnpu autofix``: quantize, then recover accuracy layer by layer within a budget."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ortnpu.cli.cmd_quantize import add_calibration_args, input_names, load_calibration
from ortnpu.cli.options import add_input_args, input_options
from ortnpu.errors import CalibrationError
from ortnpu.validate import load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autofix", help="quantize and move sensitive layers to int16/CPU until accurate",
        description="Quantize, score top-1 accuracy on labelled data, and while the loss against "
                    "the float model exceeds --budget, move the layer whose 16-bit version "
                    "recovers the most to int16 (then to the CPU). Prints every step.")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--target", default="tflite-int8", help="target preset or TOML file")
    add_calibration_args(p)
    add_input_args(p)
    p.add_argument("--eval", required=True, metavar="NPZ",
                   help=".npz with the evaluation inputs (named like the model input, or "
                        "'test_x') and integer labels ('labels' or 'test_y')")
    p.add_argument("--budget", type=float, default=0.005,
                   help="largest accepted top-1 loss, as a fraction (default 0.005 = 0.5 point)")
    p.add_argument("--max-steps", type=int, default=8, help="most layers to change")
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import onnx

    from ortnpu.passes import fix_inputs
    from ortnpu.quant.autofix import autofix, top1

    model = fix_inputs(load_model(args.model), **input_options(args))
    names = input_names(model)
    data = load_calibration(args.calib, names, args.preprocess, args.limit, model=model,
                            batch_axes=args.batch_axis)
    try:
        archive = np.load(args.eval)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{args.eval}: cannot read evaluation data: {exc}") from None
    xkey = names[0] if names[0] in archive else "test_x"
    ykey = "labels" if "labels" in archive else "test_y"
    if xkey not in archive or ykey not in archive:
        raise CalibrationError(f"{args.eval}: needs inputs ({names[0]!r} or 'test_x') and "
                               f"labels ('labels' or 'test_y'); holds {list(archive.keys())}")
    npu, report = autofix(model, args.target, data, archive[xkey].astype(np.float32),
                          top1(archive[ykey]), budget=args.budget, max_steps=args.max_steps)
    print(report)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(npu, args.output)
    print(f"wrote {args.output}")
    return 0 if report.within_budget else 1
