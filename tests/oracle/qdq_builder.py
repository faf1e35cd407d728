"""The ONNX QDQ twin of a single-op ``.tflite`` model, and the bit-exact comparison.

A case is one op with chosen scales, zero points, weights and inputs, written twice: as a
``.tflite`` model (:mod:`tflite_builder`) run by LiteRT's reference kernels, and as the ONNX QDQ
model that states the same quantization (``QuantizeLinear → DequantizeLinear`` around a float
op, weights and biases as ``DequantizeLinear`` of integer initializers) run by
``ortnpu.import_qdq`` → ``ortnpu.InferenceSession``. The ortnpu output is a dequantized float;
it is turned back into the integer it came from (checked exact) and compared bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21   # int16 QuantizeLinear/DequantizeLinear

_ONNX_TYPES = {"int8": TensorProto.INT8, "int16": TensorProto.INT16,
               "uint8": TensorProto.UINT8, "int32": TensorProto.INT32}


@dataclass
class Quant:
    """Affine parameters of an activation: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int = 0
    dtype: str = "int8"

    def __post_init__(self) -> None:
        self.scale = float(np.float32(self.scale))   # both formats store float32 scales

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """What ONNX's DequantizeLinear computes (float32)."""
        return ((np.asarray(q, np.int64) - self.zero_point).astype(np.float32)
                * np.float32(self.scale))

    def integers(self, f: np.ndarray) -> np.ndarray:
        """The integers a dequantized float came from; raises if ``f`` is not one of them."""
        q = np.rint(np.asarray(f, np.float64) / self.scale).astype(np.int64) + self.zero_point
        back = self.dequantize(q)
        if not np.array_equal(back, np.asarray(f, np.float32)):
            raise AssertionError("ortnpu output is not a dequantized integer of the output "
                                 "parameters")
        return q


@dataclass
class QDQGraph:
    """An ONNX graph whose every activation goes through QuantizeLinear → DequantizeLinear."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _qdq(self, x: str, q: Quant, out: str) -> None:
        s = self._init(f"{x}_scale", np.array(q.scale, np.float32))
        z = self._init(f"{x}_zp", np.array(q.zero_point, q.dtype))
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{x}_q"]))
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{x}_q", s, z], [out]))

    def input(self, name: str, shape: tuple[int, ...], q: Quant) -> str:
        """A float graph input quantized with ``q``; returns the dequantized tensor."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self._qdq(name, q, f"{name}_dq")
        return f"{name}_dq"

    def const(self, name: str, q: np.ndarray, scale: np.ndarray | float, dtype: str,
              axis: int | None = None) -> str:
        """A DequantizeLinear of integer values (weights, biases); per channel along ``axis``."""
        scale = np.asarray(scale, np.float32)
        self._init(f"{name}_int", np.asarray(q, dtype))
        s = self._init(f"{name}_scale", scale)
        z = self._init(f"{name}_zp", np.zeros(scale.shape, dtype))
        kw = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int", s, z], [name],
                                           **kw))
        return name

    def value(self, name: str, value: np.ndarray) -> str:
        """A plain initializer (shapes, pads, clip bounds)."""
        return self._init(name, value)

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs))
        return output

    def output(self, x: str, q: Quant) -> None:
        """Quantize ``x`` with ``q`` and make the dequantized value the graph output ``y``."""
        self._qdq(x, q, "y")
        self.outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "oracle", self.inputs, self.outputs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@dataclass
class Case:
    """One op, both ways. ``to_tflite`` maps an ortnpu output to TFLite's layout."""

    name: str
    op: str
    target: str
    tflite: bytes
    onnx: onnx.ModelProto
    tflite_inputs: list[np.ndarray]
    onnx_inputs: dict[str, np.ndarray]
    out: Quant
    to_tflite: Callable[[np.ndarray], np.ndarray] | None = None
    #: the drawn integers and parameters, for tests that recompute a kernel by hand
    details: dict[str, object] | None = None


def run_ortnpu(case: Case) -> np.ndarray:
    """The ortnpu integers of ``case``: import_qdq → InferenceSession → back to integers."""
    import ortnpu

    npu = ortnpu.import_qdq(case.onnx, case.target)
    sess = ortnpu.InferenceSession(npu)
    (y,) = sess.run(None, case.onnx_inputs)
    q = case.out.integers(y)
    return q if case.to_tflite is None else case.to_tflite(q)


def run_litert(case: Case) -> np.ndarray:
    """The LiteRT reference-kernel integers of ``case``."""
    from tflite_builder import run_reference

    (y,) = run_reference(case.tflite, case.tflite_inputs)
    return y.astype(np.int64)


def mismatch(case: Case) -> str | None:
    """``None`` when ortnpu equals LiteRT bit for bit, else a description of the difference."""
    want = run_litert(case)
    got = run_ortnpu(case)
    if want.shape != got.shape:
        return f"{case.name}: shape {got.shape} != LiteRT {want.shape}"
    diff = np.flatnonzero(want != got)
    if diff.size == 0:
        return None
    k = diff[0]
    return (f"{case.name}: {diff.size}/{want.size} differ (max |d| "
            f"{int(np.abs(want - got).max())}); first at flat {k}: ortnpu "
            f"{int(got.reshape(-1)[k])}, LiteRT {int(want.reshape(-1)[k])}")
