"""Unroll ONNX LSTM and GRU layers into per-step fully connected layers, gates and
elementwise ops."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import onnx

from ortnpu.passes.graph import attr
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base

#: the ops an unrolled LSTM or GRU is made of: a target must run them all (else the layer
#: stays whole on the CPU)
UNROLLED_OPS = ("Gather", "Gemm", "Add", "Sub", "Slice", "Sigmoid", "Tanh", "Mul", "Unsqueeze",
                "Concat")


@dataclass(frozen=True)
class Recurrence:
    """What a recurrent node holds: its sizes, directions and constant weights.

    Attributes:
        steps: time steps (static).
        hidden: hidden size.
        layout: 0 (``[steps, batch, ...]``) or 1 (``[batch, steps, ...]``).
        directions: ``("forward",)``, ``("reverse",)`` or both.
        w, r, b: the W, R and B inputs (B zeros when absent).
        inputs: the node's inputs, padded with ``""`` to the op's full list.
        outputs: the node's outputs, padded with ``""``.
        linear_before_reset: GRU's attribute (False for an LSTM).
    """

    steps: int
    hidden: int
    layout: int
    directions: tuple[str, ...]
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    linear_before_reset: bool = False

    @property
    def time_axis(self) -> int:
        return 0 if self.layout == 0 else 1

    @property
    def dir_axis(self) -> int:
        return 1 if self.layout == 0 else 2

    @property
    def state_axis(self) -> int:
        return 0 if self.layout == 0 else 1


class UnrollRecurrent(ReplaceNodesPass):
    """The walk shared by :class:`UnrollLSTM` and :class:`UnrollGRU`: per direction, the
    initial states, one :meth:`step` per time step, and the outputs (``Y`` and the last
    states) joined by ``Unsqueeze`` and ``Concat`` (only those the graph reads).

    Why: ortnpu has no integer recurrent op, so a recurrent layer (Silero VAD's decoder, a
    CRNN text reader's bidirectional LSTM, a speech model's GRU) stayed in float on the CPU
    between NPU layers. An NPU compiler lowers a sequence LSTM or GRU into its fully connected
    layers and gate operations (Arm's Vela decomposes TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM
    this way), and each of those is an op ortnpu runs exactly as TFLite does. The result is
    exact for the unrolled graph, not for TFLite's fused integer LSTM kernel (which keeps the
    cell state in 16 bits with its own fixed-point steps). Applies to layers with the default
    activations, no ``clip``, no ``sequence_lens`` input and at most ``max_steps`` time steps;
    others stay on the CPU with their reason. The initial states may be activations (a VAD's
    carried state), absent or constant zeros (an exporter's Expand of 0); a nonzero constant
    state leaves the layer alone.

    Args:
        max_steps: the most time steps unrolled (the graph grows by ~15-20 nodes per step
            and direction).
    """

    #: the op type, its gate count, its default activations per direction, its states
    op_type: str = ""
    gates: int = 0
    activations: tuple[str, ...] = ()
    states: tuple[str, ...] = ()   # the states; their last values are outputs Y_<state>
    state_inputs: tuple[int, ...] = ()   # the initial-state inputs (initial_h, initial_c)

    def __init__(self, max_steps: int = 64) -> None:
        self.max_steps = max_steps

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        rec = self.plan(node, work)
        if rec is None:
            return None
        base = node_base(node)
        ys: list[str] = []
        last: list[list[str]] = [[] for _ in self.states]
        for d, direction in enumerate(rec.directions):
            stem = f"{base}/{direction}"
            consts = self.weights(work, rec, d, f"{base}_{direction}")
            state = tuple(self._initial(work, rec, rec.inputs[k], d, f"{stem}/{what}0")
                          for k, what in zip(self.state_inputs, self.states, strict=True))
            order = range(rec.steps) if direction != "reverse" else range(rec.steps - 1, -1, -1)
            per_step: dict[int, str] = {}
            for t in order:
                x_t = work.tensor(f"{stem}/t{t}_x".replace("/", "_"))
                work.add("Gather", [rec.inputs[0], _scalar(work, f"{x_t}_index", t)], [x_t],
                         f"{stem}/t{t}/x", axis=rec.time_axis)
                state = self.step(work, rec, f"{stem}/t{t}", x_t, consts, state)
                per_step[t] = state[0]
            if rec.outputs[0]:   # Y: [steps, dirs, batch, hidden] ([batch, steps, dirs, hidden])
                ys.append(_stack(work, [per_step[t] for t in range(rec.steps)],
                                 [rec.time_axis, rec.dir_axis], rec.time_axis, f"{stem}/Y",
                                 rec.outputs[0] if len(rec.directions) == 1 else None))
            for k, s in enumerate(state):
                last[k].append(s)
        if rec.outputs[0] and len(ys) > 1:
            work.add("Concat", ys, [rec.outputs[0]], f"{base}/Y", axis=rec.dir_axis)
        for k, what in enumerate(self.states):
            out = rec.outputs[1 + k]
            if out:   # Y_h, Y_c: [dirs, batch, hidden] ([batch, dirs, hidden])
                _stack(work, last[k], [rec.state_axis], rec.state_axis, f"{base}/Y_{what}", out)
        for weight in rec.inputs[1:4]:
            if weight:
                work.retire(weight)
        return (f"{self.op_type} {node.name!r} ({'/'.join(rec.directions)}, {rec.steps} steps, "
                f"hidden {rec.hidden}) became per-step Gemm, Sigmoid/Tanh, Mul and Add")

    # -- what qualifies ---------------------------------------------------------------------
    def plan(self, node: onnx.NodeProto, work: Replacement) -> Recurrence | None:
        """The :class:`Recurrence` of a node this pass unrolls, else None."""
        if node.op_type != self.op_type or node.domain not in ("", "ai.onnx") or \
                len(node.input) < 3:
            return None
        ins = tuple(node.input) + ("",) * (8 - len(node.input))
        if ins[4] or not self.extra_ok(node, ins):   # sequence_lens
            return None
        w, r = work.index.constant(ins[1]), work.index.constant(ins[2])
        b = work.index.constant(ins[3]) if ins[3] else None
        if w is None or r is None or (ins[3] and b is None) or w.ndim != 3 or r.ndim != 3:
            return None
        direction = attr(node, "direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        directions = ("forward", "reverse") if direction == "bidirectional" else (direction,)
        acts = [a.decode() if isinstance(a, bytes) else str(a)
                for a in attr(node, "activations", [])]
        if acts and acts != list(self.activations) * len(directions):
            return None
        if attr(node, "clip", None) is not None or \
                attr(node, "activation_alpha", None) is not None or \
                attr(node, "activation_beta", None) is not None:
            return None
        hidden, dirs, g = int(r.shape[2]), len(directions), self.gates
        layout = int(attr(node, "layout", 0))
        shape = work.shapes.get(ins[0])
        if shape is None or len(shape) != 3 or layout not in (0, 1):
            return None
        steps = shape[0 if layout == 0 else 1]
        if not isinstance(steps, int) or not 1 <= steps <= self.max_steps or \
                w.shape[:2] != (dirs, g * hidden) or r.shape != (dirs, g * hidden, hidden):
            return None
        b = np.zeros((dirs, 2 * g * hidden), w.dtype) if b is None else b
        if b.shape != (dirs, 2 * g * hidden):
            return None
        for k in self.state_inputs:   # a constant initial state must be zeros
            value = work.index.constant(ins[k]) if ins[k] else None
            if value is not None and np.any(value):
                return None
        outs = tuple(node.output) + ("",) * (1 + len(self.states) - len(node.output))
        return Recurrence(steps, hidden, layout, directions, w, r, b, ins, outs,
                          bool(int(attr(node, "linear_before_reset", 0))))

    def extra_ok(self, node: onnx.NodeProto, ins: tuple[str, ...]) -> bool:
        """The op's own conditions (LSTM: no peepholes, no input_forget)."""
        return True

    # -- the op's arithmetic ----------------------------------------------------------------
    @abc.abstractmethod
    def weights(self, work: Replacement, rec: Recurrence, d: int, base: str) -> tuple[str, ...]:
        """Direction ``d``'s weight and bias initializers, as :meth:`step` reads them."""

    @abc.abstractmethod
    def step(self, work: Replacement, rec: Recurrence, stem: str, x_t: str,
             consts: tuple[str, ...], state: tuple[str | None, ...]) -> tuple[str, ...]:
        """One time step on input ``x_t`` ``[batch, input]``: the new states (hidden first;
        a state of None is zeros)."""

    # -- building blocks --------------------------------------------------------------------
    @staticmethod
    def _initial(work: Replacement, rec: Recurrence, state: str, d: int, name: str
                 ) -> str | None:
        """Direction ``d``'s initial state ``[batch, hidden]`` (None: zeros, absent or
        constant)."""
        if not state or work.index.constant(state) is not None:
            return None
        out = work.tensor(name.replace("/", "_"))
        work.add("Gather", [state, _scalar(work, f"{out}_index", d)], [out], name,
                 axis=rec.state_axis)
        return out


class UnrollLSTM(UnrollRecurrent):
    """``LSTM`` becomes, per direction and time step: ``Gather`` of the step's input, ``Gemm``
    with W (and both biases), ``Gemm`` with R on the previous hidden state, ``Add``, four
    ``Slice``s for the gates (ONNX's order i, o, f, c), ``Sigmoid``/``Tanh``,
    ``c = f·c + i·g`` and ``h = o·tanh(c)``; Y, Y_h and Y_c from the steps' states. Also
    needs: no peepholes, no ``input_forget``. See :class:`UnrollRecurrent`."""

    op_type, gates = "LSTM", 4
    activations = ("Sigmoid", "Tanh", "Tanh")
    states = ("h", "c")
    state_inputs = (5, 6)

    def extra_ok(self, node: onnx.NodeProto, ins: tuple[str, ...]) -> bool:
        return not ins[7] and not int(attr(node, "input_forget", 0))

    def weights(self, work: Replacement, rec: Recurrence, d: int, base: str) -> tuple[str, ...]:
        four = 4 * rec.hidden
        return (work.constant(f"{base}_W", rec.w[d]), work.constant(f"{base}_R", rec.r[d]),
                work.constant(f"{base}_B", rec.b[d, :four] + rec.b[d, four:]))

    def step(self, work: Replacement, rec: Recurrence, stem: str, x_t: str,
             consts: tuple[str, ...], state: tuple[str | None, ...]) -> tuple[str, ...]:
        w_name, r_name, b_name = consts
        h, c = state
        gates = _op(work, "Gemm", [x_t, w_name, b_name], f"{stem}/gates_x", transB=1)
        if h is not None:
            rec_h = _op(work, "Gemm", [h, r_name], f"{stem}/gates_h", transB=1)
            gates = _op(work, "Add", [gates, rec_h], f"{stem}/gates")
        parts = {}
        for k, gate in enumerate(("i", "o", "f", "c")):
            raw = _slice(work, gates, k * rec.hidden, (k + 1) * rec.hidden, f"{stem}/{gate}_in")
            parts[gate] = _op(work, "Tanh" if gate == "c" else "Sigmoid", [raw], f"{stem}/{gate}")
        new_c = _op(work, "Mul", [parts["i"], parts["c"]], f"{stem}/i_g")
        if c is not None:
            kept = _op(work, "Mul", [parts["f"], c], f"{stem}/f_c")
            new_c = _op(work, "Add", [kept, new_c], f"{stem}/c")
        tanh_c = _op(work, "Tanh", [new_c], f"{stem}/tanh_c")
        return _op(work, "Mul", [parts["o"], tanh_c], f"{stem}/h"), new_c


class UnrollGRU(UnrollRecurrent):
    """``GRU`` becomes, per direction and time step: ``Gather`` of the step's input, ``Gemm``
    with W (biases folded where ONNX adds them), ``Gemm`` with the z and r rows of R on the
    previous hidden state, ``Sigmoid`` gates, the candidate ``Tanh(x·Whᵀ + (r·h)·Rhᵀ + ...)``
    (or, with ``linear_before_reset``, ``Tanh(x·Whᵀ + r·(h·Rhᵀ + Rbh) + Wbh)``) and
    ``h = ĥ + z·(h - ĥ)`` (= ``(1 - z)·ĥ + z·h``); Y and Y_h from the steps' states. See
    :class:`UnrollRecurrent`."""

    op_type, gates = "GRU", 3
    activations = ("Sigmoid", "Tanh")
    states = ("h",)
    state_inputs = (5,)

    def weights(self, work: Replacement, rec: Recurrence, d: int, base: str) -> tuple[str, ...]:
        hid = rec.hidden
        wb, rb = rec.b[d, :3 * hid], rec.b[d, 3 * hid:]
        lbr = rec.linear_before_reset
        # z, r: both biases; h: Wbh, and Rbh too unless it is added inside r·(...)
        bias_x = np.concatenate([wb[:2 * hid] + rb[:2 * hid],
                                 wb[2 * hid:] + (0 if lbr else rb[2 * hid:])])
        return (work.constant(f"{base}_W", rec.w[d]),
                work.constant(f"{base}_R_zr", rec.r[d, :2 * hid]),
                work.constant(f"{base}_R_h", rec.r[d, 2 * hid:]),
                work.constant(f"{base}_B", bias_x),
                work.constant(f"{base}_Rb_h", rb[2 * hid:]) if lbr and np.any(rb[2 * hid:])
                else "")

    def step(self, work: Replacement, rec: Recurrence, stem: str, x_t: str,
             consts: tuple[str, ...], state: tuple[str | None, ...]) -> tuple[str, ...]:
        w_name, rzr_name, rh_name, b_name, rbh_name = consts
        hid, (h,) = rec.hidden, state
        gx = _op(work, "Gemm", [x_t, w_name, b_name], f"{stem}/gates_x", transB=1)
        zr = _slice(work, gx, 0, 2 * hid, f"{stem}/zr_x")
        if h is not None:
            zr = _op(work, "Add", [zr, _op(work, "Gemm", [h, rzr_name], f"{stem}/zr_h",
                                           transB=1)], f"{stem}/zr_in")
        z = _op(work, "Sigmoid", [_slice(work, zr, 0, hid, f"{stem}/z_in")], f"{stem}/z")
        r = _op(work, "Sigmoid", [_slice(work, zr, hid, 2 * hid, f"{stem}/r_in")], f"{stem}/r")
        cand = _slice(work, gx, 2 * hid, 3 * hid, f"{stem}/h_x")
        if rec.linear_before_reset:
            recur = _op(work, "Gemm", [h, rh_name, *([rbh_name] if rbh_name else [])],
                        f"{stem}/h_h", transB=1) if h is not None else rbh_name
            if recur:   # with no state, r·Rbh (the constant bias) is left
                cand = _op(work, "Add", [cand, _op(work, "Mul", [r, recur], f"{stem}/r_h")],
                           f"{stem}/h_in")
        elif h is not None:
            reset = _op(work, "Mul", [r, h], f"{stem}/r_h")
            cand = _op(work, "Add", [cand, _op(work, "Gemm", [reset, rh_name], f"{stem}/h_h",
                                               transB=1)], f"{stem}/h_in")
        cand = _op(work, "Tanh", [cand], f"{stem}/candidate")
        if h is None:   # (1 - z)·ĥ
            return (_op(work, "Sub", [cand, _op(work, "Mul", [z, cand], f"{stem}/z_c")],
                        f"{stem}/h"),)
        moved = _op(work, "Mul", [z, _op(work, "Sub", [h, cand], f"{stem}/h_minus_c")],
                    f"{stem}/z_d")
        return (_op(work, "Add", [cand, moved], f"{stem}/h"),)


def _scalar(work: Replacement, base: str, value: int) -> str:
    return work.constant(base, np.array(value, np.int64))


def _op(work: Replacement, op: str, inputs: list[str], name: str, **attrs: object) -> str:
    """A new node of ``op`` named ``name``; returns its (new) output tensor."""
    out = work.tensor(name.replace("/", "_"))
    work.add(op, inputs, [out], name, **attrs)
    return out


def _slice(work: Replacement, x: str, start: int, end: int, name: str) -> str:
    """Columns ``start:end`` of a ``[batch, n]`` tensor."""
    out = work.tensor(name.replace("/", "_"))
    work.add("Slice", [x, work.int64(f"{out}_start", [start]), work.int64(f"{out}_end", [end]),
                       work.int64(f"{out}_axis", [1])], [out], name)
    return out


def _unsqueeze(work: Replacement, x: str, axes: list[int], name: str,
               out: str | None = None) -> str:
    out = out or work.tensor(name.replace("/", "_"))
    if work.opset >= 13:
        work.add("Unsqueeze", [x, work.int64(f"{out}_axes", axes)], [out], name)
    else:
        work.add("Unsqueeze", [x], [out], name, axes=axes)
    return out


def _stack(work: Replacement, states: list[str], axes: list[int], axis: int, name: str,
           out: str | None = None) -> str:
    """``states`` (each ``[batch, hidden]``) with ``axes`` inserted, joined along ``axis``
    into ``out`` (a new tensor when None)."""
    if len(states) == 1:
        return _unsqueeze(work, states[0], axes, name, out)
    parts = [_unsqueeze(work, s, axes, f"{name}_{k}") for k, s in enumerate(states)]
    out = out or work.tensor(name.replace("/", "_"))
    work.add("Concat", parts, [out], name, axis=axis)
    return out
