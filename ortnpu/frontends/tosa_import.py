"""TOSA 1.0 flatbuffers as NPU graphs: ``import_tosa(path)``.

TOSA keeps quantized arithmetic explicit: CONV2D, MATMUL, ADD, MUL and an int16 TABLE produce
int32 (int48) accumulators, and a RESCALE brings them back to 8 or 16 bits. ortnpu's ops carry
8/16-bit activations with the rescale fused into the op, as NPUs do, so the importer fuses each
accumulator-producing op with the RESCALE that consumes it:

* CONV2D / DEPTHWISE_CONV2D + RESCALE → ``Conv`` (NHWC ↔ NCHW transposes around it),
  MATMUL + RESCALE → ``MatMul``; a weight zero point is folded into the weights when
  ``w - w_zp`` fits int8;
* RESCALE(a→int32), RESCALE(b→int32), ADD / SUB, RESCALE(→8/16) → ``Add`` / ``Sub`` with
  left shift 0; the Sub negates where the target's ``sub_negate`` says (TOSA's presets:
  after b's rescale, as TOSA does; a TFLite-order target takes a SUB only where negating b's
  multiplier gives the same bits on every b);
* MUL of 8/16-bit values (or of int32 RESCALEs that only subtract a zero point) + RESCALE →
  ``Mul``; REDUCE_SUM of such a RESCALE + RESCALE → ``FullyConnected`` with weights 1;
* TABLE int8 → ``Lut``; TABLE int16 (513 entries, interpolated, int32) + per-tensor RESCALE →
  a 65536-entry ``Lut``; CLAMP → the output clamp of the op before it, else a ``Lut``;
  RESCALE with unsigned input or output → a ``Lut`` (the unsigned reading of the 8/16-bit
  pattern is a function of the stored value), one per run of channels when per-channel;
* a per-channel RESCALE after MATMUL / ADD / SUB / MUL / int16 TABLE → the fused op once per
  run of channels (last axis) sharing a multiplier and shift, on sliced operands, concatenated;
* AVG_POOL2D without padding → depthwise ``Conv`` with weights 1 and TOSA's
  ``reciprocal_scale(k)`` multiplier; with padding (zero points 0) → ``AveragePool``, whose
  rounded division by the in-bounds count equals TOSA's reciprocal multiply; MAX_POOL2D →
  ``MaxPool``;
* RESHAPE, TRANSPOSE, CONCAT, PAD, SLICE, IDENTITY → the layout ops; TILE → ``Concat`` of
  copies, REVERSE → ``Slice`` with step -1.

The RESCALE's ``rounding_mode`` picks the rule: ``DOUBLE_ROUND`` → ``tosa_double``,
``SINGLE_ROUND`` (and every 16-bit multiplier) → ``half_up``. Anything else (another op, an
int32 tensor that no RESCALE consumes, a padded AVG_POOL2D with zero points,
INEXACT_ROUND) is refused with
:class:`~ortnpu.errors.UnsupportedError` naming the op.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu.domain import DOMAIN, DOMAIN_VERSION, OPS_BY_NAME, make_node
from ortnpu.domain.arith import rescale
from ortnpu.domain.ops_layout import slice_bounds as _slice_bounds
from ortnpu.domain.spec import MAX_VARIADIC
from ortnpu.errors import ModelError, UnsupportedError
from ortnpu.target import Target, load_target

META_TARGET = "ortnpu.target"
META_TARGET_TOML = "ortnpu.target_toml"
META_SOURCE = "ortnpu.tosa_source"

#: TOSA DType enum values (tosa.fbs) this importer reads.
_INT8, _INT16, _INT32, _INT48, _SHAPE, _BOOL, _INT64 = 3, 4, 5, 6, 10, 1, 17
_NP = {_INT8: np.int8, _INT16: np.int16, _INT32: np.int32, _INT64: np.int64, _SHAPE: np.int64,
       _BOOL: np.bool_}
_ONNX = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int16): TensorProto.INT16,
         np.dtype(np.uint8): TensorProto.UINT8}
#: RoundingMode enum of tosa.fbs
_SINGLE_ROUND, _INEXACT_ROUND, _DOUBLE_ROUND = 1, 2, 3
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


def _tosa_modules() -> Any:
    try:
        from tosa import Attribute, Op
        from tosa import TosaGraph as graph_mod  # noqa: N813 (a module named like its class)
    except ImportError:
        raise UnsupportedError(
            "import_tosa reads TOSA flatbuffers with the bindings of tosa-tools; install them "
            "with `pip install --no-deps tosa-tools flatbuffers` (tosa-tools pins numpy<2.2, "
            "which ortnpu does not need)") from None
    return graph_mod, Attribute, Op


@dataclasses.dataclass
class Rescale:
    """One RESCALE's parameters, in ortnpu's conventions (shift positive = left)."""

    multiplier: np.ndarray
    shift: np.ndarray
    in_zp: int
    out_zp: int
    rule: str
    per_channel: bool
    in_unsigned: bool
    out_unsigned: bool

    def scalar(self) -> tuple[int, int]:
        return int(self.multiplier.reshape(-1)[0]), int(self.shift.reshape(-1)[0])


@dataclasses.dataclass
class Acc:
    """An int32/int48 TOSA tensor that exists only until the RESCALE that consumes it."""

    kind: str                       # conv, matmul, add, mul, table16, scaled, sum
    op: str                         # the TOSA op that made it (for messages)
    parts: dict[str, Any]


@dataclasses.dataclass
class Act:
    """An 8/16-bit tensor of the ONNX graph (TOSA layout, NHWC for feature maps)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class _Importer:
    def __init__(self, data: bytes, target: Target | str | None, where: str) -> None:
        graph_mod, self.attr_mod, op_mod = _tosa_modules()
        self.op_names = {v: k for k, v in vars(op_mod.Op).items() if not k.startswith("_")}
        self.where = where
        try:
            g = graph_mod.TosaGraph.GetRootAs(data, 0)
            block = g.Regions(0).Blocks(0)
        except Exception as exc:  # flatbuffers raises plain errors on garbage
            raise ModelError(f"{where}: not a TOSA flatbuffer ({exc})") from None
        self.block = block
        self.tensors: dict[str, tuple[tuple[int, ...], int, np.ndarray | None]] = {}
        for i in range(block.TensorsLength()):
            t = block.Tensors(i)
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data_arr = t.DataAsNumpy() if t.DataLength() else None
            self.tensors[t.Name().decode()] = (shape, t.Type(), data_arr)
        for i in range(block.ShapesLength()):
            s = block.Shapes(i)
            raw = s.DataAsNumpy() if s.DataLength() else None
            self.tensors[s.Name().decode()] = ((s.Rank(),), _SHAPE, raw)
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, Act | Acc] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.producer: dict[str, onnx.NodeProto] = {}
        self.counter = 0
        self.tosa_uses: dict[str, int] = {}
        for i in range(block.OperatorsLength()):
            o = block.Operators(i)
            for k in range(o.InputsLength()):
                n = o.Inputs(k).decode()
                self.tosa_uses[n] = self.tosa_uses.get(n, 0) + 1
        self.inputs = [block.Inputs(i).decode() for i in range(block.InputsLength())]
        self.outputs = [block.Outputs(i).decode() for i in range(block.OutputsLength())]
        kinds = {self.tensors[n][1] for n in self.inputs + self.outputs if n in self.tensors}
        if target is None:
            target = "tosa-int16" if _INT16 in kinds else "tosa-int8"
        self.target = load_target(target)

    # ------------------------------------------------------------------ helpers
    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}__{self.counter}"

    def const(self, name: str, op: str) -> np.ndarray:
        if name in self.consts:
            return self.consts[name]
        raise UnsupportedError(f"{self.where}: {op}: input {name!r} must be a constant "
                               "(CONST or CONST_SHAPE) for ortnpu")

    def decode(self, name: str) -> np.ndarray:
        shape, kind, raw = self.tensors[name]
        if raw is None:
            raise UnsupportedError(f"{self.where}: constant {name!r} has no data")
        raw = np.asarray(raw, np.uint8)
        if kind == _INT48:
            b = raw.reshape(-1, 6).astype(np.int64)
            v = sum(b[:, k] << (8 * k) for k in range(6))
            v = np.where(v >= 1 << 47, v - (1 << 48), v)
            return v.reshape(shape)
        if kind not in _NP:
            raise UnsupportedError(f"{self.where}: constant {name!r} has TOSA type {kind}, "
                                   "not an integer type ortnpu reads")
        dt = np.dtype(_NP[kind]).newbyteorder("<")
        arr = np.frombuffer(raw.tobytes(), dtype=dt).astype(_NP[kind])
        if kind == _SHAPE:
            return arr
        return arr.reshape(shape)

    def act(self, name: str, op: str) -> Act:
        v = self.values.get(name)
        if isinstance(v, Act):
            return v
        if isinstance(v, Acc):
            raise UnsupportedError(f"{self.where}: {op} reads the int32 result of {v.op}; "
                                   "ortnpu runs 8/16-bit activations, so an int32 tensor must "
                                   "go straight into a RESCALE (or the ADD/SUB/MUL/REDUCE_SUM "
                                   "patterns documented in docs/tosa.md)")
        if name in self.consts:
            arr = self.consts[name]
            if arr.dtype not in _ONNX:
                raise UnsupportedError(f"{self.where}: {op}: constant {name!r} of type "
                                       f"{arr.dtype} cannot be an activation")
            iname = self.fresh(name)
            self.inits.append(numpy_helper.from_array(arr, iname))
            return Act(iname, arr.dtype, arr.shape)
        raise UnsupportedError(f"{self.where}: {op}: tensor {name!r} is not available")

    def init(self, arr: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def emit(self, spec: str, inputs: list[str], out_dtype: np.dtype, base: str,
             shape: tuple[int, ...], **attrs: Any) -> Act:
        out = self.fresh(base)
        node = make_node(OPS_BY_NAME[spec], inputs, out, out_dtype, out, **attrs)
        self.nodes.append(node)
        self.producer[out] = node
        return Act(out, np.dtype(out_dtype), tuple(shape))

    def transpose(self, x: Act, perm: tuple[int, ...], base: str) -> Act:
        shape = tuple(x.shape[p] for p in perm)
        return self.emit("Transpose", [x.name, self.init(np.array(perm, np.int64), "perm")],
                         x.dtype, base, shape)

    def rescale_params(self, op: Any, ins: list[str], name: str) -> Rescale:
        a = self.attribute(op, "RescaleAttribute")
        mult = self.const(ins[1], name).astype(np.int64).reshape(-1)
        shift = self.const(ins[2], name).astype(np.int64).reshape(-1)
        izp = int(self.const(ins[3], name).reshape(-1)[0])
        ozp = int(self.const(ins[4], name).reshape(-1)[0])
        mode = a.RoundingMode()
        if mode == _INEXACT_ROUND:
            raise UnsupportedError(f"{self.where}: RESCALE {name!r}: rounding_mode "
                                   "INEXACT_ROUND leaves the rounding to the implementation; "
                                   "ortnpu runs SINGLE_ROUND and DOUBLE_ROUND")
        rule = "tosa_double" if (a.Scale32() and mode == _DOUBLE_ROUND) else "half_up"
        in_uns, out_uns = bool(a.InputUnsigned()), bool(a.OutputUnsigned())
        if in_uns:
            izp &= 0xFFFF if self.tensors[ins[0]][1] == _INT16 else 0xFF
        if out_uns:
            ozp &= 0xFFFF if self.tensors[name][1] == _INT16 else 0xFF
        return Rescale(mult, -shift, izp, ozp, rule, bool(a.PerChannel()), in_uns, out_uns)

    def attribute(self, op: Any, cls_name: str) -> Any:
        import importlib

        mod = importlib.import_module(f"tosa.{cls_name}")
        a = getattr(mod, cls_name)()
        t = op.Attribute()
        a.Init(t.Bytes, t.Pos)
        return a

    # ---------------------------------------------------------------- running
    def run(self) -> onnx.ModelProto:
        graph_inputs = []
        for name in self.inputs:
            shape, kind, _ = self.tensors[name]
            if kind not in (_INT8, _INT16):
                raise UnsupportedError(f"{self.where}: graph input {name!r} has TOSA type "
                                       f"{kind}; ortnpu takes int8 and int16 inputs")
            dt = np.dtype(_NP[kind])
            self.values[name] = Act(name, dt, shape)
            graph_inputs.append(helper.make_tensor_value_info(name, _ONNX[dt], list(shape)))
        for i in range(self.block.OperatorsLength()):
            op = self.block.Operators(i)
            ins = [op.Inputs(k).decode() for k in range(op.InputsLength())]
            outs = [op.Outputs(k).decode() for k in range(op.OutputsLength())]
            kind = self.op_names.get(op.Op(), f"op #{op.Op()}")
            handler: Callable[..., None] | None = getattr(self, f"op_{kind.lower()}", None)
            if handler is None:
                raise UnsupportedError(f"{self.where}: TOSA op {kind} (output {outs[0]!r}) is "
                                       "not supported by ortnpu's TOSA import; supported: "
                                       + ", ".join(sorted(n[3:].upper() for n in dir(self)
                                                          if n.startswith("op_"))))
            handler(op, ins, outs[0])
        graph_outputs = []
        for name in self.outputs:
            v = self.values.get(name)
            if not isinstance(v, Act):
                raise UnsupportedError(f"{self.where}: graph output {name!r} is an int32 "
                                       "accumulator; ortnpu's NPU graphs end in 8/16-bit "
                                       "tensors (add the RESCALE)")
            self._rename(v, name)
            graph_outputs.append(helper.make_tensor_value_info(name, _ONNX[v.dtype],
                                                               list(v.shape)))
        graph = helper.make_graph(self.nodes, "tosa_import", graph_inputs, graph_outputs,
                                  initializer=self.inits,
                                  doc_string=f"TOSA graph imported for {self.target.name}")
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid(DOMAIN,
                                                                            DOMAIN_VERSION)],
                                  producer_name="ortnpu", ir_version=8)
        helper.set_model_props(model, {META_TARGET: self.target.name,
                                       META_TARGET_TOML: self.target.to_toml(),
                                       META_SOURCE: "tosa"})
        return model

    def _rename(self, v: Act, new: str) -> None:
        """Give the graph output its TOSA name: rename the producing node's output, or copy
        through a Reshape when the tensor is also read elsewhere (or is a graph input)."""
        if v.name == new:
            return
        node = self.producer.get(v.name)
        if node is None or any(i == v.name for n in self.nodes for i in n.input):
            shape = self.init(np.array(v.shape, np.int64), "shape")
            self.nodes.append(make_node(OPS_BY_NAME["Reshape"], [v.name, shape], new, v.dtype,
                                        new))
            return
        node.output[0] = new
        for a in node.attribute:
            if a.name == "node_name":
                a.s = new.encode()

    # ------------------------------------------------------------- plain ops
    def op_const(self, op: Any, ins: list[str], out: str) -> None:
        self.consts[out] = self.decode(out)

    op_const_shape = op_const

    def op_identity(self, op: Any, ins: list[str], out: str) -> None:
        self.values[out] = self.values[ins[0]] if ins[0] in self.values else self.act(ins[0],
                                                                                       "IDENTITY")

    def op_reshape(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "RESHAPE")
        shape = tuple(int(d) for d in self.tensors[out][0])
        self.values[out] = self.emit("Reshape", [x.name, self.init(np.array(shape, np.int64),
                                                                   "shape")], x.dtype, out, shape)

    def op_transpose(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "TRANSPOSE")
        perm = tuple(int(p) for p in self.attribute(op, "TransposeAttribute").PermsAsNumpy())
        self.values[out] = self.transpose(x, perm, out)

    def op_concat(self, op: Any, ins: list[str], out: str) -> None:
        xs = [self.act(n, "CONCAT") for n in ins]
        axis = int(self.attribute(op, "ConcatAttribute").Axis())
        shape = tuple(int(d) for d in self.tensors[out][0])
        self.values[out] = self.emit("Concat", [x.name for x in xs], xs[0].dtype, out, shape,
                                     axis=axis)

    def op_pad(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "PAD")
        padding = self.const(ins[1], "PAD").astype(np.int64).reshape(-1)
        value = int(self.const(ins[2], "PAD").reshape(-1)[0])
        pads = np.concatenate([padding[0::2], padding[1::2]])      # TOSA pairs → ONNX order
        self.values[out] = self.emit("Pad", [x.name, self.init(pads, "pads")], x.dtype, out,
                                     self.tensors[out][0], value=value)

    def op_slice(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "SLICE")
        start = self.const(ins[1], "SLICE").astype(np.int64).reshape(-1)
        size = self.const(ins[2], "SLICE").astype(np.int64).reshape(-1)
        rank = len(x.shape)
        inputs = [x.name, self.init(start, "starts"), self.init(start + size, "ends"),
                  self.init(np.arange(rank, dtype=np.int64), "axes"),
                  self.init(np.ones(rank, np.int64), "steps")]
        self.values[out] = self.emit("Slice", inputs, x.dtype, out, tuple(int(d) for d in size))

    def op_tile(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "TILE")
        multiples = self.const(ins[1], "TILE").astype(np.int64).reshape(-1)
        if multiples.size != len(x.shape) or (multiples < 1).any():
            raise UnsupportedError(f"{self.where}: TILE {out!r}: multiples {multiples.tolist()} "
                                   f"for a rank-{len(x.shape)} input")
        y = x
        for axis, k in enumerate(multiples.tolist()):
            if k > 1:
                y = self.concat([y] * k, axis, out)
        self.values[out] = y

    def op_reverse(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "REVERSE")
        axis = int(self.attribute(op, "ReverseAttribute").Axis())
        dim = x.shape[axis]
        self.values[out] = self.slice_axis(x, axis, dim - 1, -dim - 1, out, step=-1)

    def op_max_pool2d(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "MAX_POOL2D")
        a = self.attribute(op, "MaxPool2dAttribute")
        (kh, kw), (sh, sw) = a.KernelAsNumpy().tolist(), a.StrideAsNumpy().tolist()
        top, bottom, left, right = a.PadAsNumpy().tolist()
        lo, hi = _range(x.dtype)
        nchw = self.transpose(x, _NHWC_TO_NCHW, out + "_nchw")
        oshape = self.tensors[out][0]
        y = self.emit("MaxPool", [nchw.name], x.dtype, out + "_pool",
                      tuple(oshape[p] for p in _NHWC_TO_NCHW), kernel_h=kh, kernel_w=kw,
                      stride_h=sh, stride_w=sw, pad_top=top, pad_bottom=bottom, pad_left=left,
                      pad_right=right, act_min=lo, act_max=hi)
        self.values[out] = self.transpose(y, _NCHW_TO_NHWC, out)

    def op_avg_pool2d(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "AVG_POOL2D")
        a = self.attribute(op, "AvgPool2dAttribute")
        (kh, kw), (sh, sw) = a.KernelAsNumpy().tolist(), a.StrideAsNumpy().tolist()
        pads = a.PadAsNumpy().tolist()
        izp = int(self.const(ins[1], "AVG_POOL2D").reshape(-1)[0])
        ozp = int(self.const(ins[2], "AVG_POOL2D").reshape(-1)[0])
        lo, hi = _range(x.dtype)
        oshape = self.tensors[out][0]
        if any(pads):
            # the divisor is the in-bounds count, which changes near the border: ortnpu's
            # AveragePool divides by it rounding half away from zero, which equals TOSA's
            # reciprocal_scale multiply (docs/tosa.md); the zero points must be 0 for that
            if izp or ozp:
                raise UnsupportedError(f"{self.where}: AVG_POOL2D {out!r} with padding {pads} "
                                       f"and zero points {izp}, {ozp}: only zero points 0 are "
                                       "imported for a padded AVG_POOL2D")
            top, bottom, left, right = pads
            nchw = self.transpose(x, _NHWC_TO_NCHW, out + "_nchw")
            y = self.emit("AveragePool", [nchw.name], x.dtype, out + "_avg",
                          tuple(oshape[p] for p in _NHWC_TO_NCHW), kernel_h=kh, kernel_w=kw,
                          stride_h=sh, stride_w=sw, pad_top=top, pad_bottom=bottom,
                          pad_left=left, pad_right=right, act_min=lo, act_max=hi)
            self.values[out] = self.transpose(y, _NCHW_TO_NHWC, out)
            return
        mult, rshift = reciprocal_scale(kh * kw)
        c = x.shape[3]
        lo, hi = _range(x.dtype)
        nchw = self.transpose(x, _NHWC_TO_NCHW, out + "_nchw")
        oshape = self.tensors[out][0]
        w = self.init(np.ones((c, 1, kh, kw), np.int8), "ones")
        y = self.emit("Conv", [nchw.name, w, self.init(np.zeros(c, np.int64), "bias"),
                               self.init(np.array([mult], np.int32), "m"),
                               self.init(np.array([-rshift], np.int32), "s")],
                      x.dtype, out + "_avg", tuple(oshape[p] for p in _NHWC_TO_NCHW),
                      x_zp=izp, y_zp=ozp, act_min=lo, act_max=hi, stride_h=sh, stride_w=sw,
                      group=c, rounding="half_up", acc_bits=32 if x.dtype.itemsize == 1 else 64)
        self.values[out] = self.transpose(y, _NCHW_TO_NHWC, out)

    def op_table(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "TABLE")
        table = self.const(ins[1], "TABLE").astype(np.int64).reshape(-1)
        if x.dtype == np.int8:
            if table.size != 256:
                raise UnsupportedError(f"{self.where}: TABLE {out!r}: an int8 table has 256 "
                                       f"entries, got {table.size}")
            self.values[out] = self.emit("Lut", [x.name, self.init(table.astype(np.int8),
                                                                   "table")], np.int8, out,
                                         x.shape)
            return
        if table.size != 513:
            raise UnsupportedError(f"{self.where}: TABLE {out!r}: an int16 table has 513 "
                                   f"entries, got {table.size}")
        self.values[out] = Acc("table16", "TABLE", {"x": x, "table": table})

    def op_clamp(self, op: Any, ins: list[str], out: str) -> None:
        x = self.act(ins[0], "CLAMP")
        a = self.attribute(op, "ClampAttribute")
        lo = _signed_bytes(a.MinValAsNumpy(), x.dtype)
        hi = _signed_bytes(a.MaxValAsNumpy(), x.dtype)
        node = self._clamp_site(ins[0], x.name)
        if node is not None:
            for at in node.attribute:
                if at.name == "act_min":
                    at.i = max(at.i, lo)
                elif at.name == "act_max":
                    at.i = min(at.i, hi)
            self.values[out] = x
            return
        self.values[out] = self.lut(x, lambda v: np.clip(v, lo, hi), x.dtype, out)

    def _clamp_site(self, tosa_name: str, name: str) -> onnx.NodeProto | None:
        """The node whose output clamp can take a CLAMP of ``name``: its producer, through
        layout ops that only it reads (a clamp commutes with moving values), when nothing but
        the CLAMP reads the TOSA tensor."""
        if self.tosa_uses.get(tosa_name, 0) != 1 or tosa_name in self.outputs:
            return None
        node = self.producer.get(name)
        while node is not None and node.op_type.split("_")[0] in ("Transpose", "Reshape"):
            src = node.input[0]
            if sum(i == src for n in self.nodes for i in n.input) != 1:
                return None
            node = self.producer.get(src)
        if node is None or not {"act_min", "act_max"} <= {at.name for at in node.attribute}:
            return None
        return node

    def lut(self, x: Act, fn: Callable[[np.ndarray], np.ndarray], out_dtype: Any,
            base: str) -> Act:
        """A Lut node with ``table[i] = fn(i)`` for every value of x's type."""
        info = np.iinfo(x.dtype)
        values = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
        table = np.asarray(fn(values), np.int64).astype(out_dtype)
        return self.emit("Lut", [x.name, self.init(table, "table")], out_dtype, base, x.shape)

    # ------------------------------------------------------- accumulator ops
    def op_conv2d(self, op: Any, ins: list[str], out: str, depthwise: bool = False) -> None:
        name = "DEPTHWISE_CONV2D" if depthwise else "CONV2D"
        x = self.act(ins[0], name)
        w = self.const(ins[1], name).astype(np.int64)
        bias = self.const(ins[2], name).astype(np.int64).reshape(-1)
        izp = int(self.const(ins[3], name).reshape(-1)[0])
        wzp = int(self.const(ins[4], name).reshape(-1)[0])
        a = self.attribute(op, "DepthwiseConv2dAttribute" if depthwise else "Conv2dAttribute")
        w = w - wzp
        if w.size and (w.min() < -128 or w.max() > 127):
            raise UnsupportedError(f"{self.where}: {name} {out!r}: weights minus the weight "
                                   f"zero point {wzp} leave the int8 range; ortnpu's Conv has "
                                   "int8 weights with zero point 0")
        if depthwise:
            kh, kw, c, m = w.shape
            wt = w.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]
            group = c
        else:
            wt = w.transpose(0, 3, 1, 2)
            group = 1
        oc = wt.shape[0]
        self.values[out] = Acc("conv", name, {
            "x": x, "w": wt.astype(np.int8), "bias": np.broadcast_to(bias, (oc,)).copy(),
            "x_zp": izp, "group": group, "pad": a.PadAsNumpy().tolist(),
            "stride": a.StrideAsNumpy().tolist(), "dilation": a.DilationAsNumpy().tolist(),
            "oshape": self.tensors[out][0]})

    def op_depthwise_conv2d(self, op: Any, ins: list[str], out: str) -> None:
        self.op_conv2d(op, ins, out, depthwise=True)

    def op_matmul(self, op: Any, ins: list[str], out: str) -> None:
        a, b = self.act(ins[0], "MATMUL"), self.act(ins[1], "MATMUL")
        azp = int(self.const(ins[2], "MATMUL").reshape(-1)[0])
        bzp = int(self.const(ins[3], "MATMUL").reshape(-1)[0])
        self.values[out] = Acc("matmul", "MATMUL", {"a": a, "b": b, "a_zp": azp, "b_zp": bzp,
                                                    "oshape": self.tensors[out][0]})

    def _scaled(self, name: str, op: str) -> dict[str, Any]:
        v = self.values.get(name)
        if isinstance(v, Acc) and v.kind == "scaled":
            return v.parts
        raise UnsupportedError(f"{self.where}: {op}: input {name!r} must be a RESCALE of an "
                               "8/16-bit tensor to int32 (TOSA's quantized elementwise form)")

    def op_add(self, op: Any, ins: list[str], out: str, sign: int = 1) -> None:
        kind = "ADD" if sign > 0 else "SUB"
        if self.tensors[out][1] != _INT32:
            raise UnsupportedError(f"{self.where}: {kind} {out!r}: only the int32 form is "
                                   "imported (ortnpu has no float TOSA profile)")
        self.values[out] = Acc("add", kind, {"a": self._scaled(ins[0], kind),
                                             "b": self._scaled(ins[1], kind), "sign": sign,
                                             "oshape": self.tensors[out][0]})

    def op_sub(self, op: Any, ins: list[str], out: str) -> None:
        self.op_add(op, ins, out, sign=-1)

    def op_mul(self, op: Any, ins: list[str], out: str) -> None:
        shift = int(self.const(ins[2], "MUL").reshape(-1)[0]) if len(ins) > 2 else 0
        if shift:
            raise UnsupportedError(f"{self.where}: MUL {out!r}: a shift of {shift} rounds the "
                                   "int32 product before the RESCALE; ortnpu's Mul does not")
        operands = []
        for n in ins[:2]:
            v = self.values.get(n)
            if isinstance(v, Acc) and v.kind == "scaled":
                zp = _identity_zp(v.parts)
                if zp is None:
                    raise UnsupportedError(f"{self.where}: MUL {out!r}: input {n!r} is a "
                                           "RESCALE that changes the scale; ortnpu's Mul takes "
                                           "only a zero-point subtraction before the product")
                operands.append((v.parts["x"], zp))
            else:
                operands.append((self.act(n, "MUL"), 0))
        self.values[out] = Acc("mul", "MUL", {"a": operands[0], "b": operands[1],
                                              "oshape": self.tensors[out][0]})

    def op_reduce_sum(self, op: Any, ins: list[str], out: str) -> None:
        p = self._scaled(ins[0], "REDUCE_SUM")
        zp = _identity_zp(p)
        if zp is None:
            raise UnsupportedError(f"{self.where}: REDUCE_SUM {out!r}: its input RESCALE "
                                   "changes the scale; only a zero-point subtraction is imported")
        axis = int(self.attribute(op, "ReduceSumAttribute").Axis())
        self.values[out] = Acc("sum", "REDUCE_SUM", {"x": p["x"], "zp": zp, "axis": axis,
                                                     "oshape": self.tensors[out][0]})

    # --------------------------------------------------------------- RESCALE
    def op_rescale(self, op: Any, ins: list[str], out: str) -> None:
        r = self.rescale_params(op, ins, out)
        out_kind = self.tensors[out][1]
        src = self.values.get(ins[0])
        if out_kind == _INT32:
            x = self.act(ins[0], "RESCALE")
            self.values[out] = Acc("scaled", "RESCALE", {"x": x, "r": r})
            return
        if out_kind not in (_INT8, _INT16):
            raise UnsupportedError(f"{self.where}: RESCALE {out!r} to TOSA type {out_kind} "
                                   "is not imported (int8, int16 and int32 are)")
        out_dtype = np.dtype(_NP[out_kind])
        if isinstance(src, Acc):
            self.values[out] = self.fuse(src, r, out_dtype, out)
            return
        x = self.act(ins[0], "RESCALE")
        if r.in_unsigned or r.out_unsigned:
            # a function of the stored 8/16-bit value per channel: a Lut per run of channels
            # with one multiplier and shift
            def unsigned(xs: list[Act], rr: Rescale, name: str) -> Act:
                return self.lut(xs[0], lambda v: _rescale_values(v, x.dtype, rr, out_dtype),
                                out_dtype, name)

            self.values[out] = self.by_channel([x], [True], r, out, unsigned)
            return
        lo, hi = _range(out_dtype)
        self.values[out] = self.emit(
            "Requantize", [x.name, self.init(r.multiplier.astype(np.int32), "m"),
                           self.init(r.shift.astype(np.int32), "s")], out_dtype, out, x.shape,
            x_zp=r.in_zp, y_zp=r.out_zp, axis=-1, act_min=lo, act_max=hi, rounding=r.rule)

    def fuse(self, acc: Acc, r: Rescale, out_dtype: np.dtype, out: str) -> Act:
        """The ortnpu op of an accumulator and the RESCALE that consumes it."""
        if r.in_unsigned or r.out_unsigned:
            raise UnsupportedError(f"{self.where}: RESCALE {out!r} of {acc.op}: unsigned "
                                   "input or output is not imported")
        if r.in_zp:
            raise UnsupportedError(f"{self.where}: RESCALE {out!r}: an int32 input has zero "
                                   "point 0 in TOSA")
        lo, hi = _range(out_dtype)
        clamp = {"act_min": lo, "act_max": hi}
        p = acc.parts
        m32, s32 = r.multiplier.astype(np.int32), r.shift.astype(np.int32)
        if acc.kind == "conv":
            x = p["x"]
            top, bottom, left, right = p["pad"]
            (sh, sw), (dh, dw) = p["stride"], p["dilation"]
            nchw = self.transpose(x, _NHWC_TO_NCHW, out + "_nchw")
            oshape = p["oshape"]
            y = self.emit("Conv", [nchw.name, self.init(p["w"], "w"), self.init(p["bias"], "b"),
                                   self.init(m32, "m"), self.init(s32, "s")], out_dtype,
                          out + "_conv", tuple(oshape[k] for k in _NHWC_TO_NCHW),
                          x_zp=p["x_zp"], y_zp=r.out_zp, **clamp, stride_h=sh, stride_w=sw,
                          dilation_h=dh, dilation_w=dw, pad_top=top, pad_bottom=bottom,
                          pad_left=left, pad_right=right, group=p["group"], rounding=r.rule,
                          acc_bits=32 if x.dtype.itemsize == 1 else 64)
            return self.transpose(y, _NCHW_TO_NHWC, out)
        if r.per_channel and acc.kind != "sum":
            return self._fuse_per_channel(acc, r, out_dtype, out)
        m, s = r.scalar()
        if acc.kind == "matmul":
            a, b = p["a"], p["b"]
            return self.emit("MatMul", [a.name, b.name, self.init(m32[:1], "m"),
                                        self.init(s32[:1], "s")], out_dtype, out, p["oshape"],
                             a_zp=p["a_zp"], b_zp=p["b_zp"], y_zp=r.out_zp, **clamp,
                             rounding=r.rule, acc_bits=32 if a.dtype.itemsize == 1 else 64)
        if acc.kind == "table16":
            x, table = p["x"], p["table"]
            return self.lut(x, lambda v: _rescale_values(
                lut_tosa_int16(v, table), np.dtype(np.int32), r, out_dtype), out_dtype, out)
        if acc.kind == "mul":
            (a, azp), (b, bzp) = p["a"], p["b"]
            return self.emit("Mul", [a.name, b.name], out_dtype, out, p["oshape"], a_zp=azp,
                             b_zp=bzp, y_zp=r.out_zp, multiplier=m, shift=s, **clamp,
                             rounding=r.rule)
        if acc.kind == "sum":
            return self._reduce_sum(p, r, out_dtype, out)
        return self._add(acc, r, out_dtype, out)

    def _fuse_per_channel(self, acc: Acc, r: Rescale, out_dtype: np.dtype, out: str) -> Act:
        """A per-channel RESCALE after MATMUL / ADD / SUB / MUL / TABLE: ortnpu's MatMul, Add,
        Mul and Lut rescale per tensor, so each run of channels (the last axis) that shares a
        multiplier and shift becomes its own op on the sliced operands, concatenated back."""
        p = acc.parts
        if acc.kind == "matmul":
            keys, xs = ["b"], [p["b"]]
        elif acc.kind == "add":
            keys, xs = ["a", "b"], [p["a"]["x"], p["b"]["x"]]
        elif acc.kind == "mul":
            keys, xs = ["a", "b"], [p["a"][0], p["b"][0]]
        else:   # table16
            keys, xs = ["x"], [p["x"]]
        channels = r.multiplier.size
        cut = [x.shape[-1] == channels for x in xs]   # else broadcast along the channels

        def piece(parts_x: list[Act], rr: Rescale, name: str) -> Act:
            parts = dict(p)
            for key, x in zip(keys, parts_x, strict=True):
                if acc.kind == "add":
                    parts[key] = {**p[key], "x": x}
                elif acc.kind == "mul":
                    parts[key] = (x, p[key][1])
                else:
                    parts[key] = x
            if "oshape" in parts:
                shape = tuple(int(d) for d in p["oshape"])
                width = max(x.shape[-1] for x in parts_x) if any(cut) else shape[-1]
                parts["oshape"] = (*shape[:-1], width)
            return self.fuse(Acc(acc.kind, acc.op, parts), rr, out_dtype, name)

        return self.by_channel(xs, cut, r, out, piece)

    def by_channel(self, xs: list[Act], cut: list[bool], r: Rescale, out: str,
                   build: Callable[[list[Act], Rescale, str], Act]) -> Act:
        """``build`` once per run of consecutive channels (last axis) with one multiplier and
        shift, on ``xs`` sliced to the run where ``cut`` says, the results concatenated."""
        m, s = r.multiplier.reshape(-1), r.shift.reshape(-1)
        channels = m.size
        if s.size != channels:
            raise UnsupportedError(f"{self.where}: RESCALE {out!r}: {channels} multipliers and "
                                   f"{s.size} shifts")
        starts = [0] + [c for c in range(1, channels)
                        if (m[c], s[c]) != (m[c - 1], s[c - 1])] + [channels]
        pieces = []
        for c0, c1 in itertools.pairwise(starts):
            rr = dataclasses.replace(r, multiplier=m[c0:c0 + 1], shift=s[c0:c0 + 1],
                                     per_channel=False)
            if c1 - c0 == channels:
                return build(xs, rr, out)
            sliced = [self.slice_axis(x, -1, c0, c1, out) if k else x
                      for x, k in zip(xs, cut, strict=True)]
            pieces.append(build(sliced, rr, out + "_ch"))
        return self.concat(pieces, len(pieces[0].shape) - 1, out)

    def slice_axis(self, x: Act, axis: int, start: int, end: int, base: str,
                   step: int = 1) -> Act:
        """``x[start:end:step]`` on one axis (ONNX Slice rules)."""
        axis %= len(x.shape)
        first, stop = _slice_bounds(x.shape[axis], start, end, step)
        size = max(0, -(-(stop - first) // step))
        shape = tuple(size if d == axis else n for d, n in enumerate(x.shape))
        inputs = [x.name, self.init(np.array([start], np.int64), "starts"),
                  self.init(np.array([end], np.int64), "ends"),
                  self.init(np.array([axis], np.int64), "axes"),
                  self.init(np.array([step], np.int64), "steps")]
        return self.emit("Slice", inputs, x.dtype, base + "_slice", shape)

    def concat(self, xs: list[Act], axis: int, base: str) -> Act:
        """One tensor of ``xs`` joined on ``axis``: a tree of Concats (at most
        ``MAX_VARIADIC`` inputs each)."""
        while len(xs) > 1:
            groups = [xs[i:i + MAX_VARIADIC] for i in range(0, len(xs), MAX_VARIADIC)]
            joined = []
            for grp in groups:
                if len(grp) == 1:
                    joined.append(grp[0])
                    continue
                shape = list(grp[0].shape)
                shape[axis] = sum(x.shape[axis] for x in grp)
                name = base if len(groups) == 1 else base + "_part"
                joined.append(self.emit("Concat", [x.name for x in grp], grp[0].dtype, name,
                                        tuple(shape), axis=axis))
            xs = joined
        return xs[0]

    def _add(self, acc: Acc, r: Rescale, out_dtype: np.dtype, out: str) -> Act:
        p = acc.parts
        ra, rb = p["a"]["r"], p["b"]["r"]
        xa, xb = p["a"]["x"], p["b"]["x"]
        for side, rr in (("a", ra), ("b", rb)):
            if rr.per_channel or rr.in_unsigned:
                raise UnsupportedError(f"{self.where}: {acc.op} {out!r}: input {side} has a "
                                       "per-channel or unsigned RESCALE; not imported")
        rules = {ra.rule, rb.rule, r.rule}
        if len(rules) > 1:
            raise UnsupportedError(f"{self.where}: {acc.op} {out!r}: its three RESCALEs round "
                                   f"differently ({', '.join(sorted(rules))}); ortnpu's Add has "
                                   "one rule")
        (ma, sa), (mb, sb), (my, sy) = ra.scalar(), rb.scalar(), r.scalar()
        spec, extra = "Add", {}
        if p["sign"] < 0:
            spec = "Sub"
            negate = self.target.arithmetic.sub_negate
            extra["negate"] = negate
            if negate == "multiplier":
                # a target that negates b's multiplier (TFLite's order) runs TOSA's SUB only
                # where that rounds like TOSA's RESCALE-then-SUB on every value of b
                values = np.arange(int(np.iinfo(xb.dtype).min),
                                   int(np.iinfo(xb.dtype).max) + 1, dtype=np.int64) - rb.in_zp
                neg_first = rescale(values, np.int64(-mb), np.int64(sb), r.rule)
                neg_after = -rescale(values, np.int64(mb), np.int64(sb), r.rule)
                if not np.array_equal(neg_first, neg_after):
                    raise UnsupportedError(
                        f"{self.where}: SUB {out!r}: b's RESCALE has rounding ties, where "
                        f"target {self.target.name} (sub_negate = 'multiplier': b's "
                        "multiplier negated) and TOSA (the rounded b subtracted) differ; "
                        "import for a target with sub_negate = 'result' (tosa-int8/int16)")
        lo, hi = _range(out_dtype)
        return self.emit(spec, [xa.name, xb.name], out_dtype, out, p["oshape"], a_zp=ra.in_zp,
                         b_zp=rb.in_zp, y_zp=r.out_zp, left_shift=0, a_multiplier=ma,
                         a_shift=sa, b_multiplier=mb, b_shift=sb, y_multiplier=my, y_shift=sy,
                         act_min=lo, act_max=hi, rounding=r.rule, **extra)

    def _reduce_sum(self, p: dict[str, Any], r: Rescale, out_dtype: np.dtype, out: str) -> Act:
        x, axis = p["x"], p["axis"] % len(p["x"].shape)
        rank = len(x.shape)
        if r.per_channel and axis == rank - 1:
            raise UnsupportedError(f"{self.where}: RESCALE {out!r}: per-channel over the "
                                   "reduced axis")
        perm = tuple([d for d in range(rank) if d != axis] + [axis])
        moved = self.transpose(x, perm, out + "_last") if axis != rank - 1 else x
        k = x.shape[axis]
        lo, hi = _range(out_dtype)
        m32, s32 = r.multiplier.astype(np.int32), r.shift.astype(np.int32)
        if r.per_channel:
            # FullyConnected rescales per output column; the channels of the sum are x's last
            # axis, so this case is refused above unless the sum is over another axis
            raise UnsupportedError(f"{self.where}: RESCALE {out!r}: per-channel after "
                                   "REDUCE_SUM is not imported")
        y = self.emit("FullyConnected", [moved.name, self.init(np.ones((1, k), np.int8), "ones"),
                                         self.init(np.zeros(1, np.int64), "b"),
                                         self.init(m32[:1], "m"), self.init(s32[:1], "s")],
                      out_dtype, out + "_sum", (*moved.shape[:-1], 1),
                      x_zp=p["zp"], y_zp=r.out_zp, act_min=lo, act_max=hi, rounding=r.rule,
                      acc_bits=32 if x.dtype.itemsize == 1 else 64)
        if axis == rank - 1:
            return y
        inverse = tuple(int(i) for i in np.argsort(perm))
        return self.transpose(y, inverse, out)


def reciprocal_scale(count: int) -> tuple[int, int]:
    """TOSA's ``reciprocal_scale``: ``(multiplier, right shift)``, ``m · 2^-shift ≈ 1/count``."""
    k = (count - 1).bit_length()
    return (((1 << 30) + 1) << k) // count, 30 + k


def lut_tosa_int16(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """TOSA's ``apply_lookup_s``: 513 int16 entries, 7-bit interpolation, an int32 result with
    23 significant bits (``(base << 7) + slope · fraction``)."""
    v = np.clip(np.asarray(values, np.int64), -32768, 32767)
    t = np.asarray(table, np.int64)
    index = (v + 32768) >> 7
    frac = v & 0x7F
    base = t[index]
    return (base << 7) + (t[index + 1] - base) * frac


def _identity_zp(p: dict[str, Any]) -> int | None:
    """The zero point of a RESCALE that only subtracts it (scale exactly 1), else None."""
    r: Rescale = p["r"]
    x: Act = p["x"]
    if r.per_channel or r.in_unsigned:
        return None
    m, s = r.scalar()
    values = np.arange(int(np.iinfo(x.dtype).min), int(np.iinfo(x.dtype).max) + 1,
                       dtype=np.int64) - r.in_zp
    got = rescale(values, np.int64(m), np.int64(s), r.rule) + r.out_zp
    return r.in_zp - r.out_zp if np.array_equal(got, values + r.out_zp) else None


def _rescale_values(v: np.ndarray, in_dtype: np.dtype, r: Rescale, out_dtype: np.dtype
                    ) -> np.ndarray:
    """A per-tensor TOSA RESCALE of the stored values ``v`` (numpy), unsigned variants too."""
    v = np.asarray(v, np.int64)
    if r.in_unsigned:
        v = v & ((1 << (8 * in_dtype.itemsize)) - 1)
    m, s = r.scalar()
    y = rescale(v - r.in_zp, np.int64(m), np.int64(s), r.rule) + r.out_zp
    bits = 8 * out_dtype.itemsize
    if r.out_unsigned:
        y = np.clip(y, 0, (1 << bits) - 1)
        return np.where(y >= 1 << (bits - 1), y - (1 << bits), y)   # the stored bit pattern
    lo, hi = _range(out_dtype)
    return np.clip(y, lo, hi)


def _range(dtype: Any) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _signed_bytes(raw: np.ndarray, dtype: np.dtype) -> int:
    """A CLAMP bound: TOSA stores it as the little-endian bytes of the tensor's type."""
    b = np.asarray(raw, np.uint8).tobytes()[: dtype.itemsize]
    return int(np.frombuffer(b, dtype=np.dtype(dtype).newbyteorder("<"))[0])


def import_tosa(path: str | Path | bytes, target: Target | str | None = None) -> onnx.ModelProto:
    """Read a TOSA 1.0 flatbuffer (``.tosa``) into an NPU graph of the ``com.ortnpu`` domain.

    Args:
        path: the flatbuffer file, or its bytes.
        target: the target written into the graph; default ``tosa-int16`` when an input or
            output is int16, else ``tosa-int8``. The arithmetic itself comes from the file
            (each RESCALE's rounding mode and multipliers), not from the target.

    Returns:
        An ONNX model whose inputs and outputs are the TOSA graph's (int8/int16, TOSA layout),
        runnable with :class:`ortnpu.InferenceSession` and exportable like any NPU graph.

    Raises:
        UnsupportedError: an op or pattern ortnpu does not run, named in the message.
        ModelError: the file is not a TOSA flatbuffer.
    """
    if isinstance(path, (bytes, bytearray)):
        data, where = bytes(path), "<bytes>"
    else:
        try:
            data, where = Path(path).read_bytes(), str(path)
        except OSError as exc:
            raise ModelError(f"{path}: cannot read: {exc}") from None
    return _Importer(data, target, where).run()
