"""Rewrite the rank-5 split of a fused q/k/v projection into rank-4 slices."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.passes.base import Pass
from ortnpu.passes.graph import GraphIndex, all_tensor_names, shape_of, unique_name


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _taken_index(node: onnx.NodeProto, index: GraphIndex, n: int
                 ) -> tuple[onnx.NodeProto, int, onnx.NodeProto] | None:
    """``(node, i, last)`` when ``node`` takes entry ``i`` of axis 0 (of size ``n``) and drops
    the axis: a Gather of a scalar constant, or a Slice ``[i, i + 1)`` of axis 0 read only by a
    Squeeze of axis 0 (Paddle's export); ``last`` writes the result. Else None."""
    if node.op_type == "Gather":
        k = index.constant(node.input[1]) if len(node.input) > 1 else None
        if int(_attr(node, "axis", 0)) != 0 or k is None or np.asarray(k).ndim != 0:
            return None
        return node, int(np.asarray(k)) % n, node
    if node.op_type != "Slice" or len(node.input) < 3:
        return None
    consts = [index.constant(x) if x else None for x in node.input[1:]]
    starts, ends = consts[0], consts[1]
    axes = consts[2] if len(consts) > 2 else np.array([0])
    steps = consts[3] if len(consts) > 3 else np.array([1])
    if any(c is None for c in (starts, ends, axes, steps)) or \
            [int(v) for v in np.asarray(axes).reshape(-1)] != [0] or \
            [int(v) for v in np.asarray(steps).reshape(-1)] != [1]:
        return None
    i = int(np.asarray(starts).reshape(-1)[0])
    i = i + n if i < 0 else i
    end = int(np.asarray(ends).reshape(-1)[0])
    end = end + n if end < 0 else end
    users = index.consumers.get(node.output[0], [])
    if not 0 <= i < n or min(end, n) != i + 1 or len(users) != 1 or \
            users[0].op_type != "Squeeze" or node.output[0] in index.graph_outputs:
        return None
    sq = users[0]
    axes_sq = index.constant(sq.input[1]) if len(sq.input) > 1 and sq.input[1] else \
        _attr(sq, "axes", None)
    if axes_sq is None or [int(v) for v in np.asarray(axes_sq).reshape(-1)] != [0]:
        return None
    return node, i, sq


class SliceHeads(Pass):
    """``Reshape([..., C] → [..., n, s1.., sk]) → Transpose(perm[0] = that n axis) →
    Gather(i, axis 0)`` (or ``Slice([i, i + 1) of axis 0) → Squeeze(0)``) for each i becomes
    ``Slice(i-th C/n of the last axis) → Reshape([..., s1.., sk]) → Transpose(the rest of
    perm)``.

    Why: vision transformers (timm's ViT, PP-OCR's SVTR) split one q/k/v projection this way
    through a rank-5 tensor; NPUs and TFLite's converters (SPLIT or STRIDED_SLICE, then
    RESHAPE and TRANSPOSE) run it at rank 4. Each output is the same copy of the same values.
    Applied by ``ortnpu.evaluate`` and ``ortnpu.quantize`` alike.
    """

    def apply(self, model: onnx.ModelProto) -> list[str]:
        graph = model.graph
        index = GraphIndex(graph)
        shapes = {vi.name: shape_of(vi) for vi in [*graph.input, *graph.value_info,
                                                   *graph.output]}
        outputs = {o.name for o in graph.output}
        taken = all_tensor_names(graph) | {o for n in graph.node for o in n.output}
        names = {n.name for n in graph.node}
        replace: dict[str, list[onnx.NodeProto]] = {}   # first output -> new nodes
        drop: set[str] = set()                          # first outputs of removed nodes
        changes: list[str] = []
        for tr in graph.node:
            if tr.op_type != "Transpose" or tr.output[0] in outputs:
                continue
            rs = index.producer.get(tr.input[0])
            if rs is None or rs.op_type != "Reshape" or rs.output[0] in outputs or \
                    len(index.consumers.get(rs.output[0], [])) != 1:
                continue
            src, dst = shapes.get(rs.input[0]), shapes.get(rs.output[0])
            if not src or not dst:
                continue
            lead = len(src) - 1
            if len(dst) < lead + 2:
                continue
            # a dynamic batch (the same symbol in and out) is copied through: the new
            # Reshape's 0 keeps it, so a model keeps its free batch (evaluate reads it as 1)
            copied = [isinstance(d, str) and bool(d) and d == e
                      for d, e in zip(src[:lead], dst[:lead], strict=True)]
            if not all(c or (isinstance(d, int) and d > 0)
                       for d, c in zip(src[:lead], copied, strict=True)) or \
                    not all(isinstance(d, int) and d > 0 for d in [src[-1], *dst[lead:]]):
                continue
            perm = [int(p) for p in _attr(tr, "perm", [])]   # type: ignore[union-attr]
            if dst[:lead] != src[:lead] or \
                    math.prod(dst[lead:]) != src[-1] or len(perm) != len(dst) or \
                    perm[0] != lead:
                continue
            n, rest = dst[lead], dst[lead + 1:]
            takes = [_taken_index(g, index, n) for g in index.consumers.get(tr.output[0], [])]
            if not takes or any(t is None for t in takes):
                continue
            gathers = [t[0] for t in takes]   # type: ignore[index]
            picked = {t[0].output[0]: t for t in takes}   # type: ignore[index]
            width = math.prod(rest)
            new_perm = [p - (p > lead) for p in perm[1:]]
            heads_shape = [0 if c else d for d, c in zip(dst[:lead], copied, strict=True)] + \
                list(rest)
            for g in gathers:
                _, i, last = picked[g.output[0]]   # type: ignore[misc]
                base = g.name or g.output[0]
                consts = {}
                for what, v in (("starts", i * width), ("ends", (i + 1) * width),
                                ("axes", -1), ("shape", heads_shape)):
                    cname = unique_name(taken, f"{base}/{what}")
                    graph.initializer.append(numpy_helper.from_array(
                        np.array(v if isinstance(v, list) else [v], np.int64), cname))
                    consts[what] = cname
                sliced = unique_name(taken, f"{base}/slice")
                shaped = unique_name(taken, f"{base}/heads")
                nodes = [helper.make_node("Slice", [rs.input[0], consts["starts"],
                                                    consts["ends"], consts["axes"]], [sliced],
                                          name=unique_name(names, f"{base}/slice")),
                         helper.make_node("Reshape", [sliced, consts["shape"]], [shaped],
                                          name=unique_name(names, f"{base}/reshape"))]
                if new_perm != sorted(new_perm):
                    nodes.append(helper.make_node("Transpose", [shaped], [last.output[0]],
                                                  name=unique_name(names, f"{base}/transpose"),
                                                  perm=new_perm))
                else:
                    nodes[-1].output[0] = last.output[0]
                replace[g.output[0]] = nodes
                if last is not g:
                    drop.add(last.output[0])
            drop |= {rs.output[0], tr.output[0]}
            changes.append(f"Reshape {rs.name!r} → Transpose {tr.name!r} → Gather ×"
                           f"{len(gathers)} became rank-{len(dst) - 1} Slice, Reshape, Transpose")
        if not changes:
            return []
        new: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.output and node.output[0] in drop:
                continue
            new.extend(replace.get(node.output[0], [node]) if node.output else [node])
        del graph.node[:]
        graph.node.extend(new)
        return changes
