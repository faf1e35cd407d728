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
parameters of the tensor it writes (the model's own output parameters of the layer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx

from ortnpu.passes.graph import get_meta, set_meta

#: node metadata key: ``{"source": weight name, "layout": "patch" | "transposed" | "conv1d",
#: "group": g}``
WEIGHTS_FROM_KEY = "ortnpu.weights_from"


def patch_layout(w: np.ndarray) -> np.ndarray:
    """A patch convolution's weights ``[O, C, k, l]`` as its 1x1 convolution's
    ``[O, C·k·l, 1, 1]`` (the order of space-to-depth's channels)."""
    return w.reshape(w.shape[0], -1, 1, 1)


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


def link(node: onnx.NodeProto, source: str, layout: str, group: int = 1) -> None:
    """Record on ``node`` that its weights are ``source`` laid out by ``layout``."""
    set_meta(node, WEIGHTS_FROM_KEY, json.dumps({"source": source, "layout": layout,
                                                 "group": group}))


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
            out[node.input[1]] = (patch_layout(q), scales)
        elif info["layout"] == "conv1d":   # [O, C/g, k] as [O, C/g, 1, k]
            out[node.input[1]] = (q[:, :, None, :], scales)
        elif info["layout"] == "transposed":
            group = int(info["group"])
            # scales along the ConvTranspose's axis 1 (O/g of them) serve every group
            per_out = np.tile(scales, group) if scales.size > 1 else scales
            out[node.input[1]] = (transposed_layout(q, group), per_out)
    return out
