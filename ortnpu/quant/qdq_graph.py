"""Read the quantization out of a QDQ or QOperator model and rebuild the float graph.

An already-quantized model says everything ortnpu needs: the scale and zero point of every
quantized activation, the integer weights and their scales, the integer biases. This module
recognises those values where the producers put them (ONNX Runtime's ``quantize_static``,
PyTorch's QAT/PT2E exports, Intel Neural Compressor's recipes, QOperator graphs) and returns
the float graph the model stands for together with the values, untouched. Deciding what the
target can represent is :mod:`ortnpu.quant.qdq_convert`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.errors import ModelError, UnsupportedError
from ortnpu.onnx_types import np_dtype, type_name
from ortnpu.passes.graph import attr, node_inputs
from ortnpu.quant.params import QuantParams

#: Standard ops that may run on integer tensors in a QOperator graph: they only move values,
#: so their float counterpart keeps the input's scale and zero point.
_MOVING_OPS = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                         "Identity", "Slice", "Split", "DepthToSpace", "SpaceToDepth"})
#: Operators of the com.microsoft domain lowered back to their float op (input triples first).
_MS_QLINEAR_BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
_MS_QLINEAR_UNARY = {"QLinearGlobalAveragePool": "GlobalAveragePool",
                     "QLinearSigmoid": "Sigmoid", "QLinearAveragePool": "AveragePool"}
_ACT_DTYPES = {"int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16"}


@dataclass
class QuantizedConst:
    """A constant stored as integers with the parameters of its ``DequantizeLinear``.

    Attributes:
        q: the stored integers (int64 copy, the initializer's layout).
        scale: float64 scales, one per channel along ``axis`` or a single one.
        zero_point: int64 zero points, same shape as ``scale``.
        axis: the per-channel axis (non-negative) or ``None`` when per tensor.
        dtype: numpy name of the stored type (``int8``, ``uint8``, ``int32``).
        source: the initializer it was read from (for messages).
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    dtype: str
    source: str

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Reshape per-channel values so they broadcast against :attr:`q`."""
        if self.axis is None:
            return values.reshape(())
        shape = [1] * self.q.ndim
        shape[self.axis] = -1
        return values.reshape(shape)

    def real(self) -> np.ndarray:
        """The real values ``scale * (q - zero_point)`` in float64 (exact for int8)."""
        return (self.q - self.broadcast(self.zero_point)) * self.broadcast(self.scale)


@dataclass
class ImportedGraph:
    """The float graph a quantized model stands for and the model's own quantization.

    Attributes:
        model: the float model (Q/DQ stripped, QOperator nodes back to float ops, quantized
            constants dequantized into float initializers of the same name as in the graph).
        params: float activation tensor -> parameters exactly as stored in the model.
        constants: float initializer -> its integers and parameters (weights, biases, others).
        producers: the recognised producer style(s): ``QDQ``, ``QOperator``, ``integer-ops``.
        notes: sentences about structures recognised on the way (e.g. MatMulInteger chains).
    """

    model: onnx.ModelProto
    params: dict[str, QuantParams] = field(default_factory=dict)
    constants: dict[str, QuantizedConst] = field(default_factory=dict)
    producers: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


class _Reader:
    """Walks the quantized graph in order and writes the float one."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.src = model
        g = model.graph
        self.values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                              for i in g.initializer}
        self.graph_inputs = {i.name for i in g.input if i.name not in self.values}
        self.graph_outputs = [o.name for o in g.output]
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.out = ImportedGraph(model=model)
        self.float_of: dict[str, str] = {}   # source tensor -> float tensor of the new graph
        self.int_tensors: set[str] = set()   # source tensors holding integers
        self.acc_scale: dict[str, np.ndarray] = {}  # int32 accumulators -> real unit
        self.acc_float: dict[str, str] = {}  # int32 accumulator -> float tensor it stands for
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: dict[str, np.ndarray] = {}
        self.skip: set[int] = set()

    # --- small helpers -------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        return self.values.get(name) if name else None

    def need_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        tensor = node.input[index] if len(node.input) > index else ""
        value = self.const(tensor)
        if value is None:
            raise UnsupportedError(
                f"{node.op_type} '{node.name}': the {what} ({tensor or 'missing'}) "
                "is computed at run time; ortnpu imports only fixed quantization parameters "
                "(re-export the model with static quantization)")
        return value

    def fl(self, tensor: str) -> str:
        return self.float_of.get(tensor, tensor)

    def params_from(self, node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray | None,
                    tensor: str) -> QuantParams:
        """Per-tensor activation parameters; anything else is rejected with the node."""
        if scale.size != 1 or (zp is not None and zp.size != 1):
            raise UnsupportedError(
                f"{node.op_type} '{node.name}': activation {tensor!r} has per-channel "
                "parameters; NPU activations have one scale and zero point per tensor "
                "(re-quantize the model with per-tensor activations)")
        if zp is None:
            to = attr(node, "output_dtype", 0)
            dtype = (np_dtype(to).name if np_dtype(to) is not None else type_name(to)) \
                if to else "uint8"
            zero = 0
        else:
            dtype, zero = zp.dtype.name, int(zp.reshape(-1)[0])
        if dtype not in _ACT_DTYPES:
            raise UnsupportedError(
                f"{node.op_type} '{node.name}': activation {tensor!r} is {dtype}; ortnpu imports "
                "int8, uint8, int16 and uint16 activations")
        s = float(np.float32(scale.reshape(-1)[0]))
        if not (s > 0 and math.isfinite(s)):
            raise ModelError(f"{node.op_type} '{node.name}': scale of {tensor!r} is {s}, not "
                             "a positive finite number; re-quantize the model")
        return QuantParams(scale=s, zero_point=zero, dtype=dtype)

    def set_params(self, node: onnx.NodeProto, tensor: str, p: QuantParams) -> None:
        old = self.out.params.get(tensor)
        if old is not None and old != p:
            raise UnsupportedError(
                f"{node.op_type} '{node.name}': tensor {tensor!r} is quantized twice with "
                f"different parameters ({old.scale:g}/{old.zero_point} and {p.scale:g}/"
                f"{p.zero_point}); ortnpu needs one scale per tensor: quantize the model with "
                "shared parameters for this tensor")
        self.out.params[tensor] = p

    def quantized_const(self, node: onnx.NodeProto, q: np.ndarray, scale: np.ndarray,
                        zp: np.ndarray | None, axis: int | None, source: str) -> QuantizedConst:
        if attr(node, "block_size", 0):
            raise UnsupportedError(f"{node.op_type} '{node.name}': blocked quantization "
                                   "(block_size) is not supported; use per-channel weights")
        scale = np.asarray(scale, np.float32).astype(np.float64).reshape(-1)
        usable = np.isfinite(scale) & (scale >= 0)
        if not usable.all():
            bad = scale[~usable][0]
            raise ModelError(f"{node.op_type} '{node.name}': a scale of {source!r} is {bad}, "
                             "not a finite number >= 0; re-quantize the model")
        zp_arr = (np.zeros(scale.shape, np.int64) if zp is None
                  else np.asarray(zp).astype(np.int64).reshape(-1))
        if scale.size == 1 and q.ndim > 0 and zp_arr.size == 1:
            axis = None
        elif axis is not None:
            axis = axis % q.ndim
            if scale.size != q.shape[axis]:
                raise ModelError(f"{node.op_type} '{node.name}': {scale.size} scales for axis "
                                 f"{axis} of {source!r} with shape {list(q.shape)}")
            zp_arr = np.broadcast_to(zp_arr, scale.shape).copy()
        dtype = q.dtype.name
        if dtype not in ("int8", "uint8", "int16", "int32"):
            raise UnsupportedError(f"{node.op_type} '{node.name}': constant {source!r} is "
                                   f"{dtype}; ortnpu imports int8/uint8 weights and int32 biases")
        return QuantizedConst(q=q.astype(np.int64), scale=scale, zero_point=zp_arr, axis=axis,
                              dtype=dtype, source=source)

    def add_const(self, name: str, qc: QuantizedConst) -> str:
        self.out.constants[name] = qc
        self.new_inits[name] = qc.real().astype(np.float32)
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str], like: onnx.NodeProto,
             **attrs: object) -> onnx.NodeProto:
        node = helper.make_node(op, inputs, outputs, name=like.name or outputs[0], **attrs)
        self.nodes.append(node)
        return node

    # --- the walk ------------------------------------------------------------------------
    def run(self) -> ImportedGraph:
        for k, node in enumerate(self.src.graph.node):
            if k in self.skip:
                continue
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self._constant(node)
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is not None and node.domain in ("", "ai.onnx", "com.microsoft"):
                handler(node)
            else:
                self._float_node(node)
        return self._finish()

    def _constant(self, node: onnx.NodeProto) -> None:
        attr = node.attribute[0] if node.attribute else None
        if attr is None or attr.name not in ("value", "value_float", "value_int",
                                             "value_floats", "value_ints"):
            self._float_node(node)
            return
        value = helper.get_attribute_value(attr)
        self.values[node.output[0]] = (numpy_helper.to_array(value)
                                       if isinstance(value, onnx.TensorProto)
                                       else np.asarray(value))

    def _op_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        x, scale = node.input[0], self.need_const(node, 1, "scale")
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        value = self.const(x)
        if value is not None:  # a float constant quantized in the graph (QAT weights)
            axis = int(attr(node, "axis", 1))
            sc = np.asarray(scale, np.float32)
            if sc.size > 1:
                shape = [1] * value.ndim
                shape[axis % value.ndim] = -1
                sc = sc.reshape(shape)
            z = 0 if zp is None else zp.astype(np.int64).reshape(sc.shape if sc.size > 1
                                                                 else ())
            dtype = np.dtype(zp.dtype if zp is not None else np.uint8)
            info = np.iinfo(dtype)
            q = np.clip(np.rint(value.astype(np.float32) / sc) + z, info.min, info.max)
            self.values[node.output[0]] = q.astype(dtype)
            return
        if x in self.int_tensors:
            raise UnsupportedError(f"QuantizeLinear '{node.name}': quantizes an integer tensor")
        p = self.params_from(node, np.asarray(scale), zp, self.fl(x))
        old = self.out.params.get(self.fl(x))
        if self.fl(x) != x and old is not None and old != p:
            # a DequantizeLinear → QuantizeLinear pair: a requantization (TFLite's QUANTIZE
            # int8 → int8), kept as an Identity whose output has the new parameters
            t = f"{node.output[0]}_requantized"
            self.nodes.append(helper.make_node("Identity", [self.fl(x)], [t],
                                               name=node.name or t))
            self.set_params(node, t, p)
            self.float_of[node.output[0]] = t
            self.int_tensors.add(node.output[0])
            self.out.producers.add("QDQ")
            return
        self.set_params(node, self.fl(x), p)
        self.float_of[node.output[0]] = self.fl(x)
        self.int_tensors.add(node.output[0])
        self.out.producers.add("QDQ")

    def _op_DequantizeLinear(self, node: onnx.NodeProto) -> None:
        t, scale = node.input[0], self.need_const(node, 1, "scale")
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        value = self.const(t)
        if value is not None:  # weight, bias or other constant stored as integers
            axis = int(attr(node, "axis", 1))
            qc = self.quantized_const(node, value, scale, zp,
                                      axis if np.asarray(scale).size > 1 else None, t)
            self.add_const(node.output[0], qc)
            return
        if t not in self.int_tensors:
            raise UnsupportedError(f"DequantizeLinear '{node.name}': its input {t!r} is neither "
                                   "a constant nor the output of a QuantizeLinear or a quantized "
                                   "operator")
        p = self.params_from(node, np.asarray(scale), zp, self.fl(t))
        self.set_params(node, self.fl(t), p)
        self.float_of[node.output[0]] = self.fl(t)

    # QOperator ops -----------------------------------------------------------------------
    def _qlinear_input(self, node: onnx.NodeProto, k: int) -> str:
        """Float tensor of the activation input triple starting at ``k`` (checks parameters)."""
        t = node.input[k]
        if t not in self.int_tensors:
            raise UnsupportedError(f"{node.op_type} '{node.name}': input {t!r} does not come "
                                   "from a QuantizeLinear or a quantized operator")
        zp = self.const(node.input[k + 2]) if len(node.input) > k + 2 and node.input[k + 2] \
            else None
        p = self.params_from(node, np.asarray(self.need_const(node, k + 1, "scale")), zp,
                             self.fl(t))
        self.set_params(node, self.fl(t), p)
        return self.fl(t)

    def _qlinear_output(self, node: onnx.NodeProto, k: int) -> str:
        y = node.output[0]
        zp = self.const(node.input[k + 1]) if len(node.input) > k + 1 and node.input[k + 1] \
            else None
        p = self.params_from(node, np.asarray(self.need_const(node, k, "output scale")), zp, y)
        self.set_params(node, y, p)
        self.int_tensors.add(y)
        self.out.producers.add("QOperator")
        return y

    def _qlinear_weight(self, node: onnx.NodeProto, k: int, name: str) -> str:
        w = self.need_const(node, k, "weight")
        scale = self.need_const(node, k + 1, "weight scale")
        zp = self.const(node.input[k + 2]) if len(node.input) > k + 2 else None
        axis = 0 if node.op_type == "QLinearConv" else 1
        return self.add_const(name, self.quantized_const(
            node, w, scale, zp, axis if np.asarray(scale).size > 1 else None, node.input[k]))

    def _op_QLinearConv(self, node: onnx.NodeProto) -> None:
        x = self._qlinear_input(node, 0)
        w = self._qlinear_weight(node, 3, f"{node.input[3]}_float")
        y = self._qlinear_output(node, 6)
        inputs = [x, w]
        if len(node.input) > 8 and node.input[8]:
            b = self.need_const(node, 8, "bias")
            unit = (np.float64(self.out.params[x].scale)
                    * self.out.constants[w].scale).astype(np.float32)
            inputs.append(self.add_const(f"{node.input[8]}_float", self.quantized_const(
                node, b, unit, None, 0 if unit.size > 1 else None, node.input[8])))
        conv = self.emit("Conv", inputs, [y], node)
        conv.attribute.extend(node.attribute)

    def _op_QLinearMatMul(self, node: onnx.NodeProto) -> None:
        a = self._qlinear_input(node, 0)
        if self.const(node.input[3]) is None:
            b = self._qlinear_input(node, 3)
        else:
            b = self._qlinear_weight(node, 3, f"{node.input[3]}_float")
        y = self._qlinear_output(node, 6)
        self.emit("MatMul", [a, b], [y], node)

    def _op_QGemm(self, node: onnx.NodeProto) -> None:
        """com.microsoft QGemm: A, B triples, int32 bias C, optional output scale."""
        if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0:
            raise UnsupportedError(f"QGemm '{node.name}': transA/alpha are not supported")
        a = self._qlinear_input(node, 0)
        trans = int(attr(node, "transB", 0))
        w = self.need_const(node, 3, "weight")
        scale = self.need_const(node, 4, "weight scale")
        zp = self.const(node.input[5]) if len(node.input) > 5 else None
        wname = self.add_const(f"{node.input[3]}_float", self.quantized_const(
            node, w, scale, zp, (0 if trans else 1) if np.asarray(scale).size > 1 else None,
            node.input[3]))
        if len(node.input) < 8 or not node.input[7]:
            raise UnsupportedError(f"QGemm '{node.name}': float output (no output scale); "
                                   "ortnpu needs the output scale of every NPU layer")
        y = self._qlinear_output(node, 7)
        inputs = [a, wname]
        if len(node.input) > 6 and node.input[6]:
            unit = (np.float64(self.out.params[a].scale)
                    * self.out.constants[wname].scale).astype(np.float32)
            inputs.append(self.add_const(f"{node.input[6]}_float", self.quantized_const(
                node, self.need_const(node, 6, "bias"), unit, None,
                0 if unit.size > 1 else None, node.input[6])))
        self.emit("Gemm", inputs, [y], node, transB=trans)

    def _op_QLinearSoftmax(self, node: onnx.NodeProto) -> None:
        x = self._qlinear_input(node, 0)
        y = self._qlinear_output(node, 3)
        self.emit("Softmax", [x], [y], node, axis=int(attr(node, "axis", -1)))

    def _op_QLinearAdd(self, node: onnx.NodeProto) -> None:
        self._ms_binary(node)

    def _op_QLinearMul(self, node: onnx.NodeProto) -> None:
        self._ms_binary(node)

    def _ms_binary(self, node: onnx.NodeProto) -> None:
        a = self._qlinear_input(node, 0)
        b = self._qlinear_input(node, 3)
        y = self._qlinear_output(node, 6)
        self.emit(_MS_QLINEAR_BINARY[node.op_type], [a, b], [y], node)

    def _op_QLinearGlobalAveragePool(self, node: onnx.NodeProto) -> None:
        self._ms_unary(node)

    def _op_QLinearSigmoid(self, node: onnx.NodeProto) -> None:
        self._ms_unary(node)

    def _op_QLinearAveragePool(self, node: onnx.NodeProto) -> None:
        self._ms_unary(node)

    def _ms_unary(self, node: onnx.NodeProto) -> None:
        if attr(node, "channels_last", 0):
            raise UnsupportedError(f"{node.op_type} '{node.name}': channels_last=1 is not "
                                   "supported; export the model in NCHW layout")
        x = self._qlinear_input(node, 0)
        y = self._qlinear_output(node, 3)
        op = self.emit(_MS_QLINEAR_UNARY[node.op_type], [x], [y], node)
        op.attribute.extend(a for a in node.attribute if a.name != "channels_last")

    def _op_DynamicQuantizeLinear(self, node: onnx.NodeProto) -> None:
        raise UnsupportedError(
            f"DynamicQuantizeLinear '{node.name}': the model is dynamically quantized, so "
            "its activations have no fixed scale an NPU could use; quantize the float model "
            "with `ortnpu quantize` and calibration data, or export it statically quantized")

    def _integer_linear(self, node: onnx.NodeProto) -> None:
        """MatMulInteger/ConvInteger: the accumulator's real unit comes from the rescale Mul."""
        a = node.input[0]
        if a not in self.int_tensors:
            raise UnsupportedError(f"{node.op_type} '{node.name}': input {a!r} does not come "
                                   "from a QuantizeLinear with a fixed scale")
        azp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        p = self.out.params[self.fl(a)]
        if azp is not None and int(azp.reshape(-1)[0]) != p.zero_point:
            raise UnsupportedError(f"{node.op_type} '{node.name}': the input zero point differs "
                                   f"from the one {a!r} was quantized with")
        w = self.need_const(node, 1, "weight")
        wzp = self.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        chain, unit, bias = self._rescale_chain(node)
        x_s = np.float64(p.scale)
        w_scale = (unit / x_s).astype(np.float32)
        axis = 0 if node.op_type == "ConvInteger" else 1
        wname = self.add_const(f"{node.input[1]}_float", self.quantized_const(
            node, w, w_scale, wzp, axis if w_scale.size > 1 else None, node.input[1]))
        out = chain[-1].output[0]
        bname = None
        if bias is not None:
            bname = self.add_const(f"{bias[0]}_float", self.quantized_const(
                node, bias[1], unit.astype(np.float32), None, 0 if unit.size > 1 else None,
                bias[0]))
        if node.op_type == "ConvInteger":
            op = "Conv"
            conv = self.emit("Conv", [self.fl(a), wname, *([bname] if bname else [])], [out],
                             node)
            conv.attribute.extend(node.attribute)
        else:  # MatMul then the bias Add: FuseMatMulAdd later makes them one Gemm
            op = "MatMul"
            mm_out = f"{out}_matmul" if bname else out
            self.emit("MatMul", [self.fl(a), wname], [mm_out], node)
            if bname:
                self.nodes.append(helper.make_node("Add", [mm_out, bname], [out],
                                                   name=f"{node.name or out}_bias"))
        self.out.producers.add("integer-ops")
        steps = " → ".join(n.op_type for n in chain)
        self.out.notes.append(
            f"{node.op_type} '{node.name}' with its rescale ({steps})"
            f" read as a float {op} writing {out!r}; its weight scales are the rescale factor "
            f"divided by the input scale {x_s:g}")

    def _op_MatMulInteger(self, node: onnx.NodeProto) -> None:
        self._integer_linear(node)

    def _op_ConvInteger(self, node: onnx.NodeProto) -> None:
        self._integer_linear(node)

    def _rescale_chain(self, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto], np.ndarray,
                                                            tuple[str, np.ndarray] | None]:
        """Follow ``[Add(int32 bias)] → Cast(float) → Mul(scale)`` after an integer op."""
        index = {id(n): k for k, n in enumerate(self.src.graph.node)}
        chain = [node]
        bias = None

        def only(tensor: str) -> onnx.NodeProto | None:
            users = self.consumers.get(tensor, [])
            return users[0] if len(users) == 1 and tensor not in self.graph_outputs else None

        nxt = only(node.output[0])
        if nxt is not None and nxt.op_type == "Add":
            other = nxt.input[1] if nxt.input[0] == node.output[0] else nxt.input[0]
            value = self.const(other)
            if value is not None:
                bias = (other, value.reshape(-1))
                chain.append(nxt)
                nxt = only(nxt.output[0])
        if nxt is None or nxt.op_type != "Cast" or attr(nxt, "to") != onnx.TensorProto.FLOAT:
            raise UnsupportedError(
                f"{node.op_type} '{node.name}': expected its int32 result to be cast to float "
                "and multiplied by a constant scale (the rescale of a QOperator/INC "
                "QDQ_OP_INT32_BIAS graph)")
        chain.append(nxt)
        mul = only(nxt.output[0])
        unit = None
        if mul is not None and mul.op_type == "Mul":
            other = mul.input[1] if mul.input[0] == nxt.output[0] else mul.input[0]
            unit = self.const(other)
        if unit is None:
            raise UnsupportedError(f"{node.op_type} '{node.name}': the Cast is not followed by "
                                   "a Mul with a constant scale")
        chain.append(mul)
        for n in chain[1:]:
            self.skip.add(index[id(n)])
        return chain, np.asarray(unit, np.float64).reshape(-1), bias

    def _op_Identity(self, node: onnx.NodeProto) -> None:
        value = self.const(node.input[0])
        if value is not None:  # exporters pass shared zero points through Identity
            self.values[node.output[0]] = value
        else:
            self._float_node(node)

    def _op_Clip(self, node: onnx.NodeProto) -> None:
        """A Clip on integers narrows the quantized range (PyTorch's quant_min/quant_max)."""
        x = node.input[0]
        if x not in self.int_tensors:
            self._float_node(node)
            return
        p = self.out.params[self.fl(x)]
        bounds = []
        for k, default in ((1, p.qmin), (2, p.qmax)):
            t = node.input[k] if len(node.input) > k else ""
            v = self.const(t) if t else None
            if t and v is None:
                raise UnsupportedError(f"Clip '{node.name}': bounds on an integer tensor must "
                                       "be constant")
            bounds.append(default if v is None else int(np.asarray(v).reshape(-1)[0]))
        lo, hi = max(bounds[0], p.qmin), min(bounds[1], p.qmax)
        if (lo, hi) == (p.qmin, p.qmax):
            self.float_of[node.output[0]] = self.fl(x)
            self.int_tensors.add(node.output[0])
            return
        y = node.output[0]
        names = [self.add_real(f"{y}_min", p.scale * (lo - p.zero_point)),
                 self.add_real(f"{y}_max", p.scale * (hi - p.zero_point))]
        self.emit("Clip", [self.fl(x), *names], [y], node)
        self.set_params(node, y, p)
        self.int_tensors.add(y)
        self.out.notes.append(f"Clip '{node.name}' on integers [{lo}, {hi}] read as a float "
                              "Clip of the same real range")

    def add_real(self, name: str, value: float) -> str:
        self.new_inits[name] = np.array(value, np.float32)
        return name

    # plain ops ----------------------------------------------------------------------------
    def _float_node(self, node: onnx.NodeProto) -> None:
        ints = [i for i in node.input if i in self.int_tensors]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(self.fl(i) if i else i for i in node.input)
        if ints:
            if node.op_type not in _MOVING_OPS or node.domain not in ("", "ai.onnx"):
                raise UnsupportedError(
                    f"{node.op_type} '{node.name}': runs on the integer tensor {ints[0]!r}; "
                    "ortnpu imports quantized operators QLinearConv, QLinearMatMul, QGemm, "
                    "QLinearAdd, QLinearMul, QLinearSoftmax, QLinearGlobalAveragePool, "
                    "QLinearAveragePool, QLinearSigmoid, "
                    "MatMulInteger, ConvInteger and value-moving ops (MaxPool, Reshape, ...)")
            p = self.out.params[self.fl(ints[0])]
            for o in node.output:
                if o:
                    self.set_params(node, o, p)
                    self.int_tensors.add(o)
        self.nodes.append(copy)

    def _finish(self) -> ImportedGraph:
        g = self.src.graph
        rename: dict[str, str] = {}
        extra: list[onnx.NodeProto] = []
        for o in self.graph_outputs:
            if o in self.int_tensors:
                raise UnsupportedError(
                    f"graph output {o!r} is an integer tensor; an NPU graph keeps float "
                    "outputs: end the model with a DequantizeLinear")
            f = self.fl(o)
            if f == o:
                continue
            if f in self.graph_inputs or f in self.graph_outputs or f in rename:
                extra.append(helper.make_node("Identity", [f], [o], name=f"{o}_identity"))
            else:
                rename[f] = o
        for n in self.nodes:
            for k, t in enumerate(n.input):
                if t in rename:
                    n.input[k] = rename[t]
            for k, t in enumerate(n.output):
                if t in rename:
                    n.output[k] = rename[t]
        for old, new in rename.items():
            if old in self.out.params:
                self.out.params[new] = self.out.params.pop(old)
        self.nodes += extra
        used = {i for n in self.nodes for i in node_inputs(n)}
        inits = [numpy_helper.from_array(v, k) for k, v in self.new_inits.items() if k in used]
        inits += [i for i in g.initializer if i.name in used and i.name not in self.new_inits]
        for name, value in self.values.items():  # Constant nodes feeding float ops
            if name in used and name not in self.new_inits and \
                    name not in {i.name for i in g.initializer}:
                inits.append(numpy_helper.from_array(np.asarray(value), name))
        self.out.constants = {k: v for k, v in self.out.constants.items() if k in used}
        inputs = [i for i in g.input if i.name not in {t.name for t in inits}
                  and i.name not in self.values]
        graph = helper.make_graph(self.nodes, g.name or "imported", inputs, list(g.output),
                                  initializer=inits)
        opsets = [o for o in self.src.opset_import if o.domain not in ("com.microsoft",)]
        if not any(o.domain in ("", "ai.onnx") for o in opsets):
            opsets.append(helper.make_opsetid("", 17))
        model = helper.make_model(graph, opset_imports=opsets,
                                  producer_name=self.src.producer_name or "ortnpu.import_qdq")
        model.ir_version = self.src.ir_version
        model.metadata_props.extend(self.src.metadata_props)
        self.out.model = model
        if not self.out.producers and not self.out.constants:
            raise ModelError(f"{g.name or 'the model'}: no QuantizeLinear, DequantizeLinear or "
                             "quantized operator found; this is a float model: use "
                             "`ortnpu quantize` with calibration data")
        return self.out


def read_quantized(model: onnx.ModelProto) -> ImportedGraph:
    """Recognise the quantization of ``model`` and rebuild the float graph it stands for.

    Args:
        model: a QDQ or QOperator model.

    Returns:
        The float graph and the model's own parameters, integers and biases.

    Raises:
        ModelError: not a model, or no quantization in it.
        UnsupportedError: a structure ortnpu cannot import (the message names the node).
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"import_qdq expects an onnx.ModelProto, got {type(model).__name__}; "
                         "load the file with onnx.load first")
    if any(f for f in model.functions):
        raise UnsupportedError("the model defines local functions; inline them first "
                               "(onnx.inliner.inline_local_functions)")
    return _Reader(model).run()
