"""What the quantizer does by default for targets whose weights are per tensor.

A single weight scale per layer is where per-tensor targets (``n2d2-int8``) lose their accuracy
on depthwise networks: a depthwise layer's channels differ in range by orders of magnitude, so
the small channels round to a handful of levels (MobileNetV2 on n2d2-int8: output cosine 0.757,
every per-layer SQNR fine alone, the error compounding through the graph). The two classic
remedies (Nagel et al., "Data-Free Quantization", 2019) are on by default there:

* cross-layer equalization (:class:`~ortnpu.passes.EqualizeWeights`), which keeps the float
  outputs: MobileNetV2's ReLU6 pairs are equalized too, with each channel's largest value on the
  calibration data keeping the ``Clip(0, 6)`` bound where the data put it;
* bias correction (the mean output error of each layer's quantized weights, measured on the
  calibration data, added to its bias).

Per-channel targets keep bias correction off by default (their weights already fit each
channel) and choose equalization by the model's output (:mod:`ortnpu.quant.equalize_choice`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ortnpu import console
from ortnpu.errors import CalibrationError, first_line
from ortnpu.feeds import cast_input, input_specs
from ortnpu.quant.calibrate import CalibrationData, iter_batches


def per_tensor_default(setting: bool | None, per_channel: bool) -> bool:
    """An ``auto`` (None) setting of equalization or bias correction: on for per-tensor weights."""
    return (not per_channel) if setting is None else bool(setting)


def replayable(data: CalibrationData, model: onnx.ModelProto) -> CalibrationData:
    """Calibration data of ``model`` that can be read twice (a reader or generator is read
    into a list)."""
    if data is None or isinstance(data, (np.ndarray, Mapping, list, tuple)):
        return data
    return list(iter_batches(data, [s.name for s in input_specs(model)]))


def _clipped_convs(model: onnx.ModelProto) -> list[str]:
    """Outputs of Conv nodes read only by a Clip (the pairs that need data to equalize)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    return [n.output[0] for n in model.graph.node
            if n.op_type == "Conv" and n.output[0] not in graph_outputs
            and [r.op_type for r in readers.get(n.output[0], [])] == ["Clip"]]


def equalizable(model: onnx.ModelProto, streams: bool = False) -> bool:
    """Whether cross-layer equalization finds a pair in ``model`` (no data needed: every
    ``Clip(0, c)`` pair counts, as if the data left its channels unclipped), or, with
    ``streams``, a residual stream to scale."""
    from ortnpu.passes import EqualizeWeights
    from ortnpu.passes.graph import GraphIndex
    from ortnpu.passes.stream_equalization import find_streams

    if streams and find_streams(model.graph):
        return True
    index = GraphIndex(model.graph)
    producers = {n.output[0]: n for n in model.graph.node if n.output}
    maxima = {}
    for name in _clipped_convs(model):
        w = index.constant(producers[name].input[1])
        if w is not None and w.ndim:
            maxima[name] = np.zeros(w.shape[0])
    return bool(EqualizeWeights(channel_max=maxima).pairs(model.graph))


def _tensor_batches(model: onnx.ModelProto, data: CalibrationData, tensors: list[str],
                    ignore: frozenset[str]) -> Iterator[dict[str, np.ndarray]]:
    """``tensors`` of the float model, batch by batch over the data (float64, rank >= 2)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), console.quiet_session_options(),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise CalibrationError(f"{model.graph.name}: onnxruntime cannot run the float model for "
                               f"equalization: {first_line(exc)}") from None
    names = [i.name for i in sess.get_inputs()]
    specs = {s.name: s for s in input_specs(model)}
    first = sess.get_inputs()[0].shape
    batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else 32
    for k, feed in enumerate(iter_batches(data, names, batch)):
        feed = {n: cast_input(specs[n], v, f"calibration batch {k}")
                for n, v in feed.items() if n not in ignore and n in specs}
        try:
            values = sess.run(tensors, feed)
        except Exception as exc:  # the calibration step reports bad data with its own words
            raise CalibrationError(f"calibration batch {k}: the float model failed: "
                                   f"{first_line(exc)}") from None
        yield {name: np.asarray(v, np.float64) for name, v in zip(tensors, values, strict=True)
               if np.ndim(v) >= 2 and np.size(v)}


def _other_axes(v: np.ndarray) -> tuple[int, ...]:
    return tuple(d for d in range(v.ndim) if d != 1)


def channel_maxima(model: onnx.ModelProto, data: CalibrationData, tensors: list[str],
                   ignore: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """The largest value of each channel (axis 1) of ``tensors`` over the data."""
    top: dict[str, np.ndarray] = {}
    for values in _tensor_batches(model, data, tensors, ignore) if tensors else ():
        for name, v in values.items():
            m = v.max(axis=_other_axes(v))
            top[name] = m if name not in top or top[name].shape != m.shape \
                else np.maximum(top[name], m)
    return top


def channel_rms(model: onnx.ModelProto, data: CalibrationData, tensors: list[str],
                ignore: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """The root mean square of each channel (axis 1) of ``tensors`` over the data."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in _tensor_batches(model, data, tensors, ignore) if tensors else ():
        for name, v in values.items():
            squares = (v * v).sum(axis=_other_axes(v))
            if name in sums and sums[name].shape != squares.shape:
                continue
            sums[name] = sums.get(name, 0.0) + squares
            counts[name] = counts.get(name, 0) + v.size // v.shape[1]
    return {name: np.sqrt(sums[name] / counts[name]) for name in sums}


def equalize(model: onnx.ModelProto, data: CalibrationData,
             ignore: frozenset[str] = frozenset(), streams: bool = False) -> onnx.ModelProto:
    """Cross-layer equalization of ``model`` (Relu pairs, and Clip pairs with the data's
    per-channel maxima) and, with ``streams`` and data, of its residual streams
    (:class:`~ortnpu.passes.EqualizeStreams`: per-channel weights only, which do not pay for
    the factors the streams' readers take); the float outputs stay those of ``model``."""
    from ortnpu.passes import EqualizeStreams, EqualizeWeights, InferShapes
    from ortnpu.passes.stream_equalization import find_streams

    maxima = channel_maxima(model, data, _clipped_convs(model), ignore) \
        if data is not None else {}
    out = EqualizeWeights(channel_max=maxima)(model).model
    found = find_streams(out.graph) if streams and data is not None else []
    if found:
        tensors = [t for stream in found for t in stream.tensors]
        out = EqualizeStreams(channel_rms(out, data, tensors, ignore))(out).model
    return InferShapes()(out).model
