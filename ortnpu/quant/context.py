"""What the lowering rules see of the float graph while the quantizer builds the NPU graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.onnx_types import dim_size
from ortnpu.passes.graph import node_inputs
from ortnpu.quant.calibrate import Calibrator, observed_range
from ortnpu.quant.params import QuantParams, activation_params
from ortnpu.target import Arithmetic, Target


@dataclass
class GraphView:
    """Read-only indexes of a float graph: initializers, producers, consumers, shapes."""

    model: onnx.ModelProto
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    graph_outputs: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, model: onnx.ModelProto) -> GraphView:
        view = cls(model=model)
        g = model.graph
        for init in g.initializer:
            view.constants[init.name] = numpy_helper.to_array(init)
        for node in g.node:
            if node.op_type == "Constant" and node.attribute:
                attr = node.attribute[0]
                if attr.name == "value":
                    view.constants[node.output[0]] = numpy_helper.to_array(attr.t)
            for o in node.output:
                view.producer[o] = node
            # an If/Loop/Scan reads outer tensors inside its bodies too: such a tensor has
            # that node as a consumer (else a Relu reading it looks like its only reader)
            for i in node_inputs(node):
                view.consumers.setdefault(i, []).append(node)
        for vi in [*g.input, *g.output, *g.value_info]:
            dims = vi.type.tensor_type.shape.dim
            view.shapes[vi.name] = [dim_size(d) for d in dims]
        for name, value in view.constants.items():
            view.shapes.setdefault(name, list(value.shape))
        view.graph_outputs = {o.name for o in g.output}
        return view

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor, or None for an activation."""
        return self.constants.get(name)

    def single_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The only consumer of ``tensor`` if it has exactly one and is not a graph output."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and tensor not in self.graph_outputs:
            return users[0]
        return None


@dataclass
class QuantContext:
    """Shared state of one quantization run."""

    view: GraphView
    target: Target
    calibrator: Calibrator
    per_channel: bool
    params: dict[str, QuantParams] = field(default_factory=dict)
    unsigned_outputs: set[str] = field(default_factory=set)
    #: activations kept in 16 bits on an 8-bit target (mixed precision)
    wide_tensors: frozenset[str] = frozenset()
    #: activations whose range is the calibrator's observed extremes, whatever its method
    #: chose: the 16-bit ones without a method override of their own. The 8-bit grid's
    #: clipping trade-off does not apply to them, and ranges collected for another
    #: configuration (autofix calibrates once for every trial) were chosen for 8 bits.
    observed_tensors: frozenset[str] = frozenset()
    #: parameters given by the caller (QDQ import): used instead of calibration
    preset_params: dict[str, QuantParams] = field(default_factory=dict)
    #: exact integer weights given by the caller: initializer -> (int8 weights, scales)
    preset_weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: integer weights of a learned rounding (GPTQ, AdaRound): initializer -> (int8 weights,
    #: scales); the scales are weight_params' own, so the bias-room fit still applies
    learned_weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: exact integer biases given by the caller: initializer -> int64 values
    preset_biases: dict[str, np.ndarray] = field(default_factory=dict)
    #: correct biases for the mean error of quantized weights (needs channel means)
    bias_correction: bool = False
    #: measured mean output error per weight initializer, added to its layer's float bias
    #: (the learned rounding's empirical bias correction)
    bias_deltas: dict[str, np.ndarray] = field(default_factory=dict)

    def channel_mean(self, tensor: str) -> np.ndarray | None:
        """Per-channel mean of a calibrated activation, when bias correction collected it."""
        getter = getattr(self.calibrator, "channel_mean", None)
        return getter(tensor) if self.bias_correction and getter is not None else None

    @property
    def arith(self) -> Arithmetic:
        return self.target.arithmetic

    def params_of(self, tensor: str) -> QuantParams:
        """Quantization parameters of an activation, chosen once from its calibrated range."""
        if tensor not in self.params:
            if tensor in self.preset_params:
                self.params[tensor] = self.preset_params[tensor]
                return self.params[tensor]
            lo, hi = observed_range(self.calibrator, tensor) \
                if tensor in self.observed_tensors else self.calibrator.range_of(tensor)
            self.params[tensor] = activation_params(
                lo, hi, self.arith,
                unsigned=tensor in self.unsigned_outputs and self.arith.unsigned_after_relu,
                bits=16 if tensor in self.wide_tensors else None)
        return self.params[tensor]

    def is_wide(self, *params: QuantParams) -> bool:
        """True when a 16-bit tensor meets an 8-bit target (mixed precision)."""
        return self.arith.activation_bits == 8 and any(p.dtype == "int16" for p in params)

    def set_params(self, tensor: str, params: QuantParams) -> None:
        """Fix a tensor's parameters (pools and layout ops keep their input's)."""
        self.params[tensor] = params
