"""Unroll an ONNX LSTM into per-step fully connected layers, gates and elementwise ops."""

from __future__ import annotations

import numpy as np
import onnx

from ortnpu.passes.graph import attr
from ortnpu.passes.replace import Replacement, ReplaceNodesPass, node_base

#: ONNX's gate order in W, R and B: input, output, forget, cell
GATES = ("i", "o", "f", "c")

#: the ops an unrolled LSTM is made of: a target must run them all (else the LSTM stays whole)
UNROLLED_LSTM_OPS = ("Gather", "Gemm", "Add", "Slice", "Sigmoid", "Tanh", "Mul", "Unsqueeze",
                     "Concat")


class UnrollLSTM(ReplaceNodesPass):
    """``LSTM`` (constant weights, a static number of time steps) becomes, per direction and
    time step: ``Gather`` of the step's input, ``Gemm`` with W (and the two biases), ``Gemm``
    with R on the previous hidden state, ``Add``, four ``Slice``s for the gates,
    ``Sigmoid``/``Tanh``, ``c = f·c + i·g`` (``Mul``, ``Mul``, ``Add``) and
    ``h = o·tanh(c)``; the outputs ``Y``, ``Y_h`` and ``Y_c`` are the steps' states joined by
    ``Unsqueeze`` and ``Concat``.

    Why: ortnpu has no integer LSTM op, so a recurrent layer (Silero VAD's decoder, a CRNN
    text reader's bidirectional LSTM) stayed in float on the CPU between NPU layers. An NPU
    compiler lowers a sequence LSTM into its fully connected layers and gate operations (Arm's
    Vela decomposes TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM this way), and each of those is an
    op ortnpu runs exactly as TFLite does. The result is exact for the unrolled graph, not for
    TFLite's fused integer LSTM kernel (which keeps the cell state in 16 bits with its own
    fixed-point steps). Applies to LSTMs with the default activations, no peepholes, no
    ``clip``, no ``input_forget``, no ``sequence_lens`` input, and at most ``max_steps`` time
    steps; others stay on the CPU with their reason. The initial states may be activations
    (a VAD's carried state), absent or constant zeros (an exporter's Expand of 0); a nonzero
    constant state leaves the LSTM alone.

    Args:
        max_steps: the most time steps unrolled (the graph grows by ~17 nodes per step and
            direction).
    """

    def __init__(self, max_steps: int = 64) -> None:
        self.max_steps = max_steps

    def replace(self, node: onnx.NodeProto, work: Replacement) -> str | None:
        plan = self._plan(node, work)
        if plan is None:
            return None
        steps, hidden, layout, directions, w, r, b = plan
        base = node_base(node)
        time_axis, dir_axis = (0, 1) if layout == 0 else (1, 2)
        ins = list(node.input) + [""] * (8 - len(node.input))
        outs = list(node.output) + [""] * (3 - len(node.output))
        ys, last_h, last_c = [], [], []
        for d, direction in enumerate(directions):
            stem = f"{base}/{direction}"
            w_name = work.constant(f"{base}_W_{direction}", w[d])
            r_name = work.constant(f"{base}_R_{direction}", r[d])
            bias = b[d, :4 * hidden] + b[d, 4 * hidden:]
            b_name = work.constant(f"{base}_B_{direction}", bias)
            # a constant state is zeros (_plan checked it): as if absent
            h, c = (self._initial(work, state, d, layout, f"{stem}/{what}")
                    if state and work.index.constant(state) is None else None
                    for state, what in ((ins[5], "h0"), (ins[6], "c0")))
            order = range(steps) if direction != "reverse" else range(steps - 1, -1, -1)
            per_step: dict[int, str] = {}
            for t in order:
                h, c = self._step(work, f"{stem}/t{t}", ins[0], t, time_axis, hidden,
                                  (w_name, r_name, b_name), h, c)
                per_step[t] = h
            if outs[0]:   # Y: [steps, dirs, batch, hidden] ([batch, steps, dirs, hidden])
                ys.append(self._stack(work, [per_step[t] for t in range(steps)],
                                      [time_axis, dir_axis], time_axis, f"{stem}/Y",
                                      outs[0] if len(directions) == 1 else None))
            last_h.append(h)
            last_c.append(c)
        if outs[0] and len(ys) > 1:
            work.add("Concat", ys, [outs[0]], f"{base}/Y", axis=dir_axis)
        state_axis = 0 if layout == 0 else 1
        for out, states, what in ((outs[1], last_h, "Y_h"), (outs[2], last_c, "Y_c")):
            if out:   # [dirs, batch, hidden] ([batch, dirs, hidden])
                self._stack(work, states, [state_axis], state_axis, f"{base}/{what}", out)
        for weight in node.input[1:4]:
            if weight:
                work.retire(weight)
        return (f"LSTM {node.name!r} ({'/'.join(directions)}, {steps} steps, hidden {hidden}) "
                "became per-step Gemm, Sigmoid/Tanh, Mul and Add")

    # -- what qualifies ---------------------------------------------------------------------
    def _plan(self, node: onnx.NodeProto, work: Replacement) -> tuple | None:
        """``(steps, hidden, layout, directions, W, R, B)`` of an LSTM this pass unrolls."""
        if node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
            return None
        ins = list(node.input) + [""] * (8 - len(node.input))
        if ins[4] or ins[7]:   # sequence_lens, peepholes
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
        if acts and acts != ["Sigmoid", "Tanh", "Tanh"] * len(directions):
            return None
        if attr(node, "clip", None) is not None or int(attr(node, "input_forget", 0)) or \
                attr(node, "activation_alpha", None) is not None or \
                attr(node, "activation_beta", None) is not None:
            return None
        hidden = int(r.shape[2])
        layout = int(attr(node, "layout", 0))
        shape = work.shapes.get(ins[0])
        if shape is None or len(shape) != 3 or layout not in (0, 1):
            return None
        steps = shape[0 if layout == 0 else 1]
        if not isinstance(steps, int) or not 1 <= steps <= self.max_steps or \
                w.shape[0] != len(directions) or w.shape[1] != 4 * hidden or \
                r.shape != (len(directions), 4 * hidden, hidden):
            return None
        b = np.zeros((len(directions), 8 * hidden), w.dtype) if b is None else b
        if b.shape != (len(directions), 8 * hidden):
            return None
        for state in ins[5:7]:   # a constant initial state must be zeros (an exporter's
            value = work.index.constant(state) if state else None   # Expand of 0)
            if value is not None and np.any(value):
                return None
        return steps, hidden, layout, directions, w, r, b

    # -- building blocks --------------------------------------------------------------------
    def _step(self, work: Replacement, stem: str, x: str, t: int, time_axis: int,
              hidden: int, weights: tuple[str, str, str], h: str | None, c: str | None
              ) -> tuple[str, str]:
        """One time step: the new ``(h, c)`` tensors."""
        w_name, r_name, b_name = weights
        x_t = work.tensor(f"{stem}_x")
        work.add("Gather", [x, self._scalar(work, f"{stem}_index", t)], [x_t], f"{stem}/x",
                 axis=time_axis)
        gates = work.tensor(f"{stem}_gates_x")
        work.add("Gemm", [x_t, w_name, b_name], [gates], f"{stem}/gates_x", transB=1)
        if h is not None:
            rec = work.tensor(f"{stem}_gates_h")
            work.add("Gemm", [h, r_name], [rec], f"{stem}/gates_h", transB=1)
            total = work.tensor(f"{stem}_gates")
            work.add("Add", [gates, rec], [total], f"{stem}/gates")
            gates = total
        parts = {}
        for k, gate in enumerate(GATES):
            raw = work.tensor(f"{stem}_{gate}_in")
            work.add("Slice", [gates, work.int64(f"{stem}_{gate}_start", [k * hidden]),
                               work.int64(f"{stem}_{gate}_end", [(k + 1) * hidden]),
                               work.int64(f"{stem}_{gate}_axis", [1])], [raw],
                     f"{stem}/{gate}_in")
            parts[gate] = self._unary(work, "Tanh" if gate == "c" else "Sigmoid", raw,
                                      f"{stem}/{gate}")
        new_c = self._binary(work, "Mul", parts["i"], parts["c"], f"{stem}/i_g")
        if c is not None:
            kept = self._binary(work, "Mul", parts["f"], c, f"{stem}/f_c")
            new_c = self._binary(work, "Add", kept, new_c, f"{stem}/c")
        new_h = self._binary(work, "Mul", parts["o"], self._unary(work, "Tanh", new_c,
                                                                   f"{stem}/tanh_c"),
                             f"{stem}/h")
        return new_h, new_c

    @staticmethod
    def _scalar(work: Replacement, base: str, value: int) -> str:
        return work.constant(base, np.array(value, np.int64))

    @staticmethod
    def _unary(work: Replacement, op: str, x: str, name: str) -> str:
        out = work.tensor(name.replace("/", "_"))
        work.add(op, [x], [out], name)
        return out

    @staticmethod
    def _binary(work: Replacement, op: str, a: str, b: str, name: str) -> str:
        out = work.tensor(name.replace("/", "_"))
        work.add(op, [a, b], [out], name)
        return out

    def _initial(self, work: Replacement, state: str, d: int, layout: int, name: str) -> str:
        """Direction ``d``'s initial state ``[batch, hidden]`` of ``[dirs, batch, hidden]``
        (``[batch, dirs, hidden]`` with layout 1)."""
        out = work.tensor(name.replace("/", "_"))
        work.add("Gather", [state, self._scalar(work, f"{out}_index", d)], [out], name,
                 axis=0 if layout == 0 else 1)
        return out

    @staticmethod
    def _unsqueeze(work: Replacement, x: str, axes: list[int], name: str,
                   out: str | None = None) -> str:
        out = out or work.tensor(name.replace("/", "_"))
        if work.opset >= 13:
            work.add("Unsqueeze", [x, work.int64(f"{out}_axes", axes)], [out], name)
        else:
            work.add("Unsqueeze", [x], [out], name, axes=axes)
        return out

    def _stack(self, work: Replacement, states: list[str], axes: list[int], axis: int,
               name: str, out: str | None = None) -> str:
        """``states`` (each ``[batch, hidden]``) with ``axes`` inserted, joined along ``axis``
        into ``out`` (a new tensor when None)."""
        if len(states) == 1:
            return self._unsqueeze(work, states[0], axes, name, out)
        parts = [self._unsqueeze(work, s, axes, f"{name}_{k}") for k, s in enumerate(states)]
        out = out or work.tensor(name.replace("/", "_"))
        work.add("Concat", parts, [out], name, axis=axis)
        return out
