"""``ortnpu compare``: which layer of an NPU graph loses the accuracy, on real data."""

from __future__ import annotations

import argparse

import numpy as np

from ortnpu.cli.options import add_batch_axis_arg, add_freeze_arg
from ortnpu.errors import CalibrationError, ModelError
from ortnpu.feeds import parse_batch_axes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="per-layer float vs integer error of an NPU graph, worst layer first",
        description="Run the float model and its NPU graph on the same samples and measure, per "
                    "layer, SQNR, cosine similarity, max and mean abs error. Layers are ranked "
                    "by the error each adds on its own (its integer node fed the exact float "
                    "inputs, quantized), so the layer at fault comes first, not the layers "
                    "after it. Also reports the model outputs (top-1 agreement for class "
                    "scores). See docs/compare.md.",
        epilog="Exit code 0 when the comparison ran (whatever the errors found), 2 on bad input.")
    p.add_argument("float_model", help="the float ONNX model the NPU graph was quantized from")
    p.add_argument("npu_model", help="the NPU graph (from `ortnpu quantize`)")
    p.add_argument("--data", required=True, metavar="NPZ",
                   help=".npz with one array per model input, named like the input; for a "
                        "single-input model any one array (see --key; default: test_x if "
                        "present, else the first array). Each array's sample axis: see "
                        "--batch-axis.")
    p.add_argument("--key", metavar="NAME", default=None,
                   help="the array of the .npz to use for a single-input model")
    add_batch_axis_arg(p)
    add_freeze_arg(p)
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="compare at most N samples")
    p.add_argument("--top", type=int, default=None, metavar="N",
                   help="print only the N worst layers (the files get all)")
    p.add_argument("--json", metavar="FILE", help="write the comparison as JSON here")
    p.add_argument("--html", metavar="FILE",
                   help="write a self-contained HTML page (table and SQNR chart) here")
    p.set_defaults(func=_run)


def load_data(path: str, input_names: list[str], key: str | None = None) -> dict[str, np.ndarray]:
    """Read an .npz into ``{input name: array}`` (the first axis of each array is the sample)."""
    from ortnpu.cli.files import read_arrays

    return select_inputs(read_arrays(path, "the data"), input_names, key, path)


def select_inputs(arrays: dict[str, np.ndarray], input_names: list[str], key: str | None,
                  path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz that feed the model: named like the inputs, or for a single-input
    model ``key``, else ``test_x``, else the first array (shared with ``autofix --eval``)."""
    if not arrays:
        raise CalibrationError(f"{path}: holds no arrays; save one array per model input")
    if key is not None:
        if key not in arrays:
            raise CalibrationError(f"{path}: has no array {key!r}; it holds {sorted(arrays)}")
        if len(input_names) != 1:
            raise CalibrationError(f"--key needs a single-input model; the inputs are "
                                   f"{input_names}: name the arrays like the inputs")
        return {input_names[0]: arrays[key]}
    if set(input_names) <= set(arrays):
        return {n: arrays[n] for n in input_names}
    if len(input_names) == 1:
        chosen = "test_x" if "test_x" in arrays else next(iter(arrays))
        return {input_names[0]: arrays[chosen]}
    raise CalibrationError(f"{path}: holds arrays {sorted(arrays)}; the model's inputs are "
                           f"{input_names}: save one array per input, named like it")


def _run(args: argparse.Namespace) -> int:
    import onnx

    from ortnpu.cli.files import output_path, write_text
    from ortnpu.comparison import compare

    if args.top is not None and args.top < 1:
        raise CalibrationError(f"--top must be at least 1, got {args.top}")
    for out in (args.json, args.html):
        if out:
            output_path(out, args.float_model, args.npu_model, args.data)
    try:  # only the input names here: compare loads both models itself, naming them by path
        head = onnx.load(args.float_model, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{args.float_model}: cannot load the float model: {exc}") from None
    from ortnpu.passes.freeze_inputs import parse_freeze

    freeze = parse_freeze(args.freeze) or None
    init = {i.name for i in head.graph.initializer}
    names = [i.name for i in head.graph.input if i.name not in init and i.name not in
             (freeze or {})]
    del head
    data = load_data(args.data, names, args.key)
    report = compare(args.float_model, args.npu_model, data, max_samples=args.max_samples,
                     batch_axes=parse_batch_axes(args.batch_axis), freeze=freeze)
    print(report.to_text(top=args.top))
    for path, text in ((args.json, report.to_json() if args.json else ""),
                       (args.html, report.to_html() if args.html else "")):
        if path:
            write_text(path, text)
            print(f"wrote {path}")
    return 0
