"""Builds the NPU graph: integer tensors, boundary Quantize/Dequantize nodes, initializers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu.quant.context import QuantContext
from ortnpu.quant.params import QuantParams

#: Arrays at least this large are stored once when several layers emit identical values.
SHARED_MIN_SIZE = 16

_ONNX_TYPE = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16}


@dataclass
class Emitter:
    """Accumulates the nodes of the NPU graph in topological order.

    Integer versions of float tensors are named ``<float name>_q``. A float tensor that an NPU
    node consumes gets a ``QuantizeLinear``; an integer tensor that a CPU node or a graph output
    needs gets a ``DequantizeLinear`` that writes the original float name, so CPU nodes and the
    graph outputs keep their names.
    """

    ctx: QuantContext
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    value_info: list[onnx.ValueInfoProto] = field(default_factory=list)
    int_tensors: dict[str, str] = field(default_factory=dict)   # float name -> int name
    float_ready: set[str] = field(default_factory=set)           # float tensors that exist
    needs_opset21: bool = False
    _names: set[str] = field(default_factory=set)
    #: (dtype, shape, sha256) of every array constant emitted -> its name: identical weights
    #: (tied weights read by every time step of an unrolled RNN) are stored once
    _constants: dict[tuple, str] = field(default_factory=dict)

    def snapshot(self) -> tuple:
        """State to restore when a lowering fails half way (see :meth:`restore`)."""
        return (len(self.nodes), len(self.initializers), len(self.value_info),
                dict(self.int_tensors), set(self.float_ready), self.needs_opset21,
                set(self._names), dict(self.ctx.params), set(self.ctx.unsigned_outputs),
                dict(self._constants))

    def restore(self, state: tuple) -> None:
        """Undo everything emitted since :meth:`snapshot`."""
        n, i, v, ints, ready, op21, names, params, unsigned, constants = state
        del self.nodes[n:]
        del self.initializers[i:]
        del self.value_info[v:]
        self.int_tensors, self.float_ready, self.needs_opset21 = ints, ready, op21
        self._names = names
        self._constants = constants
        self.ctx.params.clear()
        self.ctx.params.update(params)
        self.ctx.unsigned_outputs.clear()
        self.ctx.unsigned_outputs.update(unsigned)

    def unique(self, base: str) -> str:
        """A tensor or node name not used yet."""
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        """Add an initializer and return its name.

        An array of :data:`SHARED_MIN_SIZE` elements or more identical to one already emitted
        returns that one's name (scalars such as scales keep a name per tensor).
        """
        value = np.ascontiguousarray(value)
        key = None
        if value.size >= SHARED_MIN_SIZE:
            key = (value.dtype.str, value.shape, hashlib.sha256(value.tobytes()).digest())
            if key in self._constants:
                return self._constants[key]
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(value, name))
        if key is not None:
            self._constants[key] = name
        return name

    def _qparams_inputs(self, tensor: str, p: QuantParams) -> tuple[str, str]:
        scale = self.constant(f"{tensor}_scale", np.array(p.scale, np.float32))
        zp = self.constant(f"{tensor}_zero_point", np.array(p.zero_point, np.dtype(p.dtype)))
        if p.dtype == "int16":
            self.needs_opset21 = True
        return scale, zp

    def int_input(self, tensor: str) -> str:
        """The integer version of ``tensor``, quantizing the float one on first use."""
        if tensor in self.int_tensors:
            return self.int_tensors[tensor]
        p = self.ctx.params_of(tensor)
        scale, zp = self._qparams_inputs(tensor, p)
        out = self.unique(f"{tensor}_q")
        self.nodes.append(helper.make_node("QuantizeLinear", [tensor, scale, zp], [out],
                                           name=self.unique(f"{tensor}_quantize")))
        self.int_tensors[tensor] = out
        self._record(out, p, tensor)
        return out

    def int_output(self, tensor: str, params: QuantParams) -> str:
        """Declare the integer output of an NPU node that replaces float ``tensor``."""
        self.ctx.set_params(tensor, params)
        out = self.unique(f"{tensor}_q")
        self.int_tensors[tensor] = out
        self._record(out, params, tensor)
        return out

    def _record(self, name: str, p: QuantParams, float_name: str) -> None:
        """Type and shape of an integer tensor (the float tensor's shape), for tools that read
        the NPU graph without running it (export, evaluate)."""
        shape = self.ctx.view.shapes.get(float_name)
        self.value_info.append(helper.make_tensor_value_info(name, _ONNX_TYPE[p.dtype], shape))

    def float_input(self, tensor: str) -> str:
        """The float version of ``tensor`` for a CPU node, dequantizing on first use."""
        if tensor in self.float_ready or tensor not in self.int_tensors:
            return tensor
        p = self.ctx.params[tensor]
        scale, zp = self._qparams_inputs(tensor, p)
        self.nodes.append(helper.make_node("DequantizeLinear", [self.int_tensors[tensor], scale,
                                                                zp], [tensor],
                                           name=self.unique(f"{tensor}_dequantize")))
        self.float_ready.add(tensor)
        return tensor
