"""How one op of the ``com.ortnpu`` domain is described: inputs, attributes, reference kernel.

Each op is one :class:`OpSpec` subclass (see ``ops_*.py``). From that single description come
the onnxruntime registration (``registry.py``), the node builder used by the quantizer
(:func:`make_node`), the input validation that protects the C kernels, the conformance vectors and
the op reference in docs/op-domain.md. No op is described twice.

Type rule. onnxruntime-extensions can infer an output type only from a single dynamically typed
input, and ortnpu ops often change type (int8 in, uint8 out after a ReLU on N2D2; Requantize to
int16). So every op is registered once per output element type, with the type as a suffix of the
op type: ``Conv_i8``, ``Conv_u8``, ``Conv_i16``. Activation inputs are dynamically typed (any of
int8, uint8, int16); parameter inputs have fixed types. Ops with a variable number of inputs
(Concat) are registered per count: ``Concat3_i8``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper

from ortnpu.errors import KernelError

DOMAIN = "com.ortnpu"
DOMAIN_VERSION = 1

#: Activation element types: suffix -> numpy dtype.
ACTIVATION_TYPES: dict[str, np.dtype] = {
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16),
}
SUFFIX_OF_DTYPE = {v: k for k, v in ACTIVATION_TYPES.items()}
ONNX_OF_DTYPE = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int16): TensorProto.INT16,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.float32): TensorProto.FLOAT,
}
MAX_VARIADIC = 8

#: Kinds of an input: "act" is any activation type; the others are fixed numpy dtypes.
INPUT_KINDS = ("act", "int8", "int32", "int64")


@dataclass(frozen=True)
class Input:
    """One input of an op."""

    name: str
    kind: str
    doc: str


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: scalar int, float or string, always present on the node."""

    name: str
    kind: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    lo: int | None = None
    hi: int | None = None


#: Attributes every op has, appended to its own.
COMMON_ATTRS = (
    Attr("node_name", str, "", "name of the node, repeated so that kernel errors can name it"),
)


class OpSpec:
    """Base of every op of the domain.

    Subclasses set :attr:`name`, :attr:`doc`, :attr:`inputs`, :attr:`attrs` and implement
    :meth:`check` (shape and range validation, raising :class:`KernelError` with a reason) and
    :meth:`reference` (the plain numpy kernel that defines the op's exact results).
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    #: the TFLite kernel this op reproduces and the detail that decides its bits
    tflite: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]]
    attrs: ClassVar[tuple[Attr, ...]] = ()
    #: For ops with a variable count of activation inputs, the allowed counts.
    variadic: ClassVar[tuple[int, ...] | None] = None
    #: True when the output dtype must equal the (first) activation input's dtype.
    same_type: ClassVar[bool] = False

    # ----------------------------------------------------------------- naming
    @classmethod
    def op_types(cls) -> list[tuple[str, np.dtype, int]]:
        """Every registered op type: ``(op_type, output dtype, activation input count)``."""
        counts = cls.variadic or (None,)
        result = []
        for count in counts:
            for suffix, dtype in ACTIVATION_TYPES.items():
                base = cls.name if count is None else f"{cls.name}{count}"
                result.append((f"{base}_{suffix}", dtype, count or 0))
        return result

    @classmethod
    def input_kinds(cls, count: int = 0) -> list[str]:
        """Kinds of the inputs of one registration (variadic first input repeated)."""
        kinds = [i.kind for i in cls.inputs]
        if cls.variadic:
            kinds = [kinds[0]] * count + kinds[1:]
        return kinds

    @classmethod
    def act_types(cls, count: int, out_dtype: np.dtype) -> list[tuple[np.dtype, ...]]:
        """For one registration, the element types each activation input may have (in input
        order): every activation type, or only the output's where the op requires that.

        The registry declares one onnxruntime overload per combination, so onnxruntime refuses
        any other element type (float16, bfloat16, float8, int4, ...) when it loads the model
        instead of aborting when it runs it (see ``registry.py``).
        """
        kinds = cls.input_kinds(count)
        every = tuple(ACTIVATION_TYPES.values())
        types = [every for k in kinds if k == "act"]
        if cls.same_type and types:
            types[0] = (np.dtype(out_dtype),)
        return types

    # ------------------------------------------------------------- attributes
    @classmethod
    def full_attrs(cls, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Fill defaults and validate attribute values; unknown names are an error."""
        known = {a.name: a for a in cls.all_attrs()}
        for key in given:
            if key not in known:
                raise KernelError(f"{where}{cls.name}: unknown attribute {key!r}; "
                                  f"known: {', '.join(known) or 'none'}")
        out: dict[str, Any] = {}
        for a in cls.all_attrs():
            value = given.get(a.name, a.default)
            if value is None:
                raise KernelError(f"{where}{cls.name}: attribute {a.name!r} is required")
            if isinstance(value, bytes):
                value = value.decode()
            try:
                value = a.kind(value)
            except (TypeError, ValueError):
                raise KernelError(f"{where}{cls.name}: attribute {a.name!r} must be "
                                  f"{a.kind.__name__}, got {value!r}") from None
            if a.choices is not None and value not in a.choices:
                raise KernelError(f"{where}{cls.name}: attribute {a.name!r} = {value!r} is "
                                  f"not one of {', '.join(map(str, a.choices))}")
            if (a.lo is not None and value < a.lo) or (a.hi is not None and value > a.hi):
                raise KernelError(f"{where}{cls.name}: attribute {a.name!r} = {value} is "
                                  f"outside [{a.lo}, {a.hi}]")
            out[a.name] = value
        return out

    @classmethod
    def all_attrs(cls) -> tuple[Attr, ...]:
        """The op's attributes followed by :data:`COMMON_ATTRS`."""
        return cls.attrs + COMMON_ATTRS

    # --------------------------------------------------------------- running
    @classmethod
    def validate(cls, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                 out_dtype: np.dtype, where: str = "") -> None:
        """Check types, then the op's own :meth:`check`; raise :class:`KernelError`."""
        count = len(arrays) - (len(cls.inputs) - 1) if cls.variadic else 0
        kinds = cls.input_kinds(count)
        if len(arrays) != len(kinds):
            raise KernelError(f"{where}{cls.name}: expected {len(kinds)} inputs, "
                              f"got {len(arrays)}")
        names = cls.input_names(count)
        for arr, kind, name in zip(arrays, kinds, names, strict=True):
            if kind == "act":
                if arr.dtype not in SUFFIX_OF_DTYPE:
                    raise KernelError(f"{where}{cls.name}: input {name!r} has type {arr.dtype}; "
                                      "activations must be int8, uint8 or int16")
            elif arr.dtype != np.dtype(kind):
                raise KernelError(f"{where}{cls.name}: input {name!r} has type {arr.dtype}, "
                                  f"expected {kind}")
        if cls.same_type and arrays[0].dtype != out_dtype:
            raise KernelError(f"{where}{cls.name}: output type {out_dtype} must equal the input "
                              f"type {arrays[0].dtype}")
        cls.check(arrays, attrs, out_dtype, where)

    @classmethod
    def input_names(cls, count: int = 0) -> list[str]:
        """Names of the inputs of one registration."""
        names = [i.name for i in cls.inputs]
        if cls.variadic:
            names = [f"{names[0]}{k}" for k in range(count)] + names[1:]
        return names

    @classmethod
    def check(cls, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any], out_dtype: np.dtype,
              where: str) -> None:
        """Op-specific validation of shapes and parameter ranges."""

    @classmethod
    def reference(cls, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                  out_dtype: np.dtype) -> np.ndarray:
        """The numpy reference kernel; inputs are already validated."""
        raise NotImplementedError

    @classmethod
    def run_reference(cls, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any] | None = None,
                      out_dtype: np.dtype | str | type | None = None) -> np.ndarray:
        """Validate then run the reference kernel (convenient in tests and tools)."""
        arrays = [np.asarray(a) for a in arrays]
        out = np.dtype(out_dtype) if out_dtype is not None else arrays[0].dtype
        full = cls.full_attrs(attrs or {})
        cls.validate(arrays, full, out)
        return cls.reference(arrays, full, out)


def parse_op_type(op_type: str) -> tuple[str, int, np.dtype]:
    """Split ``Concat3_i8`` into ``("Concat", 3, int8)``, ``Conv_u8`` into ``("Conv", 0, uint8)``.
    """
    base, _, suffix = op_type.rpartition("_")
    if suffix not in ACTIVATION_TYPES or not base:
        raise KernelError(f"{op_type!r} is not an op type of the {DOMAIN} domain")
    count = 0
    stripped = base.rstrip("0123456789")
    if stripped != base:
        count = int(base[len(stripped):])
        base = stripped
    return base, count, ACTIVATION_TYPES[suffix]


def op_type_name(base: str, out_dtype: np.dtype | str | type, count: int = 0) -> str:
    """Inverse of :func:`parse_op_type`."""
    suffix = SUFFIX_OF_DTYPE[np.dtype(out_dtype)]
    return f"{base}{count if count else ''}_{suffix}"


def make_node(spec: type[OpSpec], inputs: Sequence[str], output: str, out_dtype: np.dtype | str,
              name: str, **attrs: Any) -> onnx.NodeProto:
    """Build a validated ``com.ortnpu`` node with every attribute present (defaults filled)."""
    full = spec.full_attrs({"node_name": name, **attrs}, where=f"node {name!r}: ")
    count = len(inputs) - (len(spec.inputs) - 1) if spec.variadic else 0
    if spec.variadic and count not in spec.variadic:
        raise KernelError(f"node {name!r}: {spec.name} takes {min(spec.variadic)} to "
                          f"{max(spec.variadic)} activation inputs, got {count}")
    op_type = op_type_name(spec.name, out_dtype, count)
    return helper.make_node(op_type, list(inputs), [output], name=name, domain=DOMAIN, **full)
