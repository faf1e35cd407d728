"""``ortnpu run``: run a model (an NPU graph or any ONNX model) on inputs from an .npz file."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ortnpu.cli.options import add_batch_axis_arg
from ortnpu.errors import ModelError
from ortnpu.feeds import parse_batch_axes


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
    import onnx

    head = onnx.load(args.model, load_external_data=False)   # input types and shapes
    inits = {t.name for t in head.graph.initializer}
    inputs = [vi for vi in head.graph.input if vi.name not in inits]
    result = _run_samples(sess, inputs, feed, parse_batch_axes(args.batch_axis), args.inputs)
    for name, v in result.items():
        print(f"{name}: shape {list(v.shape)} dtype {v.dtype}")
    if args.output:
        print(f"wrote {save_arrays(args.output, result)}")
    return 0


def _run_samples(sess: Any, inputs: list[Any], feed: dict[str, np.ndarray],
                 axes: dict[str, int | None], where: str) -> dict[str, np.ndarray]:
    """Run the arrays at once when the model takes them; else (a model with a fixed batch
    and a file of more samples, or samples on another axis) batch by batch along each input's
    sample axis, joining each output along its own sample axis."""
    from ortnpu.batching import check_whole_batches
    from ortnpu.feeds import (
        batch_symbol,
        output_axis,
        sample_axis,
        sample_batches,
        spec_of,
    )

    specs = [s for s in (spec_of(vi) for vi in inputs) if s.name in feed]
    symbol = batch_symbol(specs)
    fixed = None
    for s in specs:
        if s.name in feed and s.shape:
            axis = sample_axis(s, np.asarray(feed[s.name]), symbol, axes)
            if isinstance(axis, int) and isinstance(s.shape[axis], int):
                n = np.asarray(feed[s.name]).shape[axis]
                if n != s.shape[axis]:
                    fixed = s.shape[axis]
                    check_whole_batches(n, fixed)
                break
    outs = [o.name for o in sess.get_outputs()]
    if fixed is None and not axes:
        return dict(zip(outs, sess.run(None, feed), strict=True))
    parts: list[list[np.ndarray]] = [[] for _ in outs]
    for _, f in sample_batches(specs, feed, batch_axes=axes, batch=fixed or 1 << 30,
                               where=where):
        for k, v in enumerate(sess.run(None, f)):
            parts[k].append(v)
    oshapes = {o.name: o.shape for o in sess.get_outputs()}
    result = {}
    for name, vs in zip(outs, parts, strict=True):
        axis = output_axis(oshapes.get(name), symbol)
        result[name] = vs[0] if axis is None or len(vs) == 1 else np.concatenate(vs, axis)
    return result
