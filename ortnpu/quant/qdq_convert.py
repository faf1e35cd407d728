"""Fit a model's own quantization to a target, changing only what the target cannot represent.

Every change is returned as a :class:`Conversion` so that the user sees exactly where the NPU
graph departs from the model's scales. Changes that keep every real value (a uint8 zero point
shifted by -128, uint8 weights re-centred) are marked ``exact``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from ortnpu.domain.arith import round_half_away
from ortnpu.errors import UnsupportedError
from ortnpu.quant.params import QuantParams, activation_params
from ortnpu.quant.qdq_graph import ImportedGraph, QuantizedConst
from ortnpu.target import Arithmetic, Target, integer_range

#: Lowering rules whose output keeps the input's parameters on the NPU (pools, layout ops).
KEEPS_INPUT_PARAMS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "Flatten",
                                "Reshape", "Transpose", "Pad", "Squeeze", "Unsqueeze", "Slice",
                                "Split", "Resize"})
_LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Conversion:
    """One place where the NPU graph departs from (or re-expresses) the model's quantization.

    Attributes:
        tensor: the tensor or initializer concerned.
        change: what changed, with the values before and after.
        reason: why the target needs it.
        exact: True when every real value is kept (only the integer encoding changed).
    """

    tensor: str
    change: str
    reason: str
    exact: bool = False

    def __str__(self) -> str:
        tag = "exact" if self.exact else "changed"
        return f"[{tag}] {self.tensor}: {self.change} ({self.reason})"


@dataclass
class ImportPlan:
    """What :func:`ortnpu.quant.quantize` needs to build the NPU graph of an imported model."""

    params: dict[str, QuantParams] = field(default_factory=dict)
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    force_cpu: dict[str, str] = field(default_factory=dict)  # node name -> reason
    conversions: list[Conversion] = field(default_factory=list)


def _fmt(p: QuantParams) -> str:
    return f"{p.dtype} scale {p.scale:.9g} zero point {p.zero_point}"


def _is_pow2(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def _pow2_ceil(x: float) -> float:
    return float(2.0 ** math.ceil(math.log2(x)))


def _bits(dtype: str) -> int:
    return np.iinfo(dtype).bits


def _same_values(p: QuantParams) -> list[QuantParams]:
    """``p`` and the encodings of the same real values in the other signedness."""
    half = 1 << (_bits(p.dtype) - 1)
    if p.dtype.startswith("u"):
        return [p, QuantParams(p.scale, p.zero_point - half, p.dtype[1:])]
    return [p, QuantParams(p.scale, p.zero_point + half, f"u{p.dtype}")]


def _accepts(p: QuantParams, a: Arithmetic) -> bool:
    if _bits(p.dtype) != a.activation_bits:
        return False
    if a.power_of_two_scales and not _is_pow2(p.scale):
        return False
    if p.dtype.startswith("u"):  # unsigned only for non-negative tensors on such targets
        return a.unsigned_after_relu and p.zero_point == 0
    if not a.activation_signed:
        return False
    return p.zero_point == 0 if a.activation_symmetric else True


def convert_activation(tensor: str, p: QuantParams, a: Arithmetic
                       ) -> tuple[QuantParams, Conversion | None]:
    """The target's parameters for an activation the model quantized with ``p``."""
    candidates = _same_values(p)
    if a.unsigned_after_relu:
        candidates.sort(key=lambda c: not c.dtype.startswith("u"))
    for c in candidates:
        if _accepts(c, a):
            if c == p:
                lo = a.activation_range[0]
                if c.dtype.startswith("int") and lo > c.qmin:
                    return c, Conversion(tensor, f"{_fmt(p)} kept; the value {c.qmin} saturates "
                                         f"to {lo}", "the target's activations use the narrow "
                                         f"range [{lo}, {c.qmax}]")
                return c, None
            return c, Conversion(tensor, f"{_fmt(p)} → {_fmt(c)}",
                                 f"the target computes on {c.dtype}; same scale, zero point "
                                 "shifted: every value is kept", exact=True)
    lo = p.scale * (p.qmin - p.zero_point)
    hi = p.scale * (p.qmax - p.zero_point)
    new = activation_params(lo, hi, a, unsigned=a.unsigned_after_relu and lo >= 0)
    why = []
    if _bits(p.dtype) != a.activation_bits:
        why.append(f"the target's activations have {a.activation_bits} bits")
    if a.activation_symmetric and p.zero_point != 0 and not (lo >= 0 and a.unsigned_after_relu):
        why.append("the target's activations are symmetric (zero point 0)")
    if a.power_of_two_scales and not _is_pow2(p.scale):
        why.append("the target's scales are powers of two (shift-only rescale)")
    return new, Conversion(tensor, f"{_fmt(p)} → {_fmt(new)} (same real range "
                           f"[{lo:.6g}, {hi:.6g}])", "; ".join(why) or "the target's "
                           "activation format differs")


def _out_axis(node: onnx.NodeProto) -> int:
    """Output-channel axis of the weight in its float layout."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":   # [C, O / group, k, l]
        return 1
    trans = any(x.name == "transB" and x.i for x in node.attribute)
    return 0 if node.op_type == "Gemm" and trans else 1


def convert_weight(name: str, qc: QuantizedConst, a: Arithmetic, out_axis: int
                   ) -> tuple[np.ndarray, np.ndarray, list[Conversion]]:
    """int8 weights and scales for the target from the model's integers.

    Returns:
        ``(weights in the float layout, float64 scales per output channel or [1], changes)``.
    """
    wlo, whi = a.weight_range
    real = qc.real()
    conv: list[Conversion] = []
    centred = qc.q - qc.broadcast(qc.zero_point)
    per_channel = qc.axis is not None
    why: list[str] = []
    if per_channel and not a.per_channel:
        why.append("the target has one weight scale per tensor")
    elif per_channel and qc.axis != out_axis:
        why.append(f"the model's per-channel axis {qc.axis} is not the output-channel axis "
                   f"{out_axis}")
    if why:
        top = float(np.abs(real).max()) if real.size else 0.0
        s = float(np.float32(top / whi)) if top > 0 else 1.0
        if a.power_of_two_scales:
            s = _pow2_ceil(s)
            why.append("scales are powers of two")
        scales = np.array([s])
    elif a.power_of_two_scales and not all(_is_pow2(float(s)) for s in qc.scale):
        scales = np.array([_pow2_ceil(float(s)) for s in qc.scale])
        why.append("the target's scales are powers of two (shift-only rescale)")
    elif (centred < wlo).any() or (centred > whi).any():
        if (centred > whi).any() or (centred < wlo - 1).any() or qc.dtype != "int8" \
                or (qc.zero_point != 0).any():
            top = np.abs(real).max(axis=tuple(d for d in range(real.ndim) if d != qc.axis)) \
                if per_channel else np.array([np.abs(real).max()])
            scales = np.where(top > 0, top / whi, 1.0).astype(np.float32).astype(np.float64)
            why.append(f"the integers minus the zero point leave the target's weight range "
                       f"[{wlo}, {whi}]")
        else:
            n = int((centred < wlo).sum())
            q = np.maximum(centred, wlo)
            conv.append(Conversion(name, f"{n} weight(s) at {wlo - 1} set to {wlo} (one step; "
                                   "scales kept)", f"the target's weights use the narrow range "
                                   f"[{wlo}, {whi}]"))
            return q.astype(np.int8), qc.scale.copy(), conv
    else:
        if qc.dtype != "int8" or (qc.zero_point != 0).any():
            conv.append(Conversion(name, f"{qc.dtype} weights with zero point(s) "
                                   f"{sorted(set(qc.zero_point.tolist()))[:4]} re-centred to "
                                   "int8 with zero point 0, scales kept",
                                   "the target's weights are symmetric int8", exact=True))
        return centred.astype(np.int8), qc.scale.copy(), conv
    shape = [1] * real.ndim
    if scales.size > 1:
        shape[qc.axis] = -1
    q = np.clip(round_half_away(real / scales.reshape(shape)), wlo, whi)
    delta = np.abs(q * scales.reshape(shape) - real)
    before = (f"per-channel scales [{qc.scale.min():.6g} .. {qc.scale.max():.6g}]"
              if per_channel else f"scale {qc.scale[0]:.6g}")
    after = (f"per-channel scales [{scales.min():.6g} .. {scales.max():.6g}]"
             if scales.size > 1 else f"one scale {scales[0]:.6g}")
    conv.append(Conversion(name, f"{before} → {after}; weights requantized, max change "
                           f"{delta.max():.4g} ({(delta / scales.reshape(shape)).max():.3g} "
                           f"steps), {int((delta > 0).sum())} of {q.size} values changed",
                           "; ".join(why)))
    return q.astype(np.int8), scales, conv


def _fused_activation(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]],
                      consts: set[str], outputs: set[str]) -> onnx.NodeProto | None:
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or node.output[0] in outputs:
        return None
    act = users[0]
    if act.op_type == "Relu" or (act.op_type == "Clip" and all(
            not i or i in consts for i in act.input[1:])):
        return act
    return None


def plan(imported: ImportedGraph, target: Target) -> ImportPlan:
    """Parameters, integers and CPU placements that fit ``imported`` to ``target``."""
    from ortnpu.quant.lowering import RULE_OF_OP

    a = target.arithmetic
    out = ImportPlan()
    g = imported.model.graph
    consts = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for tensor, p in imported.params.items():
        new, c = convert_activation(tensor, p, a)
        out.params[tensor] = new
        if c:
            out.conversions.append(c)
    # Rules that fix the output parameters themselves: follow them so that biases and the
    # report use the parameters the NPU graph will really have.
    for n in g.node:
        x = n.input[0] if n.input else ""
        if x not in out.params or not n.output:
            continue
        xp = out.params[x]
        fixed, why = None, ""
        if n.op_type in KEEPS_INPUT_PARAMS:
            fixed, why = xp, f"the NPU's {n.op_type} keeps its input's scale and zero point"
        elif n.op_type in ("Sigmoid", "Tanh") and xp.dtype == "int8" and \
                not a.activation_symmetric:
            fixed = (QuantParams(1.0 / 256, -128, "int8") if n.op_type == "Sigmoid"
                     else QuantParams(1.0 / 128, 0, "int8"))
            why = f"TFLite's int8 {n.op_type} has fixed output parameters"
        if fixed is None:
            continue
        for y in (n.output if n.op_type == "Split" else n.output[:1]):
            old = out.params.get(y)
            if y and old is not None and old != fixed:
                out.conversions.append(Conversion(y, f"{_fmt(old)} → {_fmt(fixed)}", why))
            if y:
                out.params[y] = fixed
    # Weights and biases of the linear layers.
    seen: set[str] = set()
    for n in g.node:
        if n.op_type not in _LINEAR or len(n.input) < 2 or n.input[1] not in imported.constants:
            continue
        if n.op_type == "ConvTranspose" and any(x.name == "group" and x.i != 1
                                                for x in n.attribute):
            continue   # its output channels are group x axis 1: left to the quantizer
        wname = n.input[1]
        qc = imported.constants[wname]
        if wname not in seen:
            seen.add(wname)
            wq, ws, changes = convert_weight(qc.source, qc, a, _out_axis(n))
            out.weights[wname] = (wq, ws)
            out.conversions += changes
        if len(n.input) > 2 and n.input[2] in imported.constants:
            _plan_bias(n, imported, out, a)
    for name, qc in imported.constants.items():
        if name not in out.weights and name not in out.biases:
            users = ", ".join(sorted({u.name for u in consumers.get(name, [])}))
            out.conversions.append(Conversion(
                name, f"stored as {qc.dtype}; given to the quantizer as float",
                f"not the weight or bias of a Conv, ConvTranspose of one group, Gemm or MatMul "
                f"(used by {users}): the quantizer "
                "quantizes constant operands with its own parameters"))
    # Layers whose tensors the model leaves unquantized stay in float on the CPU.
    for n in g.node:
        rule = RULE_OF_OP.get(n.op_type)
        if rule is None or n.domain not in ("", "ai.onnx"):
            continue
        acts = [i for i in n.input if i and i not in consts]
        if n.op_type in ("Relu", "Clip") and n.input and n.input[0] in consumers and any(
                _fused_activation(p, consumers, consts, outputs) is n
                for p in g.node if p.output and p.output[0] == n.input[0]
                and p.op_type in RULE_OF_OP and RULE_OF_OP[p.op_type].fuses_activation):
            continue  # absorbed by its producer if that one runs on the NPU
        acts = _square_of_difference_operands(n, acts, g, out.params) or acts
        missing = [i for i in acts if i not in out.params]
        if type(rule).__name__ not in ("PoolRule", "LayoutRule", "SliceRule", "ResizeRule"):
            y = n.output[0]
            act = (_fused_activation(n, consumers, consts, outputs)
                   if rule.fuses_activation else None)
            if act is not None and act.output[0] in out.params:
                y = act.output[0]
            if y not in out.params and not (n.op_type in ("Sigmoid", "Tanh") and acts and
                                            acts[0] in out.params and
                                            out.params[acts[0]].dtype == "int8" and
                                            not a.activation_symmetric):
                missing.append(y)
        if missing:
            why = (f"the model gives no scale for {', '.join(map(repr, missing))}, so "
                   f"{n.op_type} '{n.name}' runs in float on the CPU")
            out.force_cpu[n.name] = why
            out.conversions.append(Conversion(n.name, "kept in float on the CPU", why))
    return out


def _plan_bias(n: onnx.NodeProto, imported: ImportedGraph, out: ImportPlan,
               a: Arithmetic) -> None:
    """Exact int32 bias when the model's accumulator unit is the NPU's, else re-rounded."""
    bname, x = n.input[2], n.input[0]
    qc = imported.constants[bname]
    if x not in out.params or bname in out.biases:
        return
    wname = n.input[1]
    ws = out.weights[wname][1]
    xs = out.params[x].scale
    cout = imported.constants[wname].q.shape[_out_axis(n)]
    unit = np.float64(xs) * np.broadcast_to(ws, (cout,))
    bias_scale = np.broadcast_to(qc.scale, (cout,))
    same_unit = bool(np.all(np.abs(bias_scale - np.float32(unit)) <= 1e-6 * unit))
    if qc.dtype == "int32" and (qc.zero_point == 0).all() and same_unit:
        out.biases[bname] = np.broadcast_to(qc.q.reshape(-1), (cout,)).astype(np.int64).copy()
        return
    bits = 64 if a.bias_bits == 64 or a.activation_bits == 16 else 32
    lo, hi = integer_range(bits, True)
    real = np.broadcast_to(qc.real().reshape(-1), (cout,))
    q = np.clip(round_half_away(real / unit), lo, hi).astype(np.int64)
    out.biases[bname] = q
    delta = np.abs(q * unit - real).max() if cout else 0.0
    why = ("its scale is not input scale × weight scale" if qc.dtype == "int32" and not
           same_unit and not _changed_inputs(n, imported, out)
           else "the input or weight scales changed" if qc.dtype == "int32"
           else f"it is stored as {qc.dtype}, not int32 in accumulator units")
    out.conversions.append(Conversion(qc.source, f"bias re-rounded to int{bits} in units of input "
                                      f"scale × weight scale; max change {delta:.4g}", why))


def _changed_inputs(n: onnx.NodeProto, imported: ImportedGraph, out: ImportPlan) -> bool:
    x = n.input[0]
    before = imported.params.get(x)
    return before is None or before.scale != out.params[x].scale or not np.array_equal(
        imported.constants[n.input[1]].scale, out.weights[n.input[1]][1])


def describe(conversions: list[Conversion]) -> str:
    """The conversions as lines a user reads (``[exact]`` ones first)."""
    ordered = sorted(conversions, key=lambda c: not c.exact)
    return "\n".join(str(c) for c in ordered)


def check_supported(model: onnx.ModelProto) -> None:
    """Reject graph features :func:`import_qdq` cannot carry (named, with what to do)."""
    for n in model.graph.node:
        if n.op_type in ("If", "Loop", "Scan") and any(
                a.type == onnx.AttributeProto.GRAPH for a in n.attribute):
            raise UnsupportedError(f"{n.op_type} '{n.name}': control flow with subgraphs is "
                                   "not imported; export the model without it")


__all__ = ["Conversion", "ImportPlan", "check_supported", "convert_activation",
           "convert_weight", "describe", "plan"]


def _square_of_difference_operands(n: onnx.NodeProto, acts: list[str], g: onnx.GraphProto,
                                   params: dict[str, QuantParams]) -> list[str] | None:
    """The operands of the Sub whose unquantized difference ``n`` squares (Pow(d, 2) or
    Mul(d, d)): the square then reads them, as TFLite's SQUARED_DIFFERENCE does."""
    if n.op_type not in ("Pow", "Mul") or not acts or acts[0] in params or \
            (n.op_type == "Mul" and (len(n.input) != 2 or n.input[0] != n.input[1])):
        return None
    sub = next((p for p in g.node if acts[0] in p.output), None)
    if sub is None or sub.op_type != "Sub" or not all(i in params for i in sub.input if i):
        return None
    return [i for i in sub.input if i in params]
