"""``ortnpu autofix``: quantize, then recover accuracy layer by layer until a goal is reached."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ortnpu.cli.cmd_accuracy import add_dataset_args, dataset_from_args
from ortnpu.cli.cmd_quantize import add_calibration_args, input_names, load_calibration
from ortnpu.cli.options import add_input_args, input_options
from ortnpu.errors import CalibrationError
from ortnpu.validate import load_model

#: the arrays of --eval that hold labels (any other array is an input)
LABEL_KEYS = ("labels", "test_y")
#: the accepted loss when no --budget/--goal is given, per objective
DEFAULT_BUDGET = {"top1": 0.005, "agreement": 0.005, "cosine": 0.01}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autofix", help="quantize and move sensitive layers to int16/CPU until accurate",
        description="Quantize, score the NPU graph against the float model on evaluation "
                    "samples, and while the score is short of the goal, move the layer whose "
                    "16-bit version recovers the most to int16 (then to the CPU). Works without "
                    "labels: the default objective is the cosine similarity of the NPU outputs "
                    "to the float outputs (worst output); with labels in --eval it is top-1 "
                    "accuracy. Each step tries the --max-candidates layers that compare ranks "
                    "worst, after those whose activation alone costs the output 1 dB or more "
                    "(8-bit targets). Prints every step, its trials and what changed.",
        epilog="Exit code 0 when the goal is reached, 1 when it is not (the best NPU graph "
               "found is written either way), 2 on bad input.")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--target", default="tflite-int8", help="target preset or TOML file")
    add_calibration_args(p)
    add_input_args(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--eval", metavar="NPZ",
                       help=".npz with the evaluation inputs, held in memory (one array per "
                            "model input named like it; for a single-input model 'test_x' or "
                            "the one other array; first axis = sample) and, optionally, "
                            "integer labels ('labels' or 'test_y', one per sample)")
    where.add_argument("--eval-data", nargs="+", metavar="PATH",
                       help="a whole evaluation dataset, scored by `ortnpu accuracy`'s "
                            "evaluator batch by batch (--workers/--engine): an image folder "
                            "(one sub-folder per class) or .npz shards; the same options as "
                            "`ortnpu accuracy --data` (--key, --label-key, --size, --crop, "
                            "--mean, --std)")
    add_dataset_args(p)
    p.add_argument("--eval-batch", type=int, default=64, metavar="N",
                   help="--eval-data: samples per batch (default 64); compare ranks the "
                        "candidates on the first batch")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="--eval-data: score each trial in N processes (or Ray actors)")
    p.add_argument("--engine", choices=("processes", "ray"), default=None,
                   help="--eval-data: processes (default for --workers > 1) or ray")
    p.add_argument("--objective", choices=("auto", "top1", "agreement", "cosine", "sqnr"),
                   default="auto",
                   help="what to recover: top1 (needs labels), agreement (top-1 class equal "
                        "to the float model's), cosine or sqnr of the NPU outputs against the "
                        "float outputs (no labels); auto: top1 when the evaluation data has "
                        "labels, else cosine")
    p.add_argument("--metric-output", metavar="NAME", default=None,
                   help="score cosine/sqnr on this model output only (default: the worst "
                        "output)")
    p.add_argument("--budget", type=float, default=None,
                   help="accepted loss against the float model: top-1 points as a fraction "
                        "(default 0.005) or 1 - cosine (default 0.01)")
    p.add_argument("--goal", type=float, default=None,
                   help="the score to reach instead of a budget (required for sqnr, in dB)")
    p.add_argument("--max-steps", type=int, default=8, help="most layers to change")
    p.add_argument("--max-candidates", type=int, default=20, metavar="N",
                   help="layers tried per step, worst first by compare's per-layer error "
                        "after the layers that cost the output most (default 20; 0: every NPU "
                        "layer, in graph order)")
    p.add_argument("--search", choices=("auto", "group", "greedy"), default="auto",
                   help="group: the worst k layers of compare's ranking to int16 at once, k "
                        "bisected to the smallest that reaches the goal, then greedy steps; "
                        "greedy: one layer per step, the best of the candidates; auto "
                        "(default): group when the model has more NPU layers than "
                        "--max-candidates")
    p.add_argument("--json", metavar="FILE", help="write the full report (every trial) here")
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph")
    p.set_defaults(func=_run)


def load_eval(path: str, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The evaluation inputs and labels of an .npz; labels must be one per sample."""
    from ortnpu.cli.cmd_compare import select_inputs
    from ortnpu.cli.files import read_arrays

    arrays = dict(read_arrays(path, "evaluation data"))
    label_key = next((k for k in LABEL_KEYS if k in arrays and k not in names), None)
    labels = arrays.pop(label_key) if label_key else None
    feed = select_inputs(arrays, names, None, path)
    counts = {k: (len(a) if np.ndim(a) else 0) for k, a in feed.items()}
    if labels is not None:
        whole = labels.dtype.kind in "iu" or (
            labels.dtype.kind == "f" and bool(np.all(np.isfinite(labels) & (labels % 1 == 0))))
        if labels.ndim != 1 or not whole:
            raise CalibrationError(f"{path}: {label_key!r} must be a 1-D array of integer class "
                                   f"labels, got dtype {labels.dtype} shape {list(labels.shape)}")
        for k, n in counts.items():
            if n != len(labels):
                raise CalibrationError(f"{path}: {len(labels)} labels in {label_key!r} but "
                                       f"{n} samples of input {k!r}; give one label per sample")
    return feed, labels


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model
    from ortnpu.datasets import ImageFolder, NpzShards
    from ortnpu.passes import fix_inputs
    from ortnpu.quant.autofix import agreement, autofix, cosine, sqnr, top1

    if args.max_candidates < 0:
        raise CalibrationError(f"--max-candidates must be 0 (all) or more, got "
                               f"{args.max_candidates}")
    evals = [args.eval] if args.eval else list(args.eval_data)
    output_path(args.output, args.model, args.calib, *evals, args.target)
    if args.json:
        output_path(args.json, args.model, args.calib, *evals, args.target, args.output)
    model = fix_inputs(load_model(args.model), **input_options(args))
    names = input_names(model)
    data = load_calibration(args.calib, names, args.preprocess, args.limit, model=model,
                            batch_axes=args.batch_axis)
    if args.eval:
        feed, labels = load_eval(args.eval, names)
        labelled = labels is not None
    else:
        feed = dataset_from_args(args.eval_data, args)
        labels = None
        labelled = isinstance(feed, ImageFolder) or (isinstance(feed, NpzShards)
                                                     and feed.label_key is not None)
    objective = args.objective
    if objective == "auto":
        objective = "top1" if labelled else "cosine"
    if objective == "top1":
        if not labelled:
            raise CalibrationError(f"{' '.join(evals)}: --objective top1 needs integer labels "
                                   f"({' or '.join(map(repr, LABEL_KEYS))}); without labels "
                                   "use --objective agreement, cosine or sqnr")
        metric = top1(labels)
    elif objective == "agreement":
        metric = agreement()
    else:
        metric = (cosine if objective == "cosine" else sqnr)(args.metric_output)
    if objective == "sqnr" and args.goal is None:
        raise CalibrationError("--objective sqnr needs --goal: the SQNR in dB to reach "
                               "(e.g. --goal 30)")
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET.get(objective)
    npu, report = autofix(model, args.target, data, feed, metric, budget=budget, goal=args.goal,
                          max_steps=args.max_steps, max_candidates=args.max_candidates or None,
                          eval_batch=args.eval_batch, eval_workers=args.workers,
                          eval_engine=args.engine, search=args.search)
    print(report)
    save_model(npu, args.output)
    print(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if report.within_budget else 1
