"""Command-line options several commands share: input shapes, frozen inputs, sample axes.

One definition each, so ``--input-shape`` reads the same in optimize, opt-and-eval, evaluate,
quantize and autofix (reasons tell users to pass it wherever shapes matter).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ortnpu.errors import ModelError


def parse_input_shapes(values: Sequence[str] | None) -> dict[str, list[int]] | None:
    """``["x=1,3,224,224"]`` -> ``{"x": [1, 3, 224, 224]}``.

    Raises:
        ModelError: malformed value.
    """
    if not values:
        return None
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise ModelError(f"--input-shape {value!r}: expected NAME=D1,D2,..., e.g. "
                             "x=1,3,224,224") from None
    return shapes


def add_input_shape_arg(p: argparse.ArgumentParser) -> None:
    """``--input-shape NAME=D1,D2,...`` (repeatable)."""
    p.add_argument("--input-shape", action="append", metavar="NAME=D1,D2,...",
                   help="fix a dynamic input's shape, e.g. x=1,3,224,224 (repeatable)")


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--input-shape`` and ``--freeze``: what the model's inputs become before anything
    else runs."""
    add_input_shape_arg(p)
    add_freeze_arg(p)


def add_freeze_arg(p: argparse.ArgumentParser) -> None:
    """``--freeze NAME=VALUE`` (repeatable)."""
    p.add_argument("--freeze", action="append", metavar="NAME=VALUE",
                   help="replace an input by a constant, e.g. sr=16000 or mask=1,0,1 "
                        "(repeatable); an If on it keeps only the branch taken")


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """``input_shapes`` and ``freeze`` keyword arguments from the parsed options."""
    from ortnpu.passes.freeze_inputs import parse_freeze

    return {"input_shapes": parse_input_shapes(getattr(args, "input_shape", None)),
            "freeze": parse_freeze(getattr(args, "freeze", None)) or None}


def add_batch_axis_arg(p: argparse.ArgumentParser) -> None:
    """``--batch-axis NAME=AXIS`` (repeatable): the sample axis of an input's array."""
    p.add_argument("--batch-axis", action="append", default=[], metavar="NAME=AXIS",
                   help="the sample axis of an input's array when it is not found from the "
                        "model (default: the axis of the model's batch dimension, else 0), "
                        "e.g. h0=1 for an LSTM state [2, batch, 64]; NAME=none: one value "
                        "for every sample (repeatable)")
