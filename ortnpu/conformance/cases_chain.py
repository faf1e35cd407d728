"""Multi-op cases: chains of layers that ``ortnpu.InferenceSession`` fuses and compiles.

A single-op case never reaches the compiled C programs (fusion needs two layers), so the kit
also carries chains, in the same layout (``test_chain_<name>/``; the expected outputs are the
numpy references applied node by node). Each chain covers layer types of the C programs and a
way of running them: a fixed batch of several samples (the program runs the whole batch as one
unit), a symbolic batch (one sample at a time, after the compiler proved the layers keep the
samples apart), broadcasts against constants of another rank, a residual Add of two
activations, fan-out, Concat of a tensor with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.conformance.build import clamp_bounds, zero_point
from ortnpu.conformance.case import conformance_model, write_case
from ortnpu.conformance.edges import seeded_rng, with_extremes
from ortnpu.conformance.profile import Profile
from ortnpu.domain import OPS_BY_NAME, make_node
from ortnpu.domain.spec import ONNX_OF_DTYPE


@dataclass(frozen=True)
class Layer:
    """One node of a chain: op, input names (activations and parameters), attributes."""

    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any]
    out_dtype: np.dtype


@dataclass
class ChainCase:
    """A chain of layers with the interface of :class:`~ortnpu.conformance.case.Case`."""

    suite: str
    name: str
    x: np.ndarray
    layers: list[Layer]
    params: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    symbolic_batch: bool = False
    doc: str = ""
    op: str = "chain"
    _values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def dirname(self) -> str:
        """Directory name ``test_chain_<case>``."""
        return f"test_chain_{self.name}"

    def values(self) -> dict[str, np.ndarray]:
        """Every tensor, by the numpy references node by node (computed once)."""
        if not self._values:
            vals: dict[str, np.ndarray] = {"x": self.x, **self.params}
            for layer in self.layers:
                spec = OPS_BY_NAME[layer.op]
                vals[layer.output] = spec.run_reference([vals[n] for n in layer.inputs],
                                                        spec.full_attrs(layer.attrs),
                                                        layer.out_dtype)
            self._values.update(vals)
        return self._values

    def expected(self) -> list[np.ndarray]:
        """The graph outputs."""
        return [self.values()[o] for o in self.outputs]

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph input."""
        return {"x": self.x}

    def _info(self, name: str) -> onnx.ValueInfoProto:
        v = self.values()[name]
        shape: list[Any] = list(v.shape)
        if self.symbolic_batch:
            shape[0] = "N"
        return helper.make_tensor_value_info(name, ONNX_OF_DTYPE[v.dtype], shape)

    def model(self) -> onnx.ModelProto:
        """The NPU graph: one ``com.ortnpu`` node per layer, every tensor typed and shaped."""
        nodes = [make_node(OPS_BY_NAME[layer.op], list(layer.inputs), layer.output,
                           layer.out_dtype, f"{layer.op}_{k}", **layer.attrs)
                 for k, layer in enumerate(self.layers)]
        inner = [layer.output for layer in self.layers if layer.output not in self.outputs]
        graph = helper.make_graph(
            nodes, self.dirname, [self._info("x")], [self._info(o) for o in self.outputs],
            [numpy_helper.from_array(v, k) for k, v in self.params.items()],
            doc_string=self.doc, value_info=[self._info(t) for t in inner])
        return conformance_model(graph, self.suite)

    def write(self, root: Path) -> Path:
        """Write the case under ``root``; return its directory."""
        return write_case(Path(root) / self.dirname, self.model(), [("x", self.x)],
                          list(zip(self.outputs, self.expected(), strict=True)))


class _Chain:
    """Builds a chain layer by layer with the suite's arithmetic."""

    def __init__(self, p: Profile, name: str, x_shape: Sequence[int]) -> None:
        self.p = p
        self.name = name
        self.rng = seeded_rng(p.suite, "chain", name)
        self.x = with_extremes(self.rng, tuple(x_shape), *p.act_range, p.act)
        self.layers: list[Layer] = []
        self.params: dict[str, np.ndarray] = {}
        self.vals: dict[str, np.ndarray] = {"x": self.x}

    def param(self, value: np.ndarray) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = np.ascontiguousarray(value)
        self.vals[name] = self.params[name]
        return name

    def zp(self) -> int:
        return zero_point(self.p, self.rng)

    def scale(self, real: float, n: int = 1) -> tuple[str, str]:
        """Multiplier and shift parameters for ``real`` (per channel: jittered copies)."""
        pairs = [self.p.quantize(real * j) for j in self.rng.uniform(0.8, 1.2, n)]
        return (self.param(np.array([m for m, _ in pairs], np.int32)),
                self.param(np.array([s for _, s in pairs], np.int32)))

    def add(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        out = f"t{len(self.layers)}"
        layer = Layer(op, tuple(inputs), out, dict(attrs), self.p.act)
        spec = OPS_BY_NAME[op]
        self.vals[out] = spec.run_reference([self.vals[n] for n in inputs],
                                            spec.full_attrs(layer.attrs), layer.out_dtype)
        self.layers.append(layer)
        return out

    def spread(self, name: str, zp: int) -> float:
        """Standard deviation of a tensor's values around its zero point (at least 1)."""
        return max(float(np.std(self.vals[name].astype(np.float64) - zp)), 1.0)

    def conv(self, x: str, cout: int, k: int, group: int = 1, stride: int = 1) -> str:
        p, cin = self.p, self.vals[x].shape[1]
        x_zp = self.zp()
        w = self.rng.integers(*p.weight_range, (cout, cin // group, k, k), endpoint=True)
        fan = cin // group * k * k
        real = 48.0 / (self.spread(x, x_zp) * float(np.std(w)) * np.sqrt(fan) + 1.0)
        m, s = self.scale(real, cout if p.per_channel else 1)
        bias = self.rng.integers(-(1 << 12), 1 << 12, cout).astype(np.int64)
        return self.add("Conv", [x, self.param(w.astype(np.int8)), self.param(bias), m, s],
                        x_zp=x_zp, y_zp=self.zp(), group=group, stride_h=stride,
                        stride_w=stride, pad_top=k // 2, pad_left=k // 2, pad_bottom=k // 2,
                        pad_right=k // 2, rounding=p.rounding, acc_bits=p.acc_bits,
                        **clamp_bounds(p, p.act))

    def fc(self, x: str, n: int) -> str:
        p, k = self.p, self.vals[x].shape[-1]
        x_zp = self.zp()
        w = self.rng.integers(*p.weight_range, (n, k), endpoint=True)
        real = 48.0 / (self.spread(x, x_zp) * float(np.std(w)) * np.sqrt(k) + 1.0)
        m, s = self.scale(real, n if p.per_channel else 1)
        bias = self.rng.integers(-(1 << 12), 1 << 12, n).astype(np.int64)
        return self.add("FullyConnected", [x, self.param(w.astype(np.int8)), self.param(bias),
                                           m, s], x_zp=x_zp, y_zp=self.zp(),
                        rounding=p.rounding, acc_bits=p.acc_bits, **clamp_bounds(p, p.act))

    def binary(self, op: str, a: str, b: str) -> str:
        p = self.p
        attrs: dict[str, Any] = {"a_zp": self.zp(), "b_zp": self.zp(), "y_zp": self.zp(),
                                 "rounding": p.rounding, **clamp_bounds(p, p.act)}
        if op == "Add":
            attrs["left_shift"] = p.add_left_shift
            for prefix, real in (("a_", 0.5), ("b_", 0.5), ("y_", 2.0 ** -p.add_left_shift)):
                attrs[f"{prefix}multiplier"], attrs[f"{prefix}shift"] = p.quantize(real)
        else:
            attrs["multiplier"], attrs["shift"] = p.quantize(
                24.0 / (self.spread(a, attrs["a_zp"]) * self.spread(b, attrs["b_zp"])))
        return self.add(op, [a, b], **attrs)

    def constant(self, shape: Sequence[int]) -> str:
        return self.param(with_extremes(self.rng, tuple(shape), *self.p.act_range, self.p.act))

    def requantize(self, x: str, axis: int | None = None) -> str:
        n = self.vals[x].shape[axis] if axis is not None else 1
        x_zp = self.zp()
        m, s = self.scale(48.0 / self.spread(x, x_zp), n)
        return self.add("Requantize", [x, m, s], x_zp=x_zp, y_zp=self.zp(),
                        axis=axis if axis is not None else 1, rounding=self.p.rounding,
                        **clamp_bounds(self.p, self.p.act))

    def done(self, outputs: Sequence[str], symbolic: bool, doc: str) -> ChainCase:
        return ChainCase(self.p.suite, self.name, self.x, self.layers, self.params,
                         tuple(outputs), symbolic, doc)


def _conv_block(p: Profile) -> ChainCase:
    c = _Chain(p, "conv_block_batch2", (2, 3, 9, 9))
    t = c.conv("x", 4, 3)
    t = c.requantize(t, axis=1)
    t = c.add("MaxPool", [t], kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
              **clamp_bounds(p, p.act))
    d = c.conv(t, 4, 3, group=4)
    t = c.binary("Add", d, t)
    t = c.add("AveragePool", [t], kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_top=1,
              pad_left=1, pad_bottom=1, pad_right=1, **clamp_bounds(p, p.act))
    t = c.add("GlobalAveragePool", [t], **clamp_bounds(p, p.act))
    t = c.add("Flatten", [t], axis=1)
    return c.done([c.fc(t, 5)], False,
                  "Conv, Requantize, MaxPool, depthwise Conv, residual Add, AveragePool, "
                  "GlobalAveragePool, Flatten, FullyConnected; fixed batch of 2 (one unit)")


def _layout(p: Profile) -> ChainCase:
    c = _Chain(p, "layout_symbolic_batch", (3, 4, 5, 6))
    t = c.add("Transpose", ["x", c.param(np.array([0, 2, 3, 1], np.int64))])
    t = c.add("Pad", [t, c.param(np.array([0, 1, 0, 2, 0, 0, 1, 1], np.int64))],
              value=c.zp())
    t = c.add("Concat", [t, t], axis=-1)
    t = c.add("Reshape", [t, c.param(np.array([0, -1], np.int64))])
    info = np.iinfo(p.act)
    table = c.rng.integers(int(info.min), int(info.max), 1 << (8 * p.act.itemsize),
                           endpoint=True).astype(p.act)
    t = c.add("Lut", [t, c.param(table)])
    t = c.binary("Mul", t, c.constant((1, c.vals[t].shape[1])))
    return c.done([t], True,
                  "Transpose, Pad, Concat of a tensor with itself, Reshape, Lut, Mul with a "
                  "broadcast constant; symbolic batch (one sample at a time)")


def _broadcast(p: Profile) -> ChainCase:
    c = _Chain(p, "rank_expanding_broadcast_batch3", (3, 4))
    t = c.fc("x", 4)
    t = c.binary("Add", t, c.constant((1, 1, 1, 4)))   # [3, 4] + [1, 1, 1, 4] = [1, 1, 3, 4]
    t = c.add("Reshape", [t, c.param(np.array([3, 4], np.int64))])
    t = c.requantize(t)
    return c.done([t], False,
                  "FullyConnected, Add of a rank-4 constant (the batch axis moves to axis 2), "
                  "Reshape back, Requantize; fixed batch of 3 (one unit)")


def _fan_out(p: Profile) -> ChainCase:
    c = _Chain(p, "fan_out_symbolic_batch", (2, 6, 8))
    f = c.fc("x", 8)
    g = c.binary("Add", f, c.constant((8,)))
    t = c.binary("Mul", f, g)                          # two activations, same rank
    t = c.requantize(t, axis=-1)
    t = c.add("Concat", [t, f], axis=1)
    t = c.add("Transpose", [t, c.param(np.array([0, 2, 1], np.int64))])
    return c.done([t], True,
                  "FullyConnected read by three layers (Add of a rank-1 constant, Mul of two "
                  "activations, Concat), per-channel Requantize, Transpose; symbolic batch")


def chain_cases(p: Profile) -> list[ChainCase]:
    """The chains of a target suite."""
    return [_conv_block(p), _layout(p), _broadcast(p), _fan_out(p)]
