"""Build single-op quantized ``.tflite`` models and run them with LiteRT's reference kernels.

Test-only code for the external oracle (tests/oracle): the models are written with the
flatbuffer schema of the ``tflite`` package (no TensorFlow), and run by ``ai-edge-litert``'s
interpreter with ``OpResolverType.BUILTIN_REF``, the resolver of TFLite's reference kernels
(tensorflow/lite/kernels/internal/reference), which is the arithmetic ortnpu claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

#: numpy dtype name -> TFLite TensorType value
TENSOR_TYPES = {"float32": tflite.TensorType.FLOAT32, "int32": tflite.TensorType.INT32,
                "int64": tflite.TensorType.INT64, "int16": tflite.TensorType.INT16,
                "int8": tflite.TensorType.INT8, "uint8": tflite.TensorType.UINT8}

#: fused activation names -> ActivationFunctionType value
ACTIVATIONS = {"NONE": tflite.ActivationFunctionType.NONE,
               "RELU": tflite.ActivationFunctionType.RELU,
               "RELU6": tflite.ActivationFunctionType.RELU6}

PADDING = {"SAME": tflite.Padding.SAME, "VALID": tflite.Padding.VALID}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float] | None
    zero_point: list[int] | None
    axis: int
    data: np.ndarray | None


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, dict[str, Any]] | None


@dataclass
class TFLiteGraph:
    """One subgraph under construction: add tensors and ops, then :meth:`build` the model."""

    tensors: list[_Tensor] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)

    def tensor(self, name: str, shape: tuple[int, ...] | list[int], dtype: str, *,
               scale: float | list[float] | np.ndarray | None = None,
               zero_point: int | list[int] | np.ndarray | None = None, axis: int = 0,
               data: np.ndarray | None = None) -> int:
        """Add a tensor (constant when ``data`` is given); returns its index."""
        if scale is not None:
            scale = [float(s) for s in np.atleast_1d(np.asarray(scale, np.float32))]
            zps = np.zeros(len(scale), np.int64) if zero_point is None else zero_point
            zero_point = [int(z) for z in np.broadcast_to(np.atleast_1d(zps), (len(scale),))]
        if data is not None:
            data = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(shape))
        self.tensors.append(_Tensor(name, tuple(int(d) for d in shape), dtype, scale,
                                    zero_point, axis, data))
        return len(self.tensors) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int],
           options: tuple[str, dict[str, Any]] | None = None) -> None:
        """Add a builtin op by its ``BuiltinOperator`` name, e.g. ``"CONV_2D"``.

        ``options`` is ``(table name, fields)``, e.g. ``("Conv2DOptions", {"Padding": 1})``;
        field names are those of the schema's ``<Table>Add<Field>`` builder functions.
        """
        self.ops.append(_Op(getattr(tflite.BuiltinOperator, name), inputs, outputs, options))

    # -- serialization ----------------------------------------------------------------------
    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        """Serialize the model (schema version 3) with the given graph inputs and outputs."""
        b = flatbuffers.Builder(1024)
        buffers = [b""]                     # buffer 0: the empty buffer of activations
        buffer_of = []
        for t in self.tensors:
            if t.data is None:
                buffer_of.append(0)
            else:
                buffers.append(t.data.tobytes())
                buffer_of.append(len(buffers) - 1)
        codes = sorted({op.code for op in self.ops})
        tensor_offsets = [self._tensor(b, t, buf) for t, buf in zip(self.tensors, buffer_of,
                                                                       strict=True)]
        op_offsets = [self._op(b, op, codes.index(op.code)) for op in self.ops]
        t_vec = _vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
        o_vec = _vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
        in_vec = _int_vector(b, tflite.SubGraphStartInputsVector, inputs)
        out_vec = _int_vector(b, tflite.SubGraphStartOutputsVector, outputs)
        name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, o_vec)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)
        code_offsets = []
        for code in codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            code_offsets.append(tflite.OperatorCodeEnd(b))
        buffer_offsets = []
        for data in buffers:
            vec = b.CreateByteVector(data) if data else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffer_offsets.append(tflite.BufferEnd(b))
        c_vec = _vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
        s_vec = _vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        bf_vec = _vector(b, tflite.ModelStartBuffersVector, buffer_offsets)
        desc = b.CreateString("ortnpu oracle")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, c_vec)
        tflite.ModelAddSubgraphs(b, s_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, bf_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _tensor(b: flatbuffers.Builder, t: _Tensor, buffer: int) -> int:
        quant = None
        if t.scale is not None:
            scale = b.CreateNumpyVector(np.asarray(t.scale, np.float32))
            zp = b.CreateNumpyVector(np.asarray(t.zero_point, np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.axis)
            quant = tflite.QuantizationParametersEnd(b)
        shape = b.CreateNumpyVector(np.asarray(t.shape, np.int32))
        name = b.CreateString(t.name)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    @staticmethod
    def _op(b: flatbuffers.Builder, op: _Op, code_index: int) -> int:
        opts = None
        if op.options is not None:
            table, fields = op.options
            vectors = {k: b.CreateNumpyVector(np.asarray(v, np.int32))
                       for k, v in fields.items() if isinstance(v, list | tuple)}
            getattr(tflite, f"{table}Start")(b)
            for k, v in fields.items():
                getattr(tflite, f"{table}Add{k}")(b, vectors.get(k, v))
            opts = getattr(tflite, f"{table}End")(b)
        ins = _int_vector(b, tflite.OperatorStartInputsVector, op.inputs)
        outs = _int_vector(b, tflite.OperatorStartOutputsVector, op.outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opts is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options[0]))
            tflite.OperatorAddBuiltinOptions(b, opts)
        return tflite.OperatorEnd(b)


def _vector(b: flatbuffers.Builder, start: Any, offsets: list[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _int_vector(b: flatbuffers.Builder, start: Any, values: list[int]) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependInt32(int(v))
    return b.EndVector()


def run_reference(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` with TFLite's reference kernels; returns the outputs (integer tensors)."""
    interp = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         num_threads=1)
    interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), inputs, strict=True):
        interp.set_tensor(detail["index"], np.ascontiguousarray(value, detail["dtype"]))
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
