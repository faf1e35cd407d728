"""``ortnpu import-tosa``: a TOSA 1.0 flatbuffer → NPU graph."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-tosa", help="build the NPU graph of a TOSA 1.0 flatbuffer (.tosa)",
        description="Read a TOSA 1.0 int8/int16 flatbuffer (needs tosa-tools' bindings: pip "
                    "install --no-deps tosa-tools flatbuffers) and write the NPU graph that "
                    "runs it bit for bit; an op ortnpu cannot run is named in the error.")
    p.add_argument("model", help="TOSA flatbuffer (.tosa)")
    p.add_argument("--target", default=None,
                   help="target written into the graph (default: tosa-int16 when an input or "
                        "output is int16, else tosa-int8)")
    p.add_argument("-o", "--output", required=True, help="where to write the NPU graph (.onnx)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu.cli.files import output_path, save_model
    from ortnpu.frontends.tosa_import import import_tosa

    output_path(args.output, args.model, args.target)
    npu = import_tosa(args.model, args.target)
    save_model(npu, args.output)
    target = {p.key: p.value for p in npu.metadata_props}["ortnpu.target"]
    ops = sorted({n.op_type for n in npu.graph.node})
    print(f"wrote {args.output}: {len(npu.graph.node)} nodes for {target} ({', '.join(ops)})")
    return 0
