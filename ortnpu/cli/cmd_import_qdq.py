"""``ortnpu import-qdq``: an already-quantized (QDQ or QOperator) model → NPU graph."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-qdq", help="build the NPU graph of an already-quantized model",
        description="Read the scales, zero points, integer weights and biases of a QDQ or "
                    "QOperator model (onnxruntime, PyTorch, Intel Neural Compressor) and write "
                    "the NPU graph that uses them. Every change the target needs is printed.")
    p.add_argument("model", help="quantized ONNX model (QDQ or QOperator)")
    p.add_argument("--target", default="tflite-int8", help="target preset or TOML file")
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model
    from ortnpu.quant import QuantizationResult
    from ortnpu.quant.qdq_import import import_qdq
    from ortnpu.validate import load_model

    output_path(args.output, args.model, args.target)
    model = load_model(args.model)
    report: list = []
    res = QuantizationResult()
    npu = import_qdq(model, args.target, report=report, result=res)
    save_model(npu, args.output)
    on_npu = sum(p.device == "NPU" for p in res.placements)
    changed = sum(not c.exact for c in report)
    print(f"wrote {args.output}: {on_npu} nodes on the NPU, {len(res.placements) - on_npu} on "
          f"the CPU; {len(report)} conversion(s), {changed} changing values")
    for c in sorted(report, key=lambda c: not c.exact):
        print(f"  {c}")
    from ortnpu.placement import cpu_lines

    lines = cpu_lines(res.placements)  # per node: the NPU graph's doc_strings and metadata
    if lines:
        print("\n".join(lines))
    return 0
