"""``ortnpu run``: run a model (an NPU graph or any ONNX model) on inputs from an .npz file."""

from __future__ import annotations

import argparse

from ortnpu.cli.options import add_batch_axis_arg
from ortnpu.errors import ModelError
from ortnpu.feeds import parse_batch_axes, run_samples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an NPU graph on inputs from an .npz file",
                       description="Run a model with the com.ortnpu ops registered and save "
                                   "its outputs. The first axis of each array is the sample: a "
                                   "model with a fixed batch size runs the samples one batch "
                                   "at a time (like compare and autofix) and the outputs are "
                                   "joined.")
    p.add_argument("model", help="NPU graph or ONNX model")
    p.add_argument("--inputs", required=True, metavar="NPZ",
                   help=".npz with one array per model input, named like the input")
    p.add_argument("-o", "--output", metavar="NPZ", help="save the outputs here")
    p.add_argument("--threads", type=int, default=None, help="intra-op thread count")
    add_batch_axis_arg(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import npz_path, output_path, read_arrays, save_arrays
    from ortnpu.runtime import InferenceSession

    if args.threads is not None and args.threads < 1:
        raise ModelError(f"--threads must be at least 1, got {args.threads}")
    if args.output:
        output_path(npz_path(args.output), args.model, args.inputs)
    archive = read_arrays(args.inputs, "inputs", ModelError)
    sess = InferenceSession(args.model, intra_op_num_threads=args.threads)
    names = [i.name for i in sess.get_inputs()]
    if len(names) == 1 and names[0] not in archive:
        feed = {names[0]: archive[next(iter(archive.keys()))]}
    else:
        feed = {n: archive[n] for n in names if n in archive}
    outs = [o.name for o in sess.get_outputs()]
    result = dict(zip(outs, run_samples(sess, feed, outs, batch_axes=parse_batch_axes(
        args.batch_axis), where=args.inputs), strict=True))
    for name, v in result.items():
        print(f"{name}: shape {list(v.shape)} dtype {v.dtype}")
    if args.output:
        print(f"wrote {save_arrays(args.output, result)}")
    return 0

