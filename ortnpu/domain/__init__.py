"""The ``com.ortnpu`` op domain: one table of op specs drives schema, kernels and registration."""

from __future__ import annotations

from ortnpu.domain.ops_elementwise import (
    Add,
    Lut,
    Maximum,
    Minimum,
    Mul,
    Requantize,
    SquaredDifference,
    Sub,
)
from ortnpu.domain.ops_layout import Concat, Flatten, Pad, Reshape, Slice, Transpose
from ortnpu.domain.ops_linear import Conv, FullyConnected, MatMul
from ortnpu.domain.ops_pool import AveragePool, GlobalAveragePool, MaxPool
from ortnpu.domain.ops_resize import Resize
from ortnpu.domain.ops_softmax import Softmax
from ortnpu.domain.spec import (
    DOMAIN,
    DOMAIN_VERSION,
    OpSpec,
    make_node,
    op_type_name,
    parse_op_type,
)
from ortnpu.errors import KernelError

#: The table of the domain, in documentation order.
OPS: tuple[type[OpSpec], ...] = (
    Conv, FullyConnected, MatMul, Add, Mul, Requantize, Lut,
    MaxPool, AveragePool, GlobalAveragePool, Concat, Reshape, Flatten, Transpose, Pad,
    Slice, Sub, Maximum, Minimum,
    Resize, Softmax, SquaredDifference,
)
OPS_BY_NAME: dict[str, type[OpSpec]] = {op.name: op for op in OPS}


def spec_of(op_type: str) -> type[OpSpec]:
    """The spec of a registered op type such as ``Conv_i8`` or ``Concat3_u8``."""
    base, _, _ = parse_op_type(op_type)
    if base not in OPS_BY_NAME:
        raise KernelError(f"{op_type!r} is not an op of the {DOMAIN} domain")
    return OPS_BY_NAME[base]


__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "OPS",
    "OPS_BY_NAME",
    "OpSpec",
    "make_node",
    "op_type_name",
    "parse_op_type",
    "spec_of",
]
