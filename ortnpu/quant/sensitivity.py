"""Which activations cost the model's output the most: the NPU graph's 8-bit grids simulated in
the float model, one activation left in float at a time.

:func:`ortnpu.compare` ranks layers by the error each adds inside the graph, on float inputs.
That is not what reaches the output: MobileNetV2's first three activations (112x112, before
any residual sum) cost it most at the logits, yet compare ranks blocks 10-17 first, and
PP-OCRv4's detector has one convolution that autofix only reached after 190 others. Here every
8-bit activation of the NPU graph gets a QuantizeLinear/DequantizeLinear pair with the graph's
own scale and zero point in the float model (what the NPU's rounding and clipping do to it),
and a ``Where`` per activation chooses between the simulated and the float value, so one
onnxruntime session answers "what does the output gain if this activation alone were exact?"
for every activation in turn. Weights and integer arithmetic stay float: the gain measures
what moving that activation to 16 bits can give, which is what autofix's int16 steps do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ortnpu import console
from ortnpu.comparison import _npu_tensors
from ortnpu.feeds import run_samples
from ortnpu.passes.graph import all_tensor_names, unique_name
from ortnpu.quant.range_choice import worst_sqnr

#: samples the gains are measured on (the first ones of the evaluation feed): each activation
#: costs one run of the float model over them
SAMPLES = 32
#: at most this many sample runs in all: a model with many activations gets fewer samples
#: (a 557-layer ViT-S 7, not 32), never fewer than 4
SAMPLE_RUNS = 4096

_STORAGE = {"int8": np.int8, "uint8": np.uint8}


def output_gains(model: onnx.ModelProto, npu: onnx.ModelProto, feed: Mapping[str, np.ndarray],
                 activations: Mapping[str, str], *, samples: int = SAMPLES,
                 progress: bool = False) -> dict[str, float]:
    """Per key of ``activations`` (a layer), how much the worst output's SQNR against float
    rises (dB) when its activation stays float and every other 8-bit activation of ``npu``
    keeps its grid.

    Args:
        model: the float model ``npu`` was quantized from (its tensor names).
        npu: the NPU graph: its ``ortnpu.tensors`` metadata gives every grid.
        feed: evaluation inputs (the first ``samples`` are used).
        activations: layer -> the activation it writes. Layers whose activation has no 8-bit
            grid in ``npu`` (already 16-bit, or not a tensor of ``model``) gain 0.
        samples: how many samples to run (fewer when ``activations`` are many: at most
            :data:`SAMPLE_RUNS` sample runs in all, at least 4 samples).
        progress: a progress bar over the activations on a terminal.

    Raises:
        Whatever onnxruntime raises when the simulated model cannot be built or run; the
        caller decides what a ranking without it is.
    """
    grids = _npu_tensors(npu, "the NPU graph")
    written = {o for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    simulated = [t for t, p in grids.items()
                 if p.dtype in _STORAGE and t in written and t not in outputs]
    sim, flags = _simulated(model, {t: grids[t] for t in simulated})
    options = console.quiet_session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(sim.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    samples = min(samples, max(4, SAMPLE_RUNS // max(1, len(activations) + 2)))
    small = {k: np.asarray(v)[:samples] for k, v in feed.items()}
    names = [o.name for o in model.graph.output]
    scalars = {flag: None for flag in flags.values()}   # no sample axis: every batch gets it

    def run(exact: set[str]) -> list[np.ndarray]:
        return run_samples(sess, {**small, **{f: np.array(t in exact) for t, f in flags.items()}},
                           names, batch_axes=scalars, progress=False)

    # every activation exact: Where takes the float value, so this is the float model
    reference = [run(set(flags))]

    def score(exact: set[str]) -> float:
        return worst_sqnr(reference, [run(exact)])

    base = score(set())
    gains: dict[str, float] = {}
    for layer, tensor in console.progress(list(activations.items()), desc="output sensitivity",
                                          unit="activation", enabled=progress):
        gains[layer] = score({tensor}) - base if tensor in flags else 0.0
    return gains


def _simulated(model: onnx.ModelProto, grids: Mapping[str, object]
               ) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with each activation of ``grids`` replaced, for its readers, by
    ``Where(keep, x, DequantizeLinear(QuantizeLinear(x)))``; returns the model and each
    activation's boolean ``keep`` input. The new nodes follow their activation's writer, so
    the graph stays in order."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = all_tensor_names(graph)
    flags: dict[str, str] = {}
    renamed: dict[str, str] = {}
    after: dict[str, list[onnx.NodeProto]] = {}
    for tensor, grid in grids.items():
        scale, zero, q, dq, flag, out_name = (
            unique_name(taken, f"{tensor}__{part}")
            for part in ("scale", "zero", "q", "dq", "exact", "sim"))
        graph.initializer.extend([
            numpy_helper.from_array(np.array(grid.scale, np.float32), scale),
            numpy_helper.from_array(np.array(grid.zero_point, _STORAGE[grid.dtype]), zero)])
        graph.input.append(helper.make_tensor_value_info(flag, TensorProto.BOOL, []))
        after[tensor] = [helper.make_node("QuantizeLinear", [tensor, scale, zero], [q]),
                         helper.make_node("DequantizeLinear", [q, scale, zero], [dq]),
                         helper.make_node("Where", [flag, tensor, dq], [out_name])]
        flags[tensor] = flag
        renamed[tensor] = out_name
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
        nodes.append(node)
        for o in node.output:
            nodes.extend(after.get(o, []))
    del graph.node[:]
    graph.node.extend(nodes)
    return out, flags


def rank_by_output(gains: Mapping[str, float], order: Sequence[str],
                   least: float) -> list[str]:
    """``order`` with the layers whose gain reaches ``least`` dB moved to the front, largest
    gain first; the rest keep their order."""
    first = sorted((n for n in order if gains.get(n, 0.0) >= least),
                   key=lambda n: -gains[n])
    chosen = set(first)
    return first + [n for n in order if n not in chosen]


__all__ = ["SAMPLES", "SAMPLE_RUNS", "output_gains", "rank_by_output"]
