"""Render docs/cli.md from the argument parsers: ``python -m ortnpu.cli.docgen > docs/cli.md``."""

from __future__ import annotations

import argparse

from ortnpu.cli import build_parser


def render() -> str:
    """The whole markdown document: the top-level help, then every command's help."""
    parser = build_parser()
    parts = ["# Command-line reference\n\n",
             "Generated from the parsers by `python -m ortnpu.cli.docgen`; do not edit by hand. "
             "`python -m ortnpu` is the same program as `ortnpu`.\n\n",
             "Exit codes: 0 success; 1 the command ran and found failures (e.g. conformance "
             "cases failed); 2 bad input (an `OrtNpuError`, printed as one line on stderr; "
             "`--debug` prints the traceback); 3 internal error (a bug: please report it with "
             "the `--debug` output).\n\n",
             "Files: data arguments (`--inputs`, `--calib`, `--data`, `--eval`) are `.npz` "
             "archives of numeric arrays (a plain `.npy` counts as one array; object arrays, "
             "truncated or empty archives are refused). Before any work, every output path is "
             "checked: an output that is one of the command's own input files is refused (exit "
             "2), and a missing output folder is created. When the reader of standard output "
             "goes away (`| head`), the command still finishes and writes its files. See "
             "docs/robustness.md.\n\n",
             "```\n", parser.format_help().replace("usage: ", "usage: ", 1), "```\n"]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in sorted(subs.choices.items()):
        parts += [f"\n## `ortnpu {name}`\n\n```\n", sub.format_help(), "```\n"]
    return "".join(parts)


if __name__ == "__main__":
    import os

    os.environ.setdefault("COLUMNS", "100")
    print(render(), end="")
