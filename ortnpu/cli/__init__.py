"""The ``ortnpu`` command line.

Each sub-command lives in its own module ``ortnpu/cli/cmd_<name>.py`` that defines
``register(subparsers)``; this module discovers them, so adding a command never edits a shared
table. Exit codes: 0 success, 1 the command ran and found failures (e.g. conformance cases
failed), 2 bad input (an :class:`~ortnpu.errors.OrtNpuError`, printed as one line), 3 an internal
error (a bug: please report it with the output of ``--debug``).

When the reader of standard output goes away (``ortnpu optimize ... | head -1``) the command
still finishes its work (files are written); what it prints after that is dropped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ortnpu.errors import OrtNpuError

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every ``cmd_*`` module's sub-command."""
    from ortnpu import __version__

    parser = argparse.ArgumentParser(
        prog="ortnpu",
        description="Run neural networks as an integer NPU would, inside ONNX Runtime.",
        epilog="Exit codes: 0 ok, 1 failures found, 2 bad input, 3 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"ortnpu {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an error and onnxruntime's own "
                             "warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


class _ClosedPipeSafe:
    """Standard output whose reader may close it: after a broken pipe, writes are dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self.broken = True
        try:  # the interpreter's final flush of the real stdout must not fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from ortnpu import console

    console.set_verbose(args.debug)  # onnxruntime's own log lines only with --debug
    stdout = sys.stdout
    sys.stdout = _ClosedPipeSafe(stdout)
    try:
        return _call(args)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _call(args: argparse.Namespace) -> int:
    """Run the sub-command; map exceptions to exit codes."""
    try:
        code = args.func(args)
        return EXIT_OK if code is None else int(code)
    except OrtNpuError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ortnpu {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ortnpu {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ortnpu {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug and report it)", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
