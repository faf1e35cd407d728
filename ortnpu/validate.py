"""Model loading and validation at the edges of ortnpu.

Every public entry point that takes a model file (the CLI, :class:`ortnpu.InferenceSession`)
goes through :func:`load_model`, so a bad file fails *here*, with a :class:`ModelError` that
names the file, the node or the tensor and says what to do, instead of deep inside onnx,
onnxruntime or a kernel. The checks are structural and cheap (no shape inference, no session),
except a one-off probe of what the installed onnxruntime accepts, made only when a model asks
for an IR or opset version newer than a known-good one.

What is checked: the file (missing, a directory, empty, unreadable, not protobuf, another
format), the IR version and the opsets (against the installed onnx and onnxruntime), the graph
(every node input produced by a node, a graph input or an initializer; every graph output
produced; no tensor produced twice), initializers (data size matches the shape, external data
present), ``com.ortnpu`` nodes (known op type, input count, attribute names, types and ranges)
and, on request, fully static input shapes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ortnpu.errors import KernelError, ModelError, OrtNpuError, first_line
from ortnpu.onnx_types import dim_size, np_dtype, type_name

#: Oldest IR version accepted (ONNX IR 3 introduced opset imports).
MIN_IR_VERSION = 3
#: Oldest default-domain opset accepted: onnxruntime implements ai.onnx from opset 7.
MIN_OPSET = 7
#: Versions known to work with every onnxruntime ortnpu supports (no probe needed up to here).
_KNOWN_GOOD_IR = 10
_KNOWN_GOOD_OPSET = 21

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.training",
                     "ai.onnx.preview.training", "com.microsoft.nchwc", "org.pytorch.aten")

#: Other file formats recognised by their first bytes, to say what the file is.
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint or .npz?); export it to ONNX first"),
    (b"\x89HDF", "an HDF5 file (a Keras model?); convert it to ONNX first (tf2onnx)"),
    (b"\x93NUMPY", "a numpy .npy array, not a model"),
    (b"ir_version", "ONNX text format; load it with onnx.parser or save it as binary"),
    (b"<", "an XML or HTML file, not an ONNX model"),
    (b"{", "a JSON file, not an ONNX model"),
    (b"\x89PNG", "a PNG image, not a model"),
    (b"\xff\xd8\xff", "a JPEG image, not a model"),
)


def load_model(model: onnx.ModelProto | str | os.PathLike | bytes, *,
               need_static_shapes: bool = False, check_npu: bool = True) -> onnx.ModelProto:
    """Load (when given a path or bytes) and validate a model; raise :class:`ModelError`.

    Args:
        model: a ``ModelProto`` (returned as is after the checks, or as a copy without the
            inputs that are initializers: :func:`initializers_as_constants`), serialized
            bytes or a path.
        need_static_shapes: also require every graph input to have a fully known shape (the
            quantizer's and estimator's needs); the error says which dimension is dynamic.
        check_npu: validate ``com.ortnpu`` nodes (op type, inputs, attributes).

    Raises:
        ModelError: the file or the graph is unusable; the message says where and what to do.
    """
    if isinstance(model, onnx.ModelProto):
        proto, origin = model, model.graph.name or "<model>"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto, origin = _parse(bytes(model), "<bytes>"), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        origin = str(path)
        proto = _parse(_read(path), origin)
        _load_external(proto, path, origin)
    else:
        raise ModelError(f"expected an onnx.ModelProto, bytes or a path to a .onnx file, got "
                         f"{type(model).__name__}")
    check_model(proto, origin, need_static_shapes=need_static_shapes, check_npu=check_npu)
    return initializers_as_constants(proto)


#: The first IR version whose initializers need not be graph inputs (constants, not defaults).
MIN_IR_CONSTANT_INITIALIZERS = 4


def initializers_as_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the graph inputs that are also initializers (a copy when any).

    ONNX lets a graph list its initializers as inputs (default values a caller may override;
    PyTorch's ``keep_initializers_as_inputs=True``). ortnpu treats them as the constants they
    are, everywhere: the passes fold them, the quantizer bakes them into integer weights and
    fusion packs them, so an NPU graph that still declared them as inputs would ask for inputs
    it no longer has. :func:`load_model`, :func:`ortnpu.passes.optimize`, the quantizer and the
    exporters all call this; overriding such an initializer at run time is not supported.

    IR version 3 required every initializer to be a graph input, so the result is at least
    IR version 4 (:data:`MIN_IR_CONSTANT_INITIALIZERS`): without that, the initializers dropped
    here and those the passes fold out of nodes would be undefined tensors to onnx's checker
    and version converter ("Input conv1_w_0 is undefined", the onnx package's opset-9 models).
    """
    inits = {t.name for t in model.graph.initializer}
    as_inputs = any(vi.name in inits for vi in model.graph.input)
    old_ir = 0 < model.ir_version < MIN_IR_CONSTANT_INITIALIZERS  # 0: unset, refused elsewhere
    if not as_inputs and not old_ir:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if old_ir:
        out.ir_version = MIN_IR_CONSTANT_INITIALIZERS
    keep = [vi for vi in out.graph.input if vi.name not in inits]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    return out


def check_model(model: onnx.ModelProto, origin: str = "<model>", *,
                need_static_shapes: bool = False, check_npu: bool = True) -> None:
    """Validate a loaded model; see :func:`load_model` for what is checked."""
    _check_text(model, origin)
    _check_versions(model, origin)
    _check_graph(model.graph, origin, outer=(), top=True)
    _check_initializers(model.graph, origin)
    if need_static_shapes:
        check_static_inputs(model, origin)
    if check_npu:
        check_npu_nodes(model, origin)


# ----------------------------------------------------------------------------- the file
def _read(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"{path}: cannot load the model: cannot read the model file (no such "
                         "file); check the path")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory; give the path of a .onnx file inside it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot load the model: cannot read the model file "
                         f"({exc.strerror or exc})") from None
    if not data:
        raise ModelError(f"{path}: the file is empty (an interrupted download or save?); "
                         "write the model again")
    return data


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    head = data[:64].lstrip()
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise ModelError(f"{origin}: not an ONNX model: this looks like {what}")
    if data[4:8] == b"TFL3":
        raise ModelError(f"{origin}: not an ONNX model: this is a TFLite flatbuffer; convert it "
                         "with tflite2onnx or tf2onnx first")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ModelError(f"{origin}: onnxruntime cannot load the model: not a readable ONNX "
                         f"model (protobuf parse failed: {first_line(exc)}); the file may be "
                         "truncated or of another format") from None
    if proto.ir_version == 0 and not proto.graph.node and not proto.opset_import:
        raise ModelError(f"{origin}: not an ONNX model (no IR version, no opset, no nodes); the "
                         "file may be truncated or of another format")
    return proto


def _load_external(model: onnx.ModelProto, path: Path, origin: str) -> None:
    """Load external tensor data next to the model file, naming the tensor and the file."""
    from onnx import external_data_helper as ext

    external = [t for t in ext._get_all_tensors(model) if ext.uses_external_data(t)]
    base = path.resolve().parent
    for tensor in external:
        try:  # a bad offset/length (not a number, negative) or an unusable path
            info = ext.ExternalDataInfo(tensor)
            where = base / info.location
            present = where.is_file()
        except (ValueError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
            raise ModelError(f"{origin}: tensor {tensor.name!r} has unusable external data "
                             f"fields ({why}); export the model again") from None
        if not present:
            raise ModelError(f"{origin}: tensor {tensor.name!r} keeps its data in external file "
                             f"{info.location!r}, which is missing next to the model; copy it "
                             f"to {base}")
        try:
            ext.load_external_data_for_tensor(tensor, str(base))
        except Exception as exc:
            raise ModelError(f"{origin}: cannot load the external data of tensor "
                             f"{tensor.name!r} from {info.location!r}: {first_line(exc)}"
                             ) from None
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


# -------------------------------------------------------------------------------- text
def _check_text(model: onnx.ModelProto, origin: str) -> None:
    """Names, op types and domains are text: protobuf returns bytes where they are not UTF-8."""

    def check(values: Iterable[object], what: str) -> None:
        for v in values:
            if not isinstance(v, str):
                raise ModelError(f"{origin}: {what} {v!r} is not valid UTF-8 text; the file is "
                                 "corrupt: export the model again")

    check((op.domain for op in model.opset_import), "opset domain")

    def walk(graph: onnx.GraphProto) -> None:
        check([graph.name], "graph name")
        check((v.name for v in [*graph.input, *graph.output, *graph.value_info]), "tensor name")
        check((t.name for t in graph.initializer), "initializer name")
        for node in graph.node:
            check([node.name, node.op_type, node.domain], "node field")
            check([*node.input, *node.output], f"tensor name of node {node.name!r}")
            check((a.name for a in node.attribute), f"attribute name of node {node.name!r}")
            for attr in node.attribute:
                for sub in _subgraphs(attr):
                    walk(sub)

    walk(model.graph)


# ------------------------------------------------------------------------------ versions
def _check_versions(model: onnx.ModelProto, origin: str) -> None:
    ir = model.ir_version
    if ir == 0:
        raise ModelError(f"{origin}: the model has no IR version; set model.ir_version (e.g. "
                         f"{onnx.IR_VERSION}) or re-export it")
    if ir < MIN_IR_VERSION:
        raise ModelError(f"{origin}: IR version {ir} is too old (ortnpu needs at least "
                         f"{MIN_IR_VERSION}); upgrade it with onnx.version_converter")
    ir_max = max_ir_version(ir)
    if ir > ir_max:
        raise ModelError(f"{origin}: IR version {ir} is newer than the installed onnx "
                         f"{onnx.__version__} / onnxruntime support (at most {ir_max}); upgrade "
                         "them or export the model with an older IR version")
    seen: dict[str, int] = {}
    for op in model.opset_import:
        domain = "" if op.domain == "ai.onnx" else op.domain
        if domain in seen and seen[domain] != op.version:
            raise ModelError(f"{origin}: domain {op.domain or 'ai.onnx'!r} is imported twice "
                             f"with versions {seen[domain]} and {op.version}; keep one")
        seen[domain] = op.version
    default = seen.get("")
    if default is not None:
        if default < MIN_OPSET:
            raise ModelError(f"{origin}: opset {default} is too old (onnxruntime needs at "
                             f"least {MIN_OPSET}); convert it with "
                             "onnx.version_converter.convert_version(model, 13)")
        top = max_opset(default)
        if default > top:
            raise ModelError(f"{origin}: opset {default} is newer than the installed onnx "
                             f"{onnx.__version__} / onnxruntime support (at most {top}); upgrade "
                             f"them or convert the model to opset {top}")
    from ortnpu.domain import DOMAIN, DOMAIN_VERSION

    if DOMAIN in seen and seen[DOMAIN] != DOMAIN_VERSION:
        raise ModelError(f"{origin}: the model imports {DOMAIN} version {seen[DOMAIN]}; this "
                         f"ortnpu implements version {DOMAIN_VERSION}")
    local = {f.domain for f in model.functions}
    for node in all_nodes(model.graph):
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in seen and domain not in local:
            raise ModelError(f"{origin}: node {_node_name(node)} uses domain "
                             f"{node.domain or 'ai.onnx'!r}, which the model does not import; "
                             "add it to opset_import")


def _probe(ir: int, opset: int) -> bool:
    """True when the installed onnxruntime loads a one-node model of these versions."""
    import onnxruntime as ort

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = ir
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


@functools.cache
def max_ir_version(asked: int = 0) -> int:
    """The newest IR version both onnx and onnxruntime accept (probed only above known-good)."""
    top = onnx.IR_VERSION
    if asked <= min(top, _KNOWN_GOOD_IR):
        return top
    for ir in range(min(asked, top), _KNOWN_GOOD_IR, -1):
        if _probe(ir, _KNOWN_GOOD_OPSET):
            return ir
    return _KNOWN_GOOD_IR


@functools.cache
def max_opset(asked: int = 0) -> int:
    """The newest ai.onnx opset both onnx and onnxruntime accept (probed above known-good)."""
    top = onnx.defs.onnx_opset_version()
    if asked <= min(top, _KNOWN_GOOD_OPSET):
        return top
    for opset in range(min(asked, top), _KNOWN_GOOD_OPSET, -1):
        if _probe(_KNOWN_GOOD_IR, opset):
            return opset
    return _KNOWN_GOOD_OPSET


# --------------------------------------------------------------------------------- graph
def _node_name(node: onnx.NodeProto) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"<unnamed {node.op_type}>"


def all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    """The nodes of ``graph`` and of every subgraph inside it (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                yield from all_nodes(sub)


def _subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _check_graph(graph: onnx.GraphProto, origin: str, outer: Iterable[str], top: bool) -> None:
    """Every tensor a node reads exists; every output is produced; nothing is produced twice."""
    where = origin if top else f"{origin}: subgraph {graph.name!r}"
    if top and not graph.node and not graph.output:
        raise ModelError(f"{origin}: the graph has no nodes and no outputs; is this the model "
                         "you meant?")
    known = set(outer)
    inits = {t.name for t in graph.initializer} | {t.values.name for t in
                                                   graph.sparse_initializer}
    known |= inits
    for vi in graph.input:
        known.add(vi.name)
    producers: dict[str, str] = {}
    # ONNX requires topological order, but onnxruntime sorts; check existence, not order.
    for node in graph.node:
        for out in node.output:
            if not out:
                continue
            if out in producers:
                raise ModelError(f"{where}: tensor {out!r} is produced twice (by node "
                                 f"{producers[out]} and node {_node_name(node)}); every tensor "
                                 "needs exactly one producer")
            if out in inits:
                raise ModelError(f"{where}: node {_node_name(node)} writes tensor {out!r}, which "
                                 "is also an initializer; rename one of them")
            producers[out] = _node_name(node)
    available = known | set(producers)
    for node in graph.node:
        for name in node.input:
            if name and name not in available:
                raise ModelError(f"{where}: node {_node_name(node)} reads tensor {name!r}, which "
                                 "no node, graph input or initializer provides (a missing "
                                 "initializer or a dangling input); add it or fix the name")
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                _check_graph(sub, origin, available, top=False)
    if top:
        for vi in graph.output:
            if vi.name not in available:
                raise ModelError(f"{where}: graph output {vi.name!r} is not produced by any node "
                                 "(the file may be truncated, or the output was renamed)")
        names = [vi.name for vi in graph.input]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ModelError(f"{where}: graph input(s) {dup} are declared twice")


def _check_initializers(graph: onnx.GraphProto, origin: str) -> None:
    """Initializer data sizes match their shapes (a truncated file shows up here)."""
    for t in graph.initializer:
        if any(d < 0 for d in t.dims):
            raise ModelError(f"{origin}: initializer {t.name!r} has a negative dimension "
                             f"{list(t.dims)}")
        if t.data_location == TensorProto.EXTERNAL:
            continue
        count = 1
        for d in t.dims:
            count *= d
        if t.raw_data:
            size = _itemsize(t.data_type)
            if size and len(t.raw_data) != count * size:
                raise ModelError(f"{origin}: initializer {t.name!r} holds {len(t.raw_data)} "
                                 f"bytes but its shape {list(t.dims)} needs {count * size}; the "
                                 "file is truncated or corrupt: export the model again")
            continue
        field = {TensorProto.FLOAT: "float_data", TensorProto.INT32: "int32_data",
                 TensorProto.INT64: "int64_data", TensorProto.DOUBLE: "double_data",
                 TensorProto.INT8: "int32_data", TensorProto.UINT8: "int32_data",
                 TensorProto.INT16: "int32_data"}.get(t.data_type)
        if field is not None and len(getattr(t, field)) != count:
            raise ModelError(f"{origin}: initializer {t.name!r} holds "
                             f"{len(getattr(t, field))} values but its shape {list(t.dims)} "
                             f"needs {count}; export the model again")


def _itemsize(data_type: int) -> int:
    """Bytes per element of a fixed-size type; 0 for strings and sub-byte types."""
    np_type = np_dtype(data_type)
    if np_type is None:
        return 0
    if data_type in (TensorProto.STRING, TensorProto.UNDEFINED) or np_type.kind in "OSU":
        return 0
    name = type_name(data_type)
    if any(tag in name for tag in ("INT4", "FLOAT4", "INT2")):
        return 0
    return int(np_type.itemsize)


def check_static_inputs(model: onnx.ModelProto, origin: str = "<model>") -> None:
    """Every graph input (not an initializer) has a type and a fully known shape."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type == 0:
            raise ModelError(f"{origin}: input {vi.name!r} has no tensor element type")
        if not tt.HasField("shape"):
            raise ModelError(f"{origin}: input {vi.name!r} has no shape; give one, e.g. "
                             f"input_shapes={{{vi.name!r}: [1, 3, 224, 224]}} (CLI: "
                             f"--input-shape {vi.name}=1,3,224,224)")
        for k, dim in enumerate(tt.shape.dim):
            if dim_size(dim) is None:
                label = dim.dim_param or "?"
                raise ModelError(f"{origin}: input {vi.name!r} dimension {k} is dynamic "
                                 f"({label!r}) but this step needs fixed shapes; fix it with "
                                 f"input_shapes={{{vi.name!r}: [...]}} (CLI: --input-shape "
                                 f"{vi.name}=...)")


# ----------------------------------------------------------------------------- NPU nodes
def check_npu_nodes(model: onnx.ModelProto, origin: str = "<model>", *,
                    rescale_values: bool = False) -> None:
    """Static checks of every ``com.ortnpu`` node: op type, input count, attributes.

    The shape- and value-dependent checks run again before every kernel call
    (``OpSpec.validate``); these catch at load time what would otherwise make onnxruntime
    refuse the model with a terse message. ``rescale_values`` also checks the values of
    constant multipliers and shifts (the exporters need that: they never run a kernel; a
    session checks them before each kernel call).
    """
    from ortnpu.domain import DOMAIN, spec_of
    from ortnpu.domain.spec import parse_op_type
    from ortnpu.runtime.native_program import NATIVE_DOMAIN as _NATIVE_DOMAIN

    inits = {t.name: t for t in model.graph.initializer}
    elem_types = _element_types(model.graph)
    for node in all_nodes(model.graph):
        if node.domain == _NATIVE_DOMAIN:
            raise ModelError(f"{origin}: node {_node_name(node)} is a compiled program of a "
                             f"running ortnpu session ({_NATIVE_DOMAIN}), valid only inside "
                             "that session: a graph saved with SessionOptions."
                             "optimized_model_filepath cannot be loaded again; load the NPU "
                             "graph itself")
        if node.domain != DOMAIN:
            continue
        where = f"{origin}: node {_node_name(node)}"
        try:
            spec = spec_of(node.op_type)
            _, count, out_dtype = parse_op_type(node.op_type)
        except OrtNpuError as exc:
            raise ModelError(f"{where}: {exc}; the {DOMAIN} ops are listed in "
                             "docs/op-domain.md") from None
        if spec.variadic and count not in spec.variadic:
            raise ModelError(f"{where}: {spec.name} is registered for "
                             f"{min(spec.variadic)}..{max(spec.variadic)} inputs, not {count}")
        if not spec.variadic and count:
            raise ModelError(f"{where}: {spec.name} takes no input count in its op type")
        kinds = spec.input_kinds(count)
        if len(node.input) != len(kinds) or any(not n for n in node.input):
            raise ModelError(f"{where}: needs {len(kinds)} inputs "
                             f"({', '.join(spec.input_names(count))}), got {len(node.input)}")
        if len(node.output) != 1:
            raise ModelError(f"{where}: has {len(node.output)} outputs; {DOMAIN} ops have one")
        for name, kind in zip(node.input, kinds, strict=True):
            init = inits.get(name)
            if init is not None and kind != "act":
                want = helper.np_dtype_to_tensor_dtype(np.dtype(kind))
                if init.data_type != want:
                    raise ModelError(f"{where}: input {name!r} is "
                                     f"{type_name(init.data_type)}, the op needs {kind}")
        _check_act_types(node, spec, count, out_dtype, elem_types, where)
        attrs = _check_npu_attrs(node, spec, where)
        _check_npu_constants(node, spec, count, inits, attrs, where, rescale_values)


def _element_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element types of the tensors whose type the graph states without inference: graph inputs
    and outputs, value_info, initializers, and the outputs of Cast and ``com.ortnpu`` nodes."""
    from ortnpu.domain import DOMAIN
    from ortnpu.domain.spec import ACTIVATION_TYPES, ONNX_OF_DTYPE

    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    for node in graph.node:
        if not node.output:
            continue
        if node.domain == DOMAIN:
            suffix = node.op_type.rpartition("_")[2]
            if suffix in ACTIVATION_TYPES:
                types[node.output[0]] = ONNX_OF_DTYPE[ACTIVATION_TYPES[suffix]]
        elif node.op_type == "Cast" and node.domain in ("", "ai.onnx"):
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            if to:
                types[node.output[0]] = to
    return types


def _check_act_types(node: onnx.NodeProto, spec: type, count: int, out_dtype: np.dtype,
                     elem_types: dict[str, int], where: str) -> None:
    """Activation inputs of a known element type must have one the op takes.

    onnxruntime-extensions aborts the process on element types it cannot hand to Python
    (float16, bfloat16, float8, int4, ...); onnxruntime itself refuses them at load too (the
    registry declares the types each input takes), but this message says what to do.
    """
    acts = [name for name, kind in zip(node.input, spec.input_kinds(count), strict=True)
            if kind == "act"]
    for name, allowed in zip(acts, spec.act_types(count, out_dtype), strict=True):
        code = elem_types.get(name)
        if code is None:
            continue
        dtype = np_dtype(code)
        if dtype is None or dtype not in allowed or _itemsize(code) == 0:
            want = ", ".join(np.dtype(d).name for d in allowed)
            raise ModelError(f"{where}: input {name!r} has element type {type_name(code)}; this "
                             f"input takes {want}; quantize the tensor (QuantizeLinear) or "
                             "cast it to one of these types first")


def _check_npu_constants(node: onnx.NodeProto, spec: type, count: int,
                         inits: dict[str, onnx.TensorProto], attrs: dict[str, object],
                         where: str, values: bool) -> None:
    """Constant per-channel rescale parameters fit the constant weights.

    The kernels check this before every call, but the exporters lower the constants without
    running a kernel, so a model this accepted could fail inside an exporter (a 2-element
    multiplier for 16 channels); both now go through the kernels' own check.
    """
    from onnx import numpy_helper

    from ortnpu.domain.arith import rescale_bounds
    from ortnpu.domain.common import check_rescale_params

    names = spec.input_names(count)
    consts: dict[str, np.ndarray] = {}
    for name, tensor in zip(names, node.input, strict=False):
        if tensor in inits:
            try:
                consts[name] = numpy_helper.to_array(inits[tensor])
            except Exception:  # an unusual encoding: the kernel's own check runs at run time
                return
    mult, shift = consts.get("multiplier"), consts.get("shift")
    if mult is None or shift is None:
        return
    if "w" in names:
        w = consts.get("w")
        if w is None:  # weights computed at run time: the kernel checks
            return
        channels: int | None = int(w.shape[0]) if w.ndim else None
        bias = consts.get("bias")
        if bias is not None and channels is not None and bias.shape != (channels,):
            raise ModelError(f"{where}: bias must have shape [{channels}] (one value per "
                             f"output channel of the weights), got {list(bias.shape)}")
    else:
        channels = max(mult.size, shift.size) if max(mult.size, shift.size) > 1 else None
    rounding = str(attrs["rounding"])
    if not values:  # shapes only: clip the values into range so only the shapes can fail
        (mlo, mhi), (slo, shi) = rescale_bounds(rounding)
        mult, shift = np.clip(mult, mlo, mhi), np.clip(shift, slo, shi)
    try:
        check_rescale_params(mult, shift, channels, rounding, "", spec.name)
    except KernelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _check_npu_attrs(node: onnx.NodeProto, spec: type, where: str) -> dict[str, object]:
    """Every declared attribute present, of its scalar type, inside its range; no others."""
    codes = {int: onnx.AttributeProto.INT, float: onnx.AttributeProto.FLOAT,
             str: onnx.AttributeProto.STRING}
    declared = {a.name: a for a in spec.all_attrs()}
    given: dict[str, object] = {}
    for attr in node.attribute:
        decl = declared.get(attr.name)
        if decl is None:
            raise ModelError(f"{where}: unknown attribute {attr.name!r}; {spec.name} has "
                             f"{', '.join(declared)}")
        if attr.type != codes[decl.kind]:
            raise ModelError(f"{where}: attribute {attr.name!r} must be a scalar "
                             f"{decl.kind.__name__}, got "
                             f"{onnx.AttributeProto.AttributeType.Name(attr.type)}")
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelError(f"{where}: attribute {attr.name!r} is not valid UTF-8 text; "
                                 "the file may be corrupt") from None
        given[attr.name] = value
    missing = [n for n in declared if n not in given]
    if missing:
        raise ModelError(f"{where}: attribute(s) {missing} are missing; onnxruntime needs every "
                         "attribute of a Python custom op on the node (build nodes with "
                         "ortnpu.domain.make_node)")
    try:
        return spec.full_attrs(given)
    except KernelError as exc:
        raise ModelError(f"{where}: {exc}") from None


__all__ = ["check_model", "check_npu_nodes", "check_static_inputs", "initializers_as_constants",
           "load_model",
           "max_ir_version", "max_opset"]
