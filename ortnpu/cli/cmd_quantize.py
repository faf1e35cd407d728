"""``ortnpu quantize``: float model + calibration data → NPU graph."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ortnpu.errors import CalibrationError, ModelError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a float model into an NPU graph",
        description="Calibrate a float ONNX model on real samples and write the NPU graph "
                    "(com.ortnpu nodes for the NPU parts, standard ONNX for the CPU parts).")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--target", default="tflite-int8", help="target preset or TOML file")
    p.add_argument("--calib", required=True, metavar="NPZ",
                   help=".npz file: one array per model input (named like the input), or a "
                        "single array for a single-input model; the first axis is the sample")
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph")
    p.add_argument("--per-tensor", action="store_true",
                   help="per-tensor weights even if the target allows per-channel")
    p.add_argument("--no-optimize", action="store_true", help="skip `ortnpu optimize` first")
    p.add_argument("--force-cpu", action="append", default=[], metavar="NAME_OR_OP",
                   help="keep a node (by name) or every node of an op type on the CPU")
    p.set_defaults(func=_run)


def load_calibration(path: str, input_names: list[str]) -> object:
    """Read an .npz into an array (single input) or a list of feed dicts."""
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read calibration data: {exc}") from None
    keys = list(archive.keys())
    if set(input_names) <= set(keys):
        arrays = {k: archive[k].astype(np.float32) for k in input_names}
        n = min(len(a) for a in arrays.values())
        return [{k: a[i:i + 1] for k, a in arrays.items()} for i in range(n)]
    if len(input_names) == 1 and len(keys) >= 1:
        key = "calib_x" if "calib_x" in keys else keys[0]
        return archive[key].astype(np.float32)
    raise CalibrationError(f"{path}: holds arrays {keys}; the model's inputs are {input_names}")


def _run(args: argparse.Namespace) -> int:
    import onnx

    from ortnpu.quant import QuantizationResult, quantize

    try:
        model = onnx.load(args.model)
    except Exception as exc:
        raise ModelError(f"{args.model}: cannot load the model: {exc}") from None
    init = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    data = load_calibration(args.calib, names)
    res = QuantizationResult()
    npu = quantize(model, args.target, data, per_channel=False if args.per_tensor else None,
                   optimize=not args.no_optimize, force_cpu=args.force_cpu, result=res)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(npu, args.output)
    on_npu = sum(p.device == "NPU" for p in res.placements)
    print(f"wrote {args.output}: {on_npu} nodes on the NPU, "
          f"{len(res.placements) - on_npu} on the CPU")
    for p in res.placements:
        if p.device == "CPU":
            print(f"  CPU {p.node} ({p.op_type}): {p.reason}")
    return 0
