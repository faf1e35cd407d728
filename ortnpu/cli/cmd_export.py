"""``ortnpu export``: NPU graph to standard ONNX (integer, fake-quant or qdq style)."""

from __future__ import annotations

import argparse

_DESCRIPTION = """\
Lower every com.ortnpu node of an NPU graph to standard ONNX ops, so that any ONNX runtime runs it.

styles:
  integer     only default-domain integer ops (ConvInteger/MatMulInteger, int64 rescale,
              Clip, Cast); bit-exact with the simulator
  fake-quant  float32 ops on integer-valued tensors (N2D2's FakeQuantization); exact where
              float32 holds every intermediate, the model's metadata lists where it cannot
  qdq         QuantizeLinear/DequantizeLinear around float ops, for other toolchains; its
              metadata states where its rounding differs from the target's

example:
  ortnpu export npu.onnx --style integer -o npu_int.onnx"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser("export", help="export an NPU graph to standard ONNX",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Exit codes: 0 written, 2 bad input, 3 internal error.")
    p.add_argument("model", metavar="NPU_MODEL", help="the NPU graph (.onnx)")
    p.add_argument("--style", "-s", default="integer", choices=("integer", "fake-quant", "qdq"),
                   help="export style (default integer)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .onnx file")
    p.add_argument("--implicit-casting", action="store_true",
                   help="drop the Cast round trips between lowered ops that onnxruntime does "
                        "not need (graph outputs keep their types)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model
    from ortnpu.exporters import export
    from ortnpu.validate import load_model

    output_path(args.output, args.model)
    model = load_model(args.model)
    out = export(model, style=args.style, implicit_casting=args.implicit_casting)
    save_model(out, args.output)
    props = {p.key: p.value for p in out.metadata_props}
    print(f"wrote {args.output} ({args.style}, {len(out.graph.node)} nodes, exact: "
          f"{props.get('ortnpu.export.exact', '?')})")
    if props.get("ortnpu.export.exact") == "false":
        print(f"note: {props.get('ortnpu.export.notes', '')}")
    return 0
