"""The parts of onnxruntime's C API the EP calls from Python, and the graph they read.

onnxruntime's headers are not installed with the wheel, so, as ``ops/ort_abi.h`` does for the
custom ops, the function-table slots used are declared here: the index of each function in
``OrtApi`` / ``OrtEpApi`` (onnxruntime only appends to these tables, so a slot never moves).
They were counted in the released header ``onnxruntime_c_api.h`` / ``onnxruntime_ep_c_api.h``
(API version 29); every one used here exists since 1.23 (the OrtGraph API and Compile).

:func:`read_graph` turns an ``OrtGraph`` (the whole model in ``GetCapability``, one fused group
in ``Compile``) into an ``onnx.ModelProto``: nodes with their attributes, the initializers'
values (``ValueInfo_GetInitializerValue``), inputs, outputs and the types and shapes onnxruntime
knows. ortnpu's importer then reads it like a model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.errors import ModelError, UnsupportedError

#: OrtApi slots (counted from CreateStatus = 0).
API = {
    "GetErrorMessage": 2,
    "GetTensorMutableData": 51,
    "CastTypeInfoToTensorInfo": 55,
    "GetOnnxTypeFromTypeInfo": 56,
    "GetTensorElementType": 60,
    "GetDimensionsCount": 61,
    "GetDimensions": 62,
    "GetSymbolicDimensions": 63,
    "GetTensorTypeAndShape": 65,
    "KernelContext_GetInputCount": 88,
    "KernelContext_GetOutputCount": 89,
    "KernelContext_GetInput": 90,
    "KernelContext_GetOutput": 91,
    "ReleaseStatus": 93,
    "ReleaseTensorTypeAndShapeInfo": 99,
    "HasSessionConfigEntry": 237,
    "GetSessionConfigEntry": 238,
    "ReadOpAttr": 272,
    "GetValueInfoName": 289,
    "GetValueInfoTypeInfo": 290,
    "ValueInfo_GetInitializerValue": 326,
    "ValueInfo_IsConstantInitializer": 331,
    "Graph_GetNumOperatorSets": 336,
    "Graph_GetOperatorSets": 337,
    "Graph_GetNumInputs": 338,
    "Graph_GetInputs": 339,
    "Graph_GetNumOutputs": 340,
    "Graph_GetOutputs": 341,
    "Graph_GetNumInitializers": 342,
    "Graph_GetInitializers": 343,
    "Graph_GetNumNodes": 344,
    "Graph_GetNodes": 345,
    "Graph_GetParentNode": 346,
    "Node_GetName": 349,
    "Node_GetOperatorType": 350,
    "Node_GetDomain": 351,
    "Node_GetNumInputs": 353,
    "Node_GetInputs": 354,
    "Node_GetNumOutputs": 355,
    "Node_GetOutputs": 356,
    "Node_GetNumAttributes": 359,
    "Node_GetAttributes": 360,
    "OpAttr_GetTensorAttributeAsOrtValue": 362,
    "OpAttr_GetType": 363,
    "OpAttr_GetName": 364,
    "Node_GetNumSubgraphs": 365,
}
#: OrtEpApi slots (counted from CreateEpDevice = 0).
EP_API = {"EpGraphSupportInfo_AddNodesToFuse": 2}

#: C signatures of the slots (every opaque onnxruntime pointer is ``void *``; a status too).
_SIG = {
    "GetErrorMessage": "char *(*)(void *)",
    "ReleaseStatus": "void (*)(void *)",
    "ReleaseTensorTypeAndShapeInfo": "void (*)(void *)",
    "GetTensorMutableData": "void *(*)(void *, void **)",
    "CastTypeInfoToTensorInfo": "void *(*)(void *, void **)",
    "GetOnnxTypeFromTypeInfo": "void *(*)(void *, int *)",
    "GetTensorElementType": "void *(*)(void *, int *)",
    "GetDimensionsCount": "void *(*)(void *, size_t *)",
    "GetDimensions": "void *(*)(void *, int64_t *, size_t)",
    "GetSymbolicDimensions": "void *(*)(void *, char **, size_t)",
    "GetTensorTypeAndShape": "void *(*)(void *, void **)",
    "KernelContext_GetInputCount": "void *(*)(void *, size_t *)",
    "KernelContext_GetOutputCount": "void *(*)(void *, size_t *)",
    "KernelContext_GetInput": "void *(*)(void *, size_t, void **)",
    "KernelContext_GetOutput": "void *(*)(void *, size_t, int64_t *, size_t, void **)",
    "HasSessionConfigEntry": "void *(*)(void *, char *, int *)",
    "GetSessionConfigEntry": "void *(*)(void *, char *, char *, size_t *)",
    "ReadOpAttr": "void *(*)(void *, int, void *, size_t, size_t *)",
    "GetValueInfoName": "void *(*)(void *, char **)",
    "GetValueInfoTypeInfo": "void *(*)(void *, void **)",
    "ValueInfo_GetInitializerValue": "void *(*)(void *, void **)",
    "ValueInfo_IsConstantInitializer": "void *(*)(void *, _Bool *)",
    "Graph_GetNumOperatorSets": "void *(*)(void *, size_t *)",
    "Graph_GetOperatorSets": "void *(*)(void *, char **, int64_t *, size_t)",
    "Graph_GetNumInputs": "void *(*)(void *, size_t *)",
    "Graph_GetInputs": "void *(*)(void *, void **, size_t)",
    "Graph_GetNumOutputs": "void *(*)(void *, size_t *)",
    "Graph_GetOutputs": "void *(*)(void *, void **, size_t)",
    "Graph_GetNumInitializers": "void *(*)(void *, size_t *)",
    "Graph_GetInitializers": "void *(*)(void *, void **, size_t)",
    "Graph_GetNumNodes": "void *(*)(void *, size_t *)",
    "Graph_GetNodes": "void *(*)(void *, void **, size_t)",
    "Graph_GetParentNode": "void *(*)(void *, void **)",
    "Node_GetName": "void *(*)(void *, char **)",
    "Node_GetOperatorType": "void *(*)(void *, char **)",
    "Node_GetDomain": "void *(*)(void *, char **)",
    "Node_GetNumInputs": "void *(*)(void *, size_t *)",
    "Node_GetInputs": "void *(*)(void *, void **, size_t)",
    "Node_GetNumOutputs": "void *(*)(void *, size_t *)",
    "Node_GetOutputs": "void *(*)(void *, void **, size_t)",
    "Node_GetNumAttributes": "void *(*)(void *, size_t *)",
    "Node_GetAttributes": "void *(*)(void *, void **, size_t)",
    "OpAttr_GetTensorAttributeAsOrtValue": "void *(*)(void *, void **)",
    "OpAttr_GetType": "void *(*)(void *, int *)",
    "OpAttr_GetName": "void *(*)(void *, char **)",
    "Node_GetNumSubgraphs": "void *(*)(void *, size_t *)",
    "EpGraphSupportInfo_AddNodesToFuse": "void *(*)(void *, void **, size_t, void *)",
}

# OrtOpAttrType
_ATTR_INT, _ATTR_INTS, _ATTR_FLOAT, _ATTR_FLOATS, _ATTR_STRING, _ATTR_STRINGS = range(1, 7)
_ATTR_GRAPH, _ATTR_TENSOR = 7, 8
_ONNX_TYPE_TENSOR = 1


class OrtCallError(RuntimeError):
    """An onnxruntime API call returned a status (its message)."""


def _ffi() -> Any:
    from ortnpu.domain import native

    if native._native is None:
        raise ModelError(f"ortnpu's C module is not built ({native.IMPORT_ERROR})")
    return native._native.ffi


class Api:
    """Calls into one onnxruntime function table (``OrtApi`` or ``OrtEpApi``)."""

    def __init__(self, table: Any, slots: dict[str, int], status_api: Api | None = None) -> None:
        self.ffi = _ffi()
        self._table = self.ffi.cast("void **", table)
        self._slots = slots
        self._fns: dict[str, Any] = {}
        self._status = status_api or self

    def fn(self, name: str) -> Any:
        f = self._fns.get(name)
        if f is None:
            f = self._fns[name] = self.ffi.cast(_SIG[name], self._table[self._slots[name]])
        return f

    def call(self, name: str, *args: Any) -> None:
        """Call a function that returns an OrtStatus; raise its message."""
        st = self.fn(name)(*args)
        if st != self.ffi.NULL:
            raise OrtCallError(self._status.take(st))

    def take(self, status: Any) -> str:
        """The status's message; the status is released."""
        ffi = self.ffi
        msg = self.fn("GetErrorMessage")(status)
        text = ffi.string(msg).decode("utf-8", "replace") if msg != ffi.NULL else "?"
        self.fn("ReleaseStatus")(status)
        return text

    # small helpers ---------------------------------------------------------------------------
    def string(self, name: str, obj: Any) -> str:
        out = self.ffi.new("char **")
        self.call(name, obj, out)
        return "" if out[0] == self.ffi.NULL else self.ffi.string(out[0]).decode("utf-8")

    def count(self, name: str, obj: Any) -> int:
        out = self.ffi.new("size_t *")
        self.call(name, obj, out)
        return int(out[0])

    def array(self, count_name: str, get_name: str, obj: Any) -> list[Any]:
        n = self.count(count_name, obj)
        if n == 0:
            return []
        out = self.ffi.new("void *[]", n)
        self.call(get_name, obj, out, n)
        return [out[i] for i in range(n)]

    def config_entry(self, options: Any, key: str) -> str | None:
        """A session configuration entry, or None when it is not set."""
        ffi = self.ffi
        k = ffi.new("char[]", key.encode())
        has = ffi.new("int *")
        self.call("HasSessionConfigEntry", options, k, has)
        if not has[0]:
            return None
        size = ffi.new("size_t *", 0)
        st = self.fn("GetSessionConfigEntry")(options, k, ffi.NULL, size)
        if st != ffi.NULL:
            self.take(st)
        buf = ffi.new("char[]", max(int(size[0]), 1))
        self.call("GetSessionConfigEntry", options, k, buf, size)
        return ffi.string(buf).decode("utf-8")

    def tensor_info(self, info: Any) -> tuple[int, list[int | str]]:
        """Element type and shape (symbolic dimensions by name) of a TensorTypeAndShapeInfo."""
        ffi = self.ffi
        et = ffi.new("int *")
        self.call("GetTensorElementType", info, et)
        rank = self.count("GetDimensionsCount", info)
        dims = ffi.new("int64_t[]", max(rank, 1))
        self.call("GetDimensions", info, dims, rank)
        sym = ffi.new("char *[]", max(rank, 1))
        self.call("GetSymbolicDimensions", info, sym, rank)
        shape: list[int | str] = []
        for d in range(rank):
            if dims[d] >= 0:
                shape.append(int(dims[d]))
            else:
                shape.append(ffi.string(sym[d]).decode("utf-8") if sym[d] != ffi.NULL else "")
        return int(et[0]), shape

    def value_type(self, vi: Any) -> tuple[int, list[int | str] | None] | None:
        """(element type, shape or None) of a value info; None when not a tensor or unknown."""
        ffi = self.ffi
        ti = ffi.new("void **")
        self.call("GetValueInfoTypeInfo", vi, ti)
        if ti[0] == ffi.NULL:
            return None
        kind = ffi.new("int *")
        self.call("GetOnnxTypeFromTypeInfo", ti[0], kind)
        if kind[0] != _ONNX_TYPE_TENSOR:
            return None
        info = ffi.new("void **")
        self.call("CastTypeInfoToTensorInfo", ti[0], info)
        if info[0] == ffi.NULL:
            return None
        return self.tensor_info(info[0])

    def value_array(self, value: Any) -> np.ndarray:
        """A copy of a CPU tensor OrtValue."""
        from onnx.helper import tensor_dtype_to_np_dtype

        ffi = self.ffi
        info = ffi.new("void **")
        self.call("GetTensorTypeAndShape", value, info)
        try:
            et, shape = self.tensor_info(info[0])
        finally:
            self.fn("ReleaseTensorTypeAndShapeInfo")(info[0])
        if et == onnx.TensorProto.STRING:
            raise UnsupportedError("string tensors are not read by the ortnpu EP")
        dtype = np.dtype(tensor_dtype_to_np_dtype(et))
        dims = tuple(int(d) for d in shape)
        n = int(np.prod(dims)) if dims else 1
        if n == 0:
            return np.zeros(dims, dtype)
        data = ffi.new("void **")
        self.call("GetTensorMutableData", value, data)
        return np.frombuffer(ffi.buffer(data[0], n * dtype.itemsize), dtype).reshape(dims).copy()


@dataclass
class ReadGraph:
    """An OrtGraph as an ONNX model, and onnxruntime's node pointers by node name."""

    model: onnx.ModelProto
    nodes: dict[str, Any] = field(default_factory=dict)
    original: dict[str, str] = field(default_factory=dict)  # node name -> name in the graph
    nested: bool = False            # a subgraph of an If/Loop/Scan node
    subgraph_nodes: list[str] = field(default_factory=list)  # nodes holding subgraphs


def _attribute(api: Api, attr: Any) -> onnx.AttributeProto | None:
    ffi = api.ffi
    name = api.string("OpAttr_GetName", attr)
    kind = ffi.new("int *")
    api.call("OpAttr_GetType", attr, kind)
    t = int(kind[0])
    if t == _ATTR_GRAPH:
        return None
    if t == _ATTR_TENSOR:
        value = ffi.new("void **")
        api.call("OpAttr_GetTensorAttributeAsOrtValue", attr, value)
        return helper.make_attribute(name, numpy_helper.from_array(api.value_array(value[0])))
    size = ffi.new("size_t *", 0)
    st = api.fn("ReadOpAttr")(attr, t, ffi.NULL, 0, size)
    if st != ffi.NULL:   # the size needed
        api.take(st)
    n = int(size[0])
    if t == _ATTR_INT:
        out = ffi.new("int64_t *")
        api.call("ReadOpAttr", attr, t, out, 8, size)
        return helper.make_attribute(name, int(out[0]))
    if t == _ATTR_FLOAT:
        out = ffi.new("float *")
        api.call("ReadOpAttr", attr, t, out, 4, size)
        return helper.make_attribute(name, float(out[0]))
    if t in (_ATTR_INTS, _ATTR_FLOATS):
        ctype, width, kind = (("int64_t", 8, onnx.AttributeProto.INTS) if t == _ATTR_INTS
                              else ("float", 4, onnx.AttributeProto.FLOATS))
        buf = ffi.new(f"{ctype}[]", max(n // width, 1))
        if n:
            api.call("ReadOpAttr", attr, t, buf, n, size)
        return helper.make_attribute(name, list(buf)[: n // width], attr_type=kind)
    if t == _ATTR_STRING:
        buf = ffi.new("char[]", max(n, 1))
        if n:
            api.call("ReadOpAttr", attr, t, buf, n, size)
        return helper.make_attribute(name, ffi.unpack(buf, n))
    if t == _ATTR_STRINGS:
        buf = ffi.new("char[]", max(n, 1))
        if n:
            api.call("ReadOpAttr", attr, t, buf, n, size)
        raw = ffi.unpack(buf, n)
        items = raw.split(b"\0")
        if items and items[-1] == b"":
            items = items[:-1]
        return helper.make_attribute(name, items, attr_type=onnx.AttributeProto.STRINGS)
    raise UnsupportedError(f"attribute {name!r} has a type ({t}) the ortnpu EP cannot read")


def read_graph(api: Api, graph: Any) -> ReadGraph:
    """The OrtGraph as an ONNX model (see the module docstring)."""
    ffi = api.ffi
    parent = ffi.new("void **")
    api.call("Graph_GetParentNode", graph, parent)
    n_sets = api.count("Graph_GetNumOperatorSets", graph)
    domains = ffi.new("char *[]", max(n_sets, 1))
    versions = ffi.new("int64_t[]", max(n_sets, 1))
    if n_sets:
        api.call("Graph_GetOperatorSets", graph, domains, versions, n_sets)
    opsets = [helper.make_opsetid(ffi.string(domains[i]).decode("utf-8"), int(versions[i]))
              for i in range(n_sets)]

    types: dict[str, tuple[int, list[int | str] | None]] = {}

    def name_of(vi: Any) -> str:
        n = api.string("GetValueInfoName", vi)
        if n not in types:
            t = api.value_type(vi)
            if t is not None:
                types[n] = t
        return n

    initializers = []
    init_names: set[str] = set()
    for vi in api.array("Graph_GetNumInitializers", "Graph_GetInitializers", graph):
        name = name_of(vi)
        value = ffi.new("void **")
        api.call("ValueInfo_GetInitializerValue", vi, value)
        if value[0] == ffi.NULL:
            continue
        initializers.append(numpy_helper.from_array(api.value_array(value[0]), name))
        init_names.add(name)

    def info(name: str) -> onnx.ValueInfoProto:
        t = types.get(name)
        if t is None:
            return helper.make_empty_tensor_value_info(name)
        return helper.make_tensor_value_info(name, t[0], t[1])

    inputs = [name_of(vi) for vi in api.array("Graph_GetNumInputs", "Graph_GetInputs", graph)]
    outputs = [name_of(vi) for vi in api.array("Graph_GetNumOutputs", "Graph_GetOutputs", graph)]
    out = ReadGraph(model=onnx.ModelProto(), nested=parent[0] != ffi.NULL)
    nodes = []
    produced: set[str] = set()
    used = set()
    for k, node in enumerate(api.array("Graph_GetNumNodes", "Graph_GetNodes", graph)):
        given = api.string("Node_GetName", node)
        name = given or f"_ortnpu_ep_node_{k}"
        while name in out.nodes:   # unnamed or duplicate names: unique ones for the importer
            name += "_"
        out.original[name] = given
        op_type = api.string("Node_GetOperatorType", node)
        domain = api.string("Node_GetDomain", node)
        ins = [name_of(vi) if vi != ffi.NULL else ""
               for vi in api.array("Node_GetNumInputs", "Node_GetInputs", node)]
        outs = [name_of(vi) if vi != ffi.NULL else ""
                for vi in api.array("Node_GetNumOutputs", "Node_GetOutputs", node)]
        attrs = [a for a in (_attribute(api, p) for p in
                             api.array("Node_GetNumAttributes", "Node_GetAttributes", node))
                 if a is not None]
        if api.count("Node_GetNumSubgraphs", node):
            out.subgraph_nodes.append(name)
        n = helper.make_node(op_type, ins, outs, name=name, domain=domain or None)
        n.attribute.extend(attrs)
        nodes.append(n)
        out.nodes[name] = node
        produced.update(o for o in outs if o)
        used.update(i for i in ins if i)
    graph_inputs = [info(i) for i in inputs if i not in init_names]
    value_info = [info(t) for t in sorted(produced - set(outputs)) if t in types]
    g = helper.make_graph(nodes, "ortnpu_ep", graph_inputs, [info(o) for o in outputs],
                          initializer=[i for i in initializers if i.name in used or
                                       i.name in outputs],
                          value_info=value_info)
    # onnxruntime lists every domain it knows (com.ortnpu too, once a session registered it);
    # the model imports the standard domain and those its nodes use
    domains = {"", *(n.domain for n in nodes)}
    opsets = [o for o in opsets if o.domain in domains]
    model = helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", 21)])
    model.ir_version = 10   # opset 21 needs IR 10; onnxruntime reads it
    out.model = model
    return out


__all__ = ["API", "EP_API", "Api", "OrtCallError", "ReadGraph", "read_graph"]
