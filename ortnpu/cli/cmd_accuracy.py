"""``ortnpu accuracy``: accuracy of an NPU graph against its float model over a whole dataset."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from ortnpu.cli.options import add_batch_axis_arg
from ortnpu.errors import CalibrationError
from ortnpu.feeds import parse_batch_axes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="top-1/top-k accuracy, agreement and per-class drop over a dataset",
        description="Run the float model and its NPU graph over a labelled dataset (an image "
                    "folder with one sub-folder per class, or .npz shards) and report top-1 "
                    "and top-k accuracy of both, float-vs-NPU top-1 agreement, the drop per "
                    "class and SQNR/cosine of the outputs. --workers N scores batches in N "
                    "processes (--engine ray: on a Ray cluster) with results identical to "
                    "one process. See docs/accuracy.md.",
        epilog="Exit code 0 when the evaluation ran (whatever the accuracy), 2 on bad input.")
    p.add_argument("float_model", help="the float ONNX model the NPU graph was quantized from")
    p.add_argument("npu_model", help="the NPU graph (from `ortnpu quantize`)")
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="an image folder (one sub-folder per class, classes numbered in "
                        "sorted name order; needs ortnpu[images]) or .npz shards with one "
                        "array per input (single-input model: --key, else test_x, else the "
                        "first) and labels (--label-key, else labels, label, y or test_y)")
    add_dataset_args(p)
    add_batch_axis_arg(p)
    p.add_argument("--batch", type=int, default=64, metavar="N",
                   help="samples per batch, the unit of work (default 64)")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="k of top-k (default 5)")
    p.add_argument("--output", metavar="NAME", help="the output of class scores (default: "
                                                    "the first)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="score batches in N processes, this one and N-1 forked from a fork "
                        "server (or N Ray actors); default 1")
    p.add_argument("--engine", choices=("processes", "ray"), default=None,
                   help="processes (this machine, the default for --workers > 1) or ray (Ray "
                        "Data; a cluster when RAY_ADDRESS is set; needs ortnpu[ray])")
    p.add_argument("--metric", metavar="MODULE:FUNCTION",
                   help="a user metric f(float_outputs, npu_outputs, labels) -> {name: one "
                        "value per sample}; its mean per sample is reported")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON here")
    p.add_argument("--html", metavar="FILE",
                   help="write the result as one self-contained HTML page here (summary, "
                        "per-class drop chart and table, outputs)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads of each worker's float and NPU sessions (default: "
                        "onnxruntime's choice for one worker, 1 per Ray actor, else CPUs / "
                        "workers)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="append each finished batch here and resume from it (default with "
                        "--json: FILE.partial, removed when the run completes)")
    p.set_defaults(func=_run)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """How the files of a dataset become samples (shared with ``autofix --eval-data``)."""
    p.add_argument("--key", metavar="NAME", help="the input array of the .npz shards")
    p.add_argument("--label-key", metavar="NAME", help="the label array of the .npz shards")
    img = p.add_argument_group("image folder")
    img.add_argument("--size", type=int, metavar="PX",
                     help="crop size when the model input's height/width are not fixed")
    img.add_argument("--crop", type=float, default=1.0, metavar="F",
                     help="fraction kept by the centre crop after resizing (0.875: resize 256, "
                          "crop 224; default 1)")
    img.add_argument("--mean", metavar="M[,M,M]", default="0",
                     help="per-channel mean subtracted from pixels scaled to [0,1] (default 0)")
    img.add_argument("--std", metavar="S[,S,S]", default="1",
                     help="per-channel standard deviation divided by (default 1)")


def dataset_from_args(paths: list[str], args: argparse.Namespace) -> Any:
    """The :class:`ortnpu.datasets.Dataset` of ``paths`` and :func:`add_dataset_args`'s
    options."""
    from ortnpu.datasets import as_dataset

    return as_dataset(paths, key=args.key, label_key=args.label_key,
                      batch_axes=parse_batch_axes(args.batch_axis) or None,
                      size=args.size, crop=args.crop, mean=_floats(args.mean, "mean"),
                      std=_floats(args.std, "std"))


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CalibrationError(f"--{what} {text!r}: expected numbers separated by commas, "
                               "e.g. 0.485,0.456,0.406") from None


def load_metric(spec: str) -> Any:
    """``module:function`` -> the function (``--metric``)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise CalibrationError(f"--metric {spec!r}: expected MODULE:FUNCTION")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CalibrationError(f"--metric {spec!r}: cannot import it: {exc}") from None
    if not callable(fn):
        raise CalibrationError(f"--metric {spec!r} is not a function")
    return fn


def _run(args: argparse.Namespace) -> int:
    from ortnpu.accuracy import evaluate_accuracy
    from ortnpu.cli.files import output_path, write_text

    checkpoint = args.checkpoint or (args.json + ".partial" if args.json else None)
    for out in (args.json, args.html, checkpoint):
        if out:
            output_path(out, args.float_model, args.npu_model, *args.data)
    dataset = dataset_from_args(args.data, args)
    metric = load_metric(args.metric) if args.metric else None
    result = evaluate_accuracy(args.float_model, args.npu_model, dataset, metric=metric,
                               output=args.output, topk=args.topk, batch=args.batch,
                               workers=args.workers, engine=args.engine, checkpoint=checkpoint,
                               threads=args.threads)
    print(result.to_text())
    if args.json:
        write_text(args.json, result.to_json())
        print(f"wrote {args.json}")
    if args.html:
        write_text(args.html, result.to_html(getattr(dataset, "classes", None) or None))
        print(f"wrote {args.html}")
    if not args.checkpoint and checkpoint and os.path.exists(checkpoint):
        os.remove(checkpoint)
    return 0
