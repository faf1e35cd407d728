"""Run a reflect, edge or wrap Pad as slices of its input joined by Concat."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.graph import attr, opset_version
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base
from ortnpu.passes.weight_links import mark_copies_input

#: The modes rewritten, as ONNX names them (TFLite's MIRROR_PAD REFLECT is ``reflect``).
MODES = ("reflect", "edge", "wrap")


def _parts(mode: str, n: int, before: int, after: int
           ) -> list[tuple[int, int, int]] | None:
    """The pieces along one axis of length ``n`` that make its padded version, in order, as
    ``(start, end, step)`` slices (``None`` when the mode cannot pad that much)."""
    if mode == "reflect":   # x[p], ..., x[1], x, x[n-2], ..., x[n-1-q] (edges not repeated)
        if max(before, after) > n - 1:
            return None
        head = [(before, 0, -1)] if before else []
        # with a negative step an end below 0 must say "before the first" (-n-1 + n = -1)
        tail = [(n - 2, n - 2 - after if n - 2 - after >= 0 else -n - 1, -1)] if after else []
        return [*head, (0, n, 1), *tail]
    if mode == "edge":       # x[0] `before` times, x, x[n-1] `after` times
        return [(0, 1, 1)] * before + [(0, n, 1)] + [(n - 1, n, 1)] * after
    if mode == "wrap":       # x[n-p:], x, x[:q]
        if max(before, after) > n:
            return None
        head = [(n - before, n, 1)] if before else []
        tail = [(0, after, 1)] if after else []
        return [*head, (0, n, 1), *tail]
    return None


class PadModesAsSlices(ReplaceNodesPass):
    """``Pad(mode = reflect | edge | wrap)`` with constant, non-negative pads becomes, for each
    padded axis, a ``Concat`` of ``Slice``s of its input (a reversed slice for each reflected
    edge, the edge row repeated, the far end wrapped around).

    Why: an audio model's STFT (Silero VAD) and image-to-image networks pad by reflection, and
    ortnpu's NPU pads with the zero point only, so such a Pad stayed in float on the CPU
    between NPU layers. TFLite runs it as MIRROR_PAD, which only copies values; slices and a
    concatenation copy the same values to the same places, so the integer result is the
    same, and both are NPU ops. Axes are padded one after the other, as ONNX (and numpy) do,
    so corners come out the same. Opset 11 and later (pads as an input); a pad wider than
    the axis allows (reflect: n - 1, wrap: n) or a computed pad leaves the node alone.

    Args:
        max_concat: the most pieces one Concat may join (an edge pad of p repeats the edge
            p times); wider pads are left alone.
    """

    def __init__(self, max_concat: int = 64) -> None:
        self.max_concat = max_concat

    def applies_to(self, model: onnx.ModelProto) -> bool:
        return opset_version(model) >= 11

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            return None
        mode = attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        shape = work.shapes.get(node.input[0])
        pads = work.index.constant(node.input[1])
        if mode not in MODES or shape is None or pads is None or \
                (len(node.input) > 3 and node.input[3]):
            return None
        rank = len(shape)
        pads = [int(v) for v in np.asarray(pads).reshape(-1)]
        if rank == 0 or len(pads) != 2 * rank or min(pads) < 0:
            return None
        plans = []
        for axis in range(rank):
            before, after = pads[axis], pads[axis + rank]
            if not before and not after:
                continue
            n = shape[axis]
            parts = _parts(mode, n, before, after) if isinstance(n, int) and n > 0 else None
            if parts is None or len(parts) > self.max_concat:
                return None
            plans.append((axis, parts))
        if not plans:
            return None
        base = node_base(node)
        x = node.input[0]
        for k, (axis, parts) in enumerate(plans):
            last = k == len(plans) - 1
            pieces: dict[tuple[int, int, int], str] = {}
            inputs = []
            for start, end, step in parts:
                if (start, end, step) == (0, shape[axis], 1):
                    inputs.append(x)
                    continue
                if (start, end, step) not in pieces:
                    piece = work.tensor(f"{base}_axis{axis}_{len(pieces)}")
                    work.add("Slice", [x, work.int64(f"{piece}_starts", [start]),
                                       work.int64(f"{piece}_ends", [end]),
                                       work.int64(f"{piece}_axes", [axis]),
                                       work.int64(f"{piece}_steps", [step])], [piece],
                             f"{base}/axis{axis}_{len(pieces)}")
                    pieces[(start, end, step)] = piece
                inputs.append(pieces[(start, end, step)])
            out = list(node.output) if last else [work.tensor(f"{base}_axis{axis}")]
            joined = work.add("Concat", inputs, out, node.name if last else f"{base}/axis{axis}",
                              fresh_name=not last, axis=axis)
            mark_copies_input(joined)   # on the input's parameters, as TFLite's MIRROR_PAD
            x = out[0]
        for const in node.input[1:3]:
            if const and work.index.constant(const) is not None:
                work.retire(const)
        axes = ", ".join(str(a) for a, _ in plans)
        return (f"Pad {node.name!r} ({mode}, axes {axes}) became slices of its input joined "
                "by Concat")
