"""``ortnpu quantize``: float model + calibration data → NPU graph."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from ortnpu.errors import CalibrationError
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
    p.add_argument("--method", default="minmax",
                   choices=("minmax", "percentile", "entropy", "mse"),
                   help="activation range method (default minmax)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="percentile of --method percentile (default 99.99)")
    p.add_argument("--int16", action="append", default=[], metavar="TENSOR",
                   help="keep this activation in 16 bits (mixed precision); repeatable")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer weight equalization before quantizing")
    p.add_argument("--bias-correction", action="store_true",
                   help="correct each layer's bias for the mean error of its quantized weights")
    p.add_argument("--no-optimize", action="store_true", help="skip `ortnpu optimize` first")
    p.add_argument("--force-cpu", action="append", default=[], metavar="NAME_OR_OP",
                   help="keep a node (by name) or every node of an op type on the CPU")
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


def load_calibration(path: str, input_names: list[str], preprocess: str = "",
                     limit: int | None = None) -> object:
    """Read an .npz, or a folder of images, into calibration data for ``quantize``."""
    if Path(path).is_dir():
        from ortnpu.quant.image_reader import ImageFolderReader, Preprocess

        if len(input_names) != 1:
            raise CalibrationError(f"an image folder can feed only a single-input model; "
                                   f"inputs are {input_names}")
        return ImageFolderReader(path, input_names[0],
                                 Preprocess.parse(preprocess) if preprocess else None, limit)
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read calibration data: {exc}") from None
    keys = list(archive.keys())
    if set(input_names) <= set(keys):
        arrays = {k: archive[k].astype(np.float32)[:limit] for k in input_names}
        n = min(len(a) for a in arrays.values())
        return [{k: a[i:i + 1] for k, a in arrays.items()} for i in range(n)]
    if len(input_names) == 1 and keys:
        key = "calib_x" if "calib_x" in keys else keys[0]
        return archive[key].astype(np.float32)[:limit]
    raise CalibrationError(f"{path}: holds arrays {keys}; the model's inputs are {input_names}")


def input_names(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that are not initializers."""
    init = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def _run(args: argparse.Namespace) -> int:
    from ortnpu.quant import QuantConfig, QuantizationResult, quantize

    model = load_model(args.model)
    data = load_calibration(args.calib, input_names(model), args.preprocess, args.limit)
    config = QuantConfig(per_channel=False if args.per_tensor else None, method=args.method,
                         percentile=args.percentile, int16_tensors=frozenset(args.int16),
                         force_cpu=frozenset(args.force_cpu), equalize=args.equalize,
                         bias_correction=args.bias_correction)
    res = QuantizationResult()
    npu = quantize(model, args.target, data, config=config, optimize=not args.no_optimize,
                   result=res)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(npu, args.output)
    on_npu = sum(p.device == "NPU" for p in res.placements)
    print(f"wrote {args.output}: {on_npu} nodes on the NPU, "
          f"{len(res.placements) - on_npu} on the CPU")
    from ortnpu.placement import cpu_lines

    lines = cpu_lines(res.placements)  # per node: the NPU graph's doc_strings and metadata
    if lines:
        print("\n".join(lines))
    return 0
