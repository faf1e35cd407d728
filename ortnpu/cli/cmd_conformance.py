"""``ortnpu conformance``: generate the conformance vectors and run them bit for bit."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ortnpu.conformance import Report

_DESCRIPTION = """\
Generate and run the conformance kit of the com.ortnpu ops.

Each case is one op with edge-case inputs (saturation, rounding ties, extreme zero points,
multipliers 2^31-1 and 2^30, every shift, per-channel and per-tensor parameters, odd shapes,
grouped/depthwise/strided/dilated/padded convolutions, 32- and 64-bit accumulators), stored in
onnx's backend-test layout: DIR/test_<op>_<case>/model.onnx with test_data_set_0/input_<k>.pb and
the expected output_0.pb computed by the numpy reference kernels.

Suites: one per target preset (the target's own arithmetic) and one per rounding rule
(rule-tflite_double, rule-tflite_single, rule-tflite_int64, rule-half_up).

  ortnpu conformance                      generate every suite in a temp dir and run it
  ortnpu conformance --target tflite-int8 one suite only (a preset, a rule-* suite or a .toml)
  ortnpu conformance --export vectors     write the vectors (no run), e.g. for another runtime
  ortnpu conformance vectors              run the cases found under DIR
  ortnpu conformance vectors --runner onnxruntime   run them with plain onnxruntime
  ortnpu conformance --runner mypkg.hw:run          any callable run(model_path, inputs)

Outputs are compared bit for bit (values, dtype and shape). The last line printed is
'N passed, M failed'."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``conformance`` sub-command."""
    p = sub.add_parser(
        "conformance", help="generate and run the bit-exact conformance kit of the NPU ops",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 every case passed, 1 a case failed, 2 bad input (unknown target, "
               "op or runner, no case found), 3 internal error.")
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help="folder of cases to run (recursively); default: generate into a "
                        "temporary folder and run those")
    p.add_argument("--target", "-t", action="append", metavar="T",
                   help="suite to generate: a preset name, rule-<rounding> or a target .toml "
                        "file; repeatable; default every suite")
    p.add_argument("--export", metavar="OUT",
                   help="write the vectors into OUT and stop (one sub-folder per suite when "
                        "several are generated)")
    p.add_argument("--op", action="append", metavar="OP",
                   help="only this op (e.g. Conv, AveragePool); repeatable")
    p.add_argument("--runner", default="ortnpu", metavar="R",
                   help="'ortnpu' (simulator, default), 'onnxruntime' (plain, for standard "
                        "graphs) or 'package.module:function' taking (model_path, inputs)")
    p.add_argument("--verbose", "-v", action="store_true", help="list passing cases too")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ortnpu import conformance
    from ortnpu.errors import UnsupportedError

    if args.list:
        print("\n".join(conformance.suite_names()))
        return 0
    if args.dir and (args.export or args.target):
        raise UnsupportedError("give either DIR (run existing cases) or --target/--export "
                               "(generate), not both")
    runner = conformance.resolve_runner(args.runner)
    if args.export:
        from ortnpu.errors import ModelError

        out = Path(args.export)
        if out.exists() and not out.is_dir():
            raise ModelError(f"{out}: --export needs a folder, and this is a file")
        try:
            written = conformance.generate(out, args.target, args.op)
        except OSError as exc:
            raise ModelError(f"{out}: cannot write the vectors: {exc.strerror or exc}") from None
        print(f"wrote {len(written)} cases to {args.export}")
        return 0
    if args.dir:
        return _report(conformance.run_cases(args.dir, runner, args.op), args.verbose)
    with tempfile.TemporaryDirectory(prefix="ortnpu-conformance-") as tmp:
        written = conformance.generate(tmp, args.target, args.op)
        print(f"generated {len(written)} cases", file=sys.stderr)
        return _report(conformance.run_cases(Path(tmp), runner, args.op), args.verbose)


def _report(report: Report, verbose: bool) -> int:
    print("\n".join(report.lines(verbose)))
    return 0 if report.ok else 1
