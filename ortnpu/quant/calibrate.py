"""Calibration: run the float model on real data and collect per-tensor statistics.

Calibration data may be an iterable of ``{input name: array}`` dicts, a numpy array (for a
single-input model; the first axis is the sample axis), or an
``onnxruntime.quantization.CalibrationDataReader``. Statistics are streamed: memory does not grow
with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ortnpu.errors import CalibrationError

CalibrationData = Any  # Iterable[Mapping[str, np.ndarray]] | np.ndarray | CalibrationDataReader


class Calibrator(Protocol):
    """Collects statistics of tensors batch by batch and turns them into ranges."""

    def collect(self, name: str, values: np.ndarray) -> None:
        """Add one batch of values of tensor ``name``."""

    def range_of(self, name: str) -> tuple[float, float]:
        """The (min, max) range to quantize ``name`` with."""


@dataclass
class MinMaxCalibrator:
    """Running minimum and maximum of every tensor."""

    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)

    def collect(self, name: str, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.lo[name] = min(self.lo.get(name, np.inf), float(values.min()))
        self.hi[name] = max(self.hi.get(name, -np.inf), float(values.max()))

    def range_of(self, name: str) -> tuple[float, float]:
        if name not in self.lo:
            raise CalibrationError(f"tensor {name!r} was never seen during calibration")
        return self.lo[name], self.hi[name]


def iter_batches(data: CalibrationData, input_names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Normalise the accepted calibration-data forms into a stream of feed dicts."""
    if isinstance(data, np.ndarray):
        if len(input_names) != 1:
            raise CalibrationError(f"a bare array can feed only a single-input model; this model "
                                   f"has inputs {input_names}: pass dicts instead")
        if data.ndim == 0 or data.shape[0] == 0:
            raise CalibrationError("the calibration array is empty")
        for start in range(0, data.shape[0], 32):
            yield {input_names[0]: data[start:start + 32]}
        return
    if hasattr(data, "get_next") and callable(data.get_next):
        while True:
            item = data.get_next()
            if item is None:
                return
            yield dict(item)
        return
    if isinstance(data, Mapping):
        yield dict(data)
        return
    if isinstance(data, Iterable):
        for item in data:
            if not isinstance(item, Mapping):
                raise CalibrationError(f"calibration items must be dicts of input name -> array, "
                                       f"got {type(item).__name__}")
            yield dict(item)
        return
    raise CalibrationError(f"unsupported calibration data {type(data).__name__}: pass a numpy "
                           "array, an iterable of dicts or a CalibrationDataReader")


def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every tensor of the graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def calibrate(model: onnx.ModelProto, data: CalibrationData,
              calibrator: Calibrator | None = None,
              tensors: Iterable[str] | None = None) -> Calibrator:
    """Run ``model`` on the data and feed every float activation to ``calibrator``.

    Args:
        model: the float model.
        data: calibration data in any accepted form.
        calibrator: defaults to :class:`MinMaxCalibrator`.
        tensors: names to observe (default: every float tensor produced by a node, plus inputs).
    """
    calibrator = calibrator or MinMaxCalibrator()
    types = float_tensor_types(model)
    init_names = {i.name for i in model.graph.initializer}
    if tensors is None:
        wanted = [i.name for i in model.graph.input if i.name not in init_names]
        wanted += [o for n in model.graph.node for o in n.output if o]
    else:
        wanted = list(tensors)
    wanted = [t for t in dict.fromkeys(wanted) if types.get(t) == TensorProto.FLOAT]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CalibrationError(f"{model.graph.name}: onnxruntime cannot run the float model for "
                               f"calibration: {str(exc).splitlines()[0]}") from None
    input_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    seen = 0
    for feed in iter_batches(data, input_names):
        missing = set(input_names) - set(feed)
        if missing:
            raise CalibrationError(f"calibration batch {seen} lacks input(s) {sorted(missing)}; "
                                   f"the model's inputs are {input_names}")
        feed = {k: np.asarray(v, dtype=np.float32) for k, v in feed.items() if k in input_names}
        for k, v in feed.items():
            if not np.all(np.isfinite(v)):
                raise CalibrationError(f"calibration batch {seen}: input {k!r} contains NaN or "
                                       "infinity; clean the data first")
        try:
            values = sess.run(out_names, feed)
        except Exception as exc:
            raise CalibrationError(f"calibration batch {seen}: the float model failed: "
                                   f"{str(exc).splitlines()[0]}") from None
        for name, v in zip(out_names, values, strict=True):
            if name in wanted or name in feed:
                calibrator.collect(name, np.asarray(v))
        for k, v in feed.items():
            calibrator.collect(k, v)
        seen += 1
    if seen == 0:
        raise CalibrationError("the calibration data is empty: give at least one sample")
    return calibrator
