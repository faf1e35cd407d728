"""``ortnpu quantize``: float model + calibration data → NPU graph."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import onnx

from ortnpu.cli.options import add_batch_axis_arg, add_input_args, input_options
from ortnpu.errors import CalibrationError, ModelError
from ortnpu.validate import load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a float model into an NPU graph",
        description="Calibrate a float ONNX model on real samples and write the NPU graph "
                    "(com.ortnpu nodes for the NPU parts, standard ONNX for the CPU parts). "
                    "Nodes left on the CPU are listed with their reasons.")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--target", default="tflite-int8", help="target preset or TOML file")
    add_calibration_args(p)
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph")
    p.add_argument("--per-tensor", action="store_true",
                   help="per-tensor weights even if the target allows per-channel")
    p.add_argument("--method", default="auto",
                   choices=("auto", "minmax", "percentile", "entropy", "mse", "headroom"),
                   help="activation range method (default auto: per tensor, the range with "
                   "the least expected squared error, the model's outputs their extremes "
                   "with headroom for unseen samples (the headroom method); on "
                   "8-bit targets kept only when the "
                   "model's output on the calibration data is closer to float than with "
                   "every tensor's extremes)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="percentile of --method percentile (default 99.99)")
    p.add_argument("--int16", action="append", default=[], metavar="TENSOR",
                   help="keep this activation in 16 bits (mixed precision); repeatable")
    p.add_argument("--equalize", action=argparse.BooleanOptionalAction, default=None,
                   help="cross-layer weight equalization before quantizing (default: on when "
                        "the target's weights are per tensor; on per-channel 8-bit targets "
                        "tried both ways, the output closer to float kept)")
    p.add_argument("--equalize-streams", action=argparse.BooleanOptionalAction, default=True,
                   help="with equalization on per-channel weights, also scale each residual "
                        "stream's channels towards one scale (same float outputs; default on)")
    p.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                   help="correct each layer's bias for the mean error of its quantized weights "
                        "(default: on when the target's weights are per tensor)")
    p.add_argument("--rounding", choices=("auto", "nearest", "gptq", "adaround"),
                   default="auto",
                   help="how conv/fully-connected weights are rounded: gptq (each weight's "
                        "rounding error offset by the other weights of its output, on the "
                        "layer's quantized calibration inputs), adaround (learned, ~10x the "
                        "time), nearest; auto (default): gptq for per-channel weights, "
                        "nearest for per-tensor ones")
    p.add_argument("--adaround", action="store_true",
                   help="learned rounding of conv/fully-connected weights (AdaRound): each "
                   "weight rounded up or down so the layer's output on the calibration data "
                   "stays closest to float (the same as --rounding adaround)")
    p.add_argument("--adaround-iterations", type=int, default=1000, metavar="N",
                   help="optimisation steps per layer of --adaround (default 1000)")
    p.add_argument("--adaround-inputs", choices=("quantized", "float"), default="quantized",
                   help="what --adaround's loss feeds each layer: its input through the "
                        "input tensor's int8 quantization (default), or the float input")
    p.add_argument("--no-optimize", action="store_true", help="skip `ortnpu optimize` first")
    p.add_argument("--force-cpu", action="append", default=[], metavar="NAME_OR_OP",
                   help="keep a node (by name) or every node of an op type on the CPU")
    p.add_argument("--force-npu", action="append", default=[], metavar="NAME_OR_OP",
                   help="lower a node (by name) or op type that placement keeps on the CPU "
                        "(a target limit, an output head kept in float)")
    add_input_args(p)
    p.set_defaults(func=_run)


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """The options that name calibration data (shared with ``autofix``)."""
    p.add_argument("--calib", required=True, metavar="NPZ_OR_DIR",
                   help="calibration data: an .npz (one array per model input named like the "
                        "input, or a single array for a single-input model; first axis = "
                        "samples) or a folder of images / .npy samples")
    p.add_argument("--preprocess", default="", metavar="SPEC",
                   help="for image folders: 'size=224,224;mean=0.485,0.456,0.406;"
                        "std=0.229,0.224,0.225;scale=255;layout=NCHW;channels=3'")
    p.add_argument("--limit", type=int, default=None, help="use at most this many samples")
    add_batch_axis_arg(p)


def load_calibration(path: str, input_names: list[str], preprocess: str = "",
                     limit: int | None = None, *, model: onnx.ModelProto | None = None,
                     batch_axes: list[str] | None = None) -> object:
    """Read an .npz, or a folder of images, into calibration data for ``quantize``.

    Each array is cut into samples along its input's sample axis (``--batch-axis``, else
    found from ``model``'s batch dimension; see :mod:`ortnpu.feeds`); arrays keep their
    element type (calibration converts each to its input's type).
    """
    if limit is not None and limit < 1:
        raise CalibrationError(f"--limit must be at least 1, got {limit}")
    from ortnpu.feeds import InputSpec, input_specs, iter_samples, parse_batch_axes, sample_axis

    axes = parse_batch_axes(batch_axes)
    specs = [s for s in input_specs(model) if s.name in input_names] if model is not None \
        else [InputSpec(n, 0, None) for n in input_names]
    if Path(path).is_dir():
        from ortnpu.quant.image_reader import ImageFolderReader, Preprocess

        if len(input_names) != 1:
            raise CalibrationError(f"an image folder can feed only a single-input model; "
                                   f"inputs are {input_names}")
        return ImageFolderReader(path, input_names[0],
                                 Preprocess.parse(preprocess) if preprocess else None, limit)
    from ortnpu.cli.files import read_arrays

    archive = read_arrays(path, "calibration data")
    keys = list(archive.keys())
    if set(input_names) <= set(keys):
        arrays = {k: archive[k] for k in input_names}
    elif len(input_names) == 1 and keys:
        arrays = {input_names[0]: archive["calib_x" if "calib_x" in keys else keys[0]]}
    else:
        arrays = None
    if arrays is not None:
        if len(specs) == 1 and sample_axis(specs[0], arrays[specs[0].name], None, axes) == 0:
            return arrays[specs[0].name][:limit]   # calibration batches it along axis 0
        return list(iter_samples(specs, arrays, batch_axes=axes, limit=limit, where=path))
    raise CalibrationError(f"{path}: holds arrays {keys}; the model's inputs are {input_names}")


def input_names(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that are not initializers."""
    init = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def _known_names(model: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """(node names and op types, tensor names) of ``model``, unnamed nodes named like
    :class:`~ortnpu.passes.NameNodes` does (the names quantize reports)."""
    from ortnpu.passes import NameNodes

    named = NameNodes()(model).model
    nodes = {n.name for n in named.graph.node} | {n.op_type for n in named.graph.node}
    tensors = ({i.name for i in named.graph.input} | {t.name for t in named.graph.initializer} |
               {o for n in named.graph.node for o in n.output if o})
    return nodes, tensors


def _check_names(model: onnx.ModelProto, *, int16: list[str], force_cpu: list[str],
                force_npu: Sequence[str] = (), optimize: bool = True, equalize: bool | None = None,
                **inputs: object) -> None:
    """Refuse ``--int16`` / ``--force-cpu`` names that match nothing, so a typo is not silently
    ignored. A name counts when it is in the model as given or as quantize sees it (after
    ``optimize``, which renames and fuses nodes; only computed when a name is missing).

    Raises:
        ModelError: names that match no tensor (``--int16``) or no node name or op type
            (``--force-cpu``), with close matches.
    """
    if not int16 and not force_cpu and not force_npu:
        return
    nodes, tensors = _known_names(model)
    missing = [n for n in int16 if n not in tensors] + \
        [n for n in [*force_cpu, *force_npu] if n not in nodes]
    if missing and optimize:
        from ortnpu.passes import optimize as run_optimize

        opt_nodes, opt_tensors = _known_names(run_optimize(model, equalize=equalize,
                                                           **inputs))  # type: ignore[arg-type]
        nodes, tensors = nodes | opt_nodes, tensors | opt_tensors
    import difflib

    problems = []
    for option, names, known, what in (("--int16", int16, tensors, "a tensor"),
                                       ("--force-cpu", force_cpu, nodes,
                                        "a node name or op type"),
                                       ("--force-npu", force_npu, nodes,
                                        "a node name or op type")):
        for name in names:
            if name in known:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            problems.append(f"{option} {name!r} is not {what} of the model{hint}")
    if problems:
        raise ModelError("; ".join(problems) + "; `ortnpu evaluate` lists the node names")


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model
    from ortnpu.passes import fix_inputs
    from ortnpu.quant import QuantConfig, QuantizationResult, quantize

    if not 0 < args.percentile <= 100:  # also refuses nan
        raise CalibrationError(f"--percentile must be in (0, 100], got {args.percentile}")
    output_path(args.output, args.model, args.calib, args.target)
    model = load_model(args.model)
    inputs = input_options(args)
    _check_names(model, int16=args.int16, force_cpu=args.force_cpu, force_npu=args.force_npu,
                optimize=not args.no_optimize, equalize=args.equalize, **inputs)
    fed = fix_inputs(model, freeze=inputs["freeze"])   # frozen inputs need no data
    data = load_calibration(args.calib, input_names(fed), args.preprocess, args.limit,
                            model=fed, batch_axes=args.batch_axis)
    config = QuantConfig(per_channel=False if args.per_tensor else None, method=args.method,
                         percentile=args.percentile, int16_tensors=frozenset(args.int16),
                         force_cpu=frozenset(args.force_cpu),
                         force_npu=frozenset(args.force_npu), equalize=args.equalize,
                         equalize_streams=args.equalize_streams,
                         bias_correction=args.bias_correction, adaround=args.adaround,
                         rounding=args.rounding,
                         adaround_iterations=args.adaround_iterations,
                         adaround_inputs=args.adaround_inputs)
    res = QuantizationResult()
    npu = quantize(model, args.target, data, config=config, optimize=not args.no_optimize,
                   result=res, **inputs)
    save_model(npu, args.output)
    on_npu = sum(p.device == "NPU" for p in res.placements)
    print(f"wrote {args.output}: {on_npu} nodes on the NPU, "
          f"{len(res.placements) - on_npu} on the CPU")
    if res.range_choice is not None:
        print(res.range_choice.note())
    if res.equalization is not None:
        print(res.equalization.note())
    from ortnpu.placement import cpu_lines

    lines = cpu_lines(res.placements)  # per node: the NPU graph's doc_strings and metadata
    if lines:
        print("\n".join(lines))
    return 0
