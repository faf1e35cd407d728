"""The Python side of the plugin EP: the callbacks ``ops/ep_plugin.c`` makes.

* ``CreateEp`` reads the EP options from the session (``ep.ortnpu.<key>`` entries, which
  ``SessionOptions.add_provider_for_devices(devices, {key: value})`` writes): ``target`` (a
  preset name or TOML path, default ``tflite-int8``) and ``nan_policy`` (as
  :class:`ortnpu.InferenceSession`, default ``raise``).
* ``GetCapability`` reads the graph (:func:`ortnpu.ep.abi.read_graph`), plans the groups
  (:func:`ortnpu.ep.plan.plan`) and claims each one with ``EpGraphSupportInfo_AddNodesToFuse``.
* ``Compile`` reads each claimed group's graph, builds its NPU graph with ``import_qdq`` and an
  :class:`ortnpu.InferenceSession` of it (which compiles its subgraphs into C programs).
* ``Compute`` hands onnxruntime's input buffers to that session and writes its outputs into
  onnxruntime's output tensors.

Every exception becomes the message of the OrtStatus the C side returns; nothing crosses into
onnxruntime.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ortnpu.ep.abi import API, EP_API, Api, read_graph
from ortnpu.ep.plan import Plan, group_model, plan
from ortnpu.errors import ModelError, OrtNpuError
from ortnpu.target import Target, load_target

EP_NAME = "ortnpu"
#: The EP options (``add_provider_for_devices(devices, {key: value})``) and their defaults.
OPTIONS = {"target": "tflite-int8", "nan_policy": "raise"}


@dataclass
class EpInstance:
    """One EP, created by onnxruntime for one session."""

    target: Target
    nan_policy: str
    plan: Plan | None = None
    compiled: list[int] = field(default_factory=list)

    def planned_model(self, nodes: Counter[tuple[str, str]]) -> onnx.ModelProto | None:
        """The NPU graph the plan already imported for the group of these (name, op type)
        nodes; None when no group, or more than one, has them."""
        if self.plan is None:
            return None
        found = []
        for members, model in zip(self.plan.groups, self.plan.models, strict=True):
            keys = set(members)
            if Counter((r.node, r.op_type) for r in self.plan.reports if r.key in keys) == nodes:
                found.append(model)
        return found[0] if len(found) == 1 else None


@dataclass
class CompiledGroup:
    """One fused node: the NPU graph of its group and the session that runs it."""

    session: Any                       # ortnpu.InferenceSession
    npu_model: onnx.ModelProto
    feeds: list[tuple[int, str]]       # (onnxruntime input index, session input name)
    outputs: list[str]                 # session output names in onnxruntime's output order


_ids = itertools.count(1)
_lock = threading.Lock()
_eps: dict[int, EpInstance] = {}
_groups: dict[int, CompiledGroup] = {}
#: The plans of the latest graphs the EP was given (for :func:`ortnpu.ep.explain`).
RECENT_PLANS: deque[Plan] = deque(maxlen=32)


def _write(ffi: Any, err: Any, size: int, text: str) -> None:
    data = text.encode("utf-8", "replace")[: max(size - 1, 0)]
    ffi.memmove(err, data, len(data))
    err[len(data)] = b"\0"


def _message(exc: BaseException) -> str:
    """The OrtStatus message: ortnpu's errors as they are; anything else is a bug of the EP
    and says so ("internal error", which the fuzzer counts as foreign)."""
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, OrtNpuError):
        text = f"internal error {type(exc).__name__}: {text}"
    return "ortnpu: " + text


def create(api: Api, options: Any) -> EpInstance:
    values = dict(OPTIONS)
    for key in OPTIONS:
        value = api.config_entry(options, f"ep.{EP_NAME}.{key}")
        if value is not None:
            values[key] = value
    from ortnpu.runtime.session import NAN_POLICIES

    if values["nan_policy"] not in NAN_POLICIES:
        raise ModelError(f"EP option nan_policy must be one of {', '.join(NAN_POLICIES)}, got "
                         f"{values['nan_policy']!r}")
    return EpInstance(target=load_target(values["target"]), nan_policy=values["nan_policy"])


def capability(ep: EpInstance, api: Api, ep_api: Api, graph: Any, support: Any) -> None:
    read = read_graph(api, graph)
    if read.nested:   # a subgraph of an If/Loop/Scan: left to the CPU
        return
    if read.subgraph_nodes:
        p = plan_without_subgraphs(read.model, read.subgraph_nodes, ep.target)
    else:
        p = plan(read.model, ep.target)
    p = p.renamed(read.original)
    ep.plan = p
    RECENT_PLANS.append(Plan(p.groups, p.reports))   # without the NPU graphs (memory)
    ffi = api.ffi
    for members in p.groups:
        nodes = ffi.new("void *[]", [read.nodes[m] for m in members])
        ep_api.call("EpGraphSupportInfo_AddNodesToFuse", support, nodes, len(members), ffi.NULL)


def plan_without_subgraphs(model: onnx.ModelProto, holders: list[str], target: Target) -> Plan:
    """Graphs with If/Loop/Scan nodes: their bodies are not read, so nothing is claimed."""
    from ortnpu.ep.plan import NodeReport

    why = (f"the graph has control-flow nodes ({', '.join(holders[:3])}) whose bodies the "
           "ortnpu EP does not read; use ortnpu.import_qdq for this model")
    return Plan(reports=[NodeReport(n.name, n.op_type, "CPU", why) for n in model.graph.node])


def compile_group(ep: EpInstance, api: Api, graph: Any, fused: Any) -> CompiledGroup:
    """Compile one claimed group (its OrtGraph and the fused node onnxruntime made of it)."""
    from ortnpu.quant.qdq_import import import_qdq

    read = read_graph(api, graph)
    nodes = Counter((read.original[n.name], n.op_type) for n in read.model.graph.node)
    planned = ep.planned_model(nodes)   # imported when the plan was made: not twice
    if planned is not None:
        try:
            return _compiled(ep, planned, api, fused)
        except ModelError:   # the fused node's inputs or outputs are not the plan's
            pass
    model = group_model(read.model, set(read.nodes))   # drops what the group does not read
    return _compiled(ep, import_qdq(model, ep.target), api, fused)


def _compiled(ep: EpInstance, npu: onnx.ModelProto, api: Api, fused: Any) -> CompiledGroup:
    """The session of a group's NPU graph, wired to the fused node's inputs and outputs."""
    import ortnpu

    session = ortnpu.InferenceSession(npu, nan_policy=ep.nan_policy)
    ffi = api.ffi
    fused_inputs = [api.string("GetValueInfoName", vi) if vi != ffi.NULL else ""
                    for vi in api.array("Node_GetNumInputs", "Node_GetInputs", fused)]
    fused_outputs = [api.string("GetValueInfoName", vi) if vi != ffi.NULL else ""
                     for vi in api.array("Node_GetNumOutputs", "Node_GetOutputs", fused)]
    wanted = {i.name for i in session.get_inputs()}
    feeds = [(k, name) for k, name in enumerate(fused_inputs) if name in wanted]
    missing = wanted - {name for _, name in feeds}
    if missing:
        raise ModelError(f"the fused node does not provide the group's input(s) "
                         f"{sorted(missing)}")
    have = {o.name for o in session.get_outputs()}
    absent = [o for o in fused_outputs if o not in have]
    if absent:
        raise ModelError(f"the group's NPU graph does not compute {absent}")
    return CompiledGroup(session, npu, feeds, fused_outputs)


_NP_OF_ONNX = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.UINT8: np.uint8,
               onnx.TensorProto.INT8: np.int8, onnx.TensorProto.INT16: np.int16,
               onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT32: np.int32,
               onnx.TensorProto.INT64: np.int64, onnx.TensorProto.BOOL: np.bool_,
               onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16: np.float16}


def compute(group: CompiledGroup, api: Api, ctx: Any) -> None:
    ffi = api.ffi
    feed = {}
    for k, name in group.feeds:
        value = ffi.new("void **")
        api.call("KernelContext_GetInput", ctx, k, value)
        info = ffi.new("void **")
        api.call("GetTensorTypeAndShape", value[0], info)
        try:
            et, shape = api.tensor_info(info[0])
        finally:
            api.fn("ReleaseTensorTypeAndShapeInfo")(info[0])
        if et not in _NP_OF_ONNX:
            raise ModelError(f"input {name!r} has ONNX element type {et}, which ortnpu does "
                             "not take")
        dtype = np.dtype(_NP_OF_ONNX[et])
        dims = tuple(int(d) for d in shape)
        n = int(np.prod(dims)) if dims else 1
        if n:
            data = ffi.new("void **")
            api.call("GetTensorMutableData", value[0], data)
            arr = np.frombuffer(ffi.buffer(data[0], n * dtype.itemsize), dtype).reshape(dims)
        else:
            arr = np.zeros(dims, dtype)
        feed[name] = arr
    results = group.session.run(group.outputs, feed)
    for k, y in enumerate(results):
        y = np.ascontiguousarray(y)
        out = ffi.new("void **")
        api.call("KernelContext_GetOutput", ctx, k, ffi.new("int64_t[]", list(y.shape) or [1]),
                 y.ndim, out)
        if y.size:
            data = ffi.new("void **")
            api.call("GetTensorMutableData", out[0], data)
            ffi.memmove(data[0], ffi.from_buffer(y), y.nbytes)


def _install() -> None:
    """Define the cffi callbacks of ep_plugin.c (once, when the C module is there)."""
    from ortnpu.domain import native

    ffi, lib = native._native.ffi, native._native.lib
    apis: dict[int, Api] = {}

    def api_of(ptr: Any, slots: dict[str, int] = API, status: Any = None) -> Api:
        key = int(ffi.cast("uintptr_t", ptr))
        a = apis.get(key)
        if a is None:
            a = apis[key] = Api(ptr, slots, status)
        return a

    def guarded(work: Any, err: Any, err_size: int, failed: int = 0) -> Any:
        """Run ``work()``; on any exception write its message for the OrtStatus."""
        try:
            return work()
        except BaseException as exc:  # nothing may cross into onnxruntime
            with contextlib.suppress(BaseException):
                _write(ffi, err, err_size, _message(exc))
            return failed

    def new_ep(api: Any, options: Any) -> int:
        ep = create(api_of(api), options)
        with _lock:
            ident = next(_ids)
            _eps[ident] = ep
        return ident

    def new_group(ident: int, api: Any, graph: Any, fused: Any) -> int:
        group = compile_group(_eps[ident], api_of(api), graph, fused)
        with _lock:
            gid = next(_ids)
            _groups[gid] = group
            _eps[ident].compiled.append(gid)
        return gid

    def claim(ident: int, api: Any, ep_api: Any, graph: Any, support: Any) -> int:
        a = api_of(api)
        capability(_eps[ident], a, api_of(ep_api, EP_API, a), graph, support)
        return 1

    def run(gid: int, api: Any, ctx: Any) -> int:
        compute(_groups[gid], api_of(api), ctx)
        return 1

    @ffi.def_extern()
    def ortnpu_py_ep_create(api: Any, options: Any, err: Any, err_size: int) -> int:
        return guarded(lambda: new_ep(api, options), err, err_size)

    @ffi.def_extern()
    def ortnpu_py_ep_release(ident: int) -> None:
        with contextlib.suppress(BaseException), _lock:
            _eps.pop(ident, None)

    @ffi.def_extern()
    def ortnpu_py_ep_capability(ident: int, api: Any, ep_api: Any, graph: Any, support: Any,
                                err: Any, err_size: int) -> int:
        return guarded(lambda: claim(ident, api, ep_api, graph, support), err, err_size)

    @ffi.def_extern()
    def ortnpu_py_ep_compile(ident: int, api: Any, graph: Any, fused: Any, err: Any,
                             err_size: int) -> int:
        return guarded(lambda: new_group(ident, api, graph, fused), err, err_size)

    @ffi.def_extern()
    def ortnpu_py_ep_compute(gid: int, api: Any, ctx: Any, err: Any, err_size: int) -> int:
        return guarded(lambda: run(gid, api, ctx), err, err_size)

    @ffi.def_extern()
    def ortnpu_py_ep_release_node(gid: int) -> None:
        with contextlib.suppress(BaseException), _lock:
            _groups.pop(gid, None)

    # EPs and nodes released while the interpreter finalizes must not call back into it
    atexit.register(lib.ortnpu_ep_python_gone)


_installed = False


def install() -> None:
    """Install the callbacks once per process."""
    global _installed
    with _lock:
        if not _installed:
            _install()
            _installed = True


__all__ = ["EP_NAME", "OPTIONS", "RECENT_PLANS", "install"]
