"""Where a rewritten layer's weights and parameters came from, so that given ones follow them.

A rewrite that rebuilds a layer (:class:`~ortnpu.passes.patchify.PatchifyConv`,
:class:`~ortnpu.passes.conv_transpose.ConvTransposeAsConv`,
:class:`~ortnpu.passes.conv1d.Conv1dAsConv2d`) writes new float weights under a
new name. A QDQ model's own integer weights (``import_qdq``'s preset, keyed by weight name)
must reach the new layer in the new layout, or the quantizer would quantize the float values
with scales of its own. Each rewrite records on the new node which weights it read and how it
laid them out; :func:`carry_weights` applies the same layout to the given integer weights.
A rewrite that ends in a node only moving values (a Reshape back to 1-D, a Transpose back
from the last axis) marks it, and :func:`carry_params` gives the tensor it reads the given
parameters of the tensor it writes (the model's own output parameters of the layer). A Concat
that only copies values of one tensor (a reflect Pad's slices) is marked the other way round:
its output takes that tensor's parameters (:func:`copies_input`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx

from ortnpu.passes.graph import get_meta, set_meta

#: node metadata key: ``{"source": weight name, "layout": "patch" | "transposed" | "conv1d",
#: "group": g, "block": [s, t] (patch only)}``
WEIGHTS_FROM_KEY = "ortnpu.weights_from"


def patch_layout(w: np.ndarray, block: tuple[int, int] | None = None) -> np.ndarray:
    """A convolution's weights ``[O, C, m·s, n·t]`` at stride ``block`` = (s, t) as those of
    the stride-1 convolution over its space-to-depth input: ``[O, s·t·C, m, n]``, channels in
    space-to-depth's order (row in block, column in block, c: TFLite's SPACE_TO_DEPTH).
    Without ``block`` the kernel is one block (a patch embedding: ``[O, k·l·C, 1, 1]``)."""
    o, c, kh, kw = w.shape
    sh, sw = block or (kh, kw)
    mh, mw = kh // sh, kw // sw
    return np.ascontiguousarray(w.reshape(o, c, mh, sh, mw, sw).transpose(0, 3, 5, 1, 2, 4)
                                .reshape(o, sh * sw * c, mh, mw))


def transposed_layout(w: np.ndarray, group: int) -> np.ndarray:
    """A ConvTranspose's weights ``[C, O/g, k, l]`` as the equivalent convolution's
    ``[O, C/g, k, l]``: input and output channels swapped per group, taps flipped."""
    c, og, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(group, c // group, og, kh, kw).transpose(0, 2, 1, 3, 4)
                                .reshape(og * group, c // group, kh, kw)[:, :, ::-1, ::-1])


#: node metadata key on a value-moving node a rewrite added: its input takes its output's
#: given parameters
PARAMS_OF_OUTPUT_KEY = "ortnpu.input_params_of_output"


def mark_moves_output(node: onnx.NodeProto) -> None:
    """Record that ``node`` only moves its input's values into the rewritten layer's output."""
    set_meta(node, PARAMS_OF_OUTPUT_KEY, "1")


#: node metadata key on a Concat a rewrite added that only copies one tensor's values (the
#: slices of a reflect Pad): its output takes that input's parameters unless it has its own
OUTPUT_PARAMS_OF_INPUT_KEY = "ortnpu.output_params_of_input"


def mark_copies_input(node: onnx.NodeProto) -> None:
    """Record that every value ``node`` writes is a value of its first input (a reflect Pad's
    Concat of slices): no requantization is needed, as in TFLite's MIRROR_PAD."""
    set_meta(node, OUTPUT_PARAMS_OF_INPUT_KEY, "1")


def copies_input(node: onnx.NodeProto) -> bool:
    """Whether a rewrite marked ``node`` with :func:`mark_copies_input`."""
    return get_meta(node, OUTPUT_PARAMS_OF_INPUT_KEY) is not None


def carry_params(model: onnx.ModelProto, params: Mapping[str, object]) -> dict[str, object]:
    """``params`` (tensor -> given quantization parameters) with the input of each marked
    value-moving node given its output's parameters, where it has none."""
    out = dict(params)
    for node in reversed(model.graph.node):   # a chain of marked nodes, from its end
        if get_meta(node, PARAMS_OF_OUTPUT_KEY) is None or not node.input or not node.output:
            continue
        if node.input[0] not in out and node.output[0] in out:
            out[node.input[0]] = out[node.output[0]]
    return out


def link(node: onnx.NodeProto, source: str, layout: str, group: int = 1,
         block: tuple[int, int] | None = None) -> None:
    """Record on ``node`` that its weights are ``source`` laid out by ``layout`` (with
    ``group`` groups, or space-to-depth ``block``)."""
    info: dict[str, object] = {"source": source, "layout": layout, "group": group}
    if block is not None:
        info["block"] = list(block)
    set_meta(node, WEIGHTS_FROM_KEY, json.dumps(info))


def carry_weights(model: onnx.ModelProto, weights: Mapping[str, tuple[np.ndarray, np.ndarray]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``weights`` (name -> (integer weights in the float layout, scales per output channel
    or one)) with an entry for each rewritten layer whose source weights it holds."""
    out = dict(weights)
    for node in model.graph.node:
        spec = get_meta(node, WEIGHTS_FROM_KEY)
        if spec is None or len(node.input) < 2 or node.input[1] in out:
            continue
        info = json.loads(spec)
        given = weights.get(info["source"])
        if given is None:
            continue
        q, scales = given
        scales = np.asarray(scales)
        if info["layout"] == "patch":
            block = info.get("block")
            out[node.input[1]] = (patch_layout(q, tuple(block) if block else None), scales)
        elif info["layout"] == "conv1d":   # [O, C/g, k] as [O, C/g, 1, k]
            out[node.input[1]] = (q[:, :, None, :], scales)
        elif info["layout"] == "transposed":
            group = int(info["group"])
            # scales along the ConvTranspose's axis 1 (O/g of them) serve every group
            per_out = np.tile(scales, group) if scales.size > 1 else scales
            out[node.input[1]] = (transposed_layout(q, group), per_out)
    return out
