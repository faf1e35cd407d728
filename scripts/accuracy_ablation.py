"""Where int8 loses top-1 agreement: weights and activations quantized one part at a time.

The float model runs in onnxruntime with one part of the int8 quantization simulated in float
(docs/measurements.md, "Where the int8 loss is"); every row is scored on the accuracy bench's
evaluation crops against the float model, like ``python -m ortnpu.bench accuracy``:

* ``weights:nearest`` / ``weights:gptq``: every Conv/Gemm weight as symmetric per-channel int8
  (scale ``max|w|/127``) rounded to nearest, or with GPTQ's error feedback
  (:func:`ortnpu.quant.gptq.gptq_rounding`) against the layer's float inputs on the calibration
  data; activations stay float.
* ``both:nearest`` / ``both:gptq``: those weights and every activation per tensor (below).
* ``acts:GROUPS`` / ``acts-pc:GROUPS``: QuantizeLinear/DequantizeLinear (uint8, per tensor; or
  per channel with each channel's calibration extremes, which no TFLite int8 NPU has) on the
  tensors an int8 NPU graph holds, by group: ``in`` (the image), ``relu`` (Conv + ReLU6
  outputs), ``proj`` (Conv outputs without activation: the linear bottlenecks), ``add`` (the
  residual sums), ``head`` (pooling and logits), ``all``. Per-tensor ranges: the clipping with
  the least squared error on the calibration data (a 36x36 search over both ends); weights
  stay float.

This is a diagnostic, not ortnpu's quantizer (which fuses, rounds and corrects differently):
its rows say which part of the int8 grid costs the agreement. Beside them, ``npu:`` rows run
ortnpu's own quantizer (the default, on the same calibration crops) and its NPU graph:

* ``npu:default`` (``tflite-int8``), ``npu:a16w8`` (``tflite-a16w8``: every activation in 16
  bits), ``npu:int16=T1,T2`` (``tflite-int8`` with the named activations in 16 bits, the
  layers touching them in TFLite's 16x8 arithmetic: what 16 bits on a few tensors would buy).
* ``autofix:GOAL``: ``ortnpu.autofix`` on ``tflite-int8`` with top-1 agreement as the
  objective, scored on the first half of the evaluation crops; the row scores its graph on the
  other half only.

Every row also gives the logits' SQNR against float (dB over the evaluation crops).

Run: ``python scripts/accuracy_ablation.py mobilenet_v2 weights:nearest weights:gptq acts:all``
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.bench import models as bench_models
from ortnpu.bench.accuracy import confident_mask
from ortnpu.domain.arith import round_half_away
from ortnpu.quant import QuantConfig
from ortnpu.quant.gptq import gptq_rounding

GROUPS = ("in", "relu", "proj", "add", "head")


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def run(model: onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list:
    """Every output of ``model`` over the samples of ``x``, one sample at a time (the bench
    models have a fixed batch of 1)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    runs = [sess.run(outputs, {name: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


class Ablation:
    """One optimized float model with its calibration and evaluation crops."""

    def __init__(self, name: str) -> None:
        loaded = bench_models.load([name])
        if not loaded:
            raise SystemExit(f"{name}: not available (see the message above)")
        self.bench = loaded[0]
        self.model = ortnpu.optimize(onnx.load(str(self.bench.path)))
        self.inits = {i.name: i for i in self.model.graph.initializer}
        self.layers = [n for n in self.model.graph.node
                       if n.op_type in ("Conv", "Gemm") and n.input[1] in self.inits]
        self.reference = run(self.model, self.bench.test)[0]
        self.confident = confident_mask(self.reference)
        self.producer = {o: n for n in self.model.graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.model.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def score(self, model: onnx.ModelProto, crops: slice = slice(None)
              ) -> tuple[float, float, float]:
        """Top-1 agreement with float, overall and on the confident crops, and the SQNR of
        the first output against float (dB), on the evaluation ``crops``."""
        test = self.bench.test[crops]
        if any(n.domain == "com.ortnpu" for n in model.graph.node):
            sess = ortnpu.InferenceSession(model.SerializeToString())
            name = sess.get_inputs()[0].name
            out = np.concatenate([sess.run(None, {name: test[i:i + 1]})[0]
                                  for i in range(len(test))])
        else:
            out = run(model, test)[0]
        ref = self.reference[crops].astype(np.float64)
        agree = out.argmax(1) == ref.argmax(1)
        sqnr = 10 * np.log10((ref ** 2).sum() / ((out - ref) ** 2).sum())
        return float(agree.mean()), float(agree[self.confident[crops]].mean()), float(sqnr)

    def autofix(self, goal: str) -> tuple[onnx.ModelProto, slice]:
        """autofix's graph for an agreement ``goal`` on the first half of the evaluation
        crops, and the other half, which it did not see."""
        from ortnpu.quant.autofix import agreement

        half = len(self.bench.test) // 2
        npu, report = ortnpu.autofix(self.model, "tflite-int8", self.bench.calib,
                                     self.bench.test[:half], agreement(), goal=float(goal),
                                     progress=False)
        print(report, flush=True)
        return npu, slice(half, None)

    def npu(self, what: str) -> onnx.ModelProto:
        """ortnpu's own NPU graph: ``default``, ``a16w8`` or ``int16=T1,T2``."""
        target, int16 = "tflite-int8", frozenset()
        if what == "a16w8":
            target = "tflite-a16w8"
        elif what.startswith("int16="):
            int16 = frozenset(what.removeprefix("int16=").split(","))
        elif what != "default":
            raise SystemExit(f"npu:{what}: expected npu:default, npu:a16w8 or npu:int16=T1,T2")
        return ortnpu.quantize(self.model, target, self.bench.calib, optimize=False,
                               config=QuantConfig(int16_tensors=int16))

    # ---------------------------------------------------------------- weights
    def _patches(self, x: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
        """The layer's input rows, [samples * positions, groups, D] (im2col for a Conv)."""
        if node.op_type != "Conv":
            return x.reshape(-1, x.shape[-1])[:, None, :]
        a = attrs(node)
        _, per_group, kh, kw = numpy_helper.to_array(self.inits[node.input[1]]).shape
        groups, (sh, sw) = a.get("group", 1), a.get("strides", [1, 1])
        pads, (dh, dw) = a.get("pads", [0, 0, 0, 0]), a.get("dilations", [1, 1])
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        n, c, h, w = xp.shape
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                      j * dw:j * dw + sw * (ow - 1) + 1:sw]
        cols = cols.reshape(n, groups, per_group * kh * kw, oh * ow).transpose(0, 3, 1, 2)
        return cols.reshape(-1, groups, per_group * kh * kw)

    def grams(self) -> dict[str, np.ndarray]:
        """``E[x·xᵀ]`` of every layer's float input rows on the calibration data."""
        probe = with_outputs(self.model, [n.input[0] for n in self.layers])
        names = [o.name for o in probe.graph.output]
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(self.bench.calib), 8):
            values = dict(zip(names, run(probe, self.bench.calib[i:i + 8]), strict=True))
            for node in self.layers:
                rows = self._patches(values[node.input[0]].astype(np.float64), node)
                out[node.name] = out.get(node.name, 0) + np.einsum("rgi,rgj->gij", rows, rows)
        return out

    def int8_weights(self, rounding: str) -> onnx.ModelProto:
        """The float model with every layer's weights on their per-channel int8 grid."""
        grams = self.grams() if rounding == "gptq" else {}
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        inits = {i.name: i for i in out.graph.initializer}
        for node in self.layers:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            transposed = node.op_type == "Gemm" and not attrs(node).get("transB", 0)
            w = w.T if transposed else w
            scale = np.abs(w.reshape(len(w), -1)).max(axis=1) / 127
            scale[scale == 0] = 1.0
            per_row = scale.reshape((-1,) + (1,) * (w.ndim - 1))
            if rounding == "gptq":
                q = gptq_rounding(w, scale, attrs(node).get("group", 1), (-127, 127),
                                  grams[node.name])
            else:
                q = np.clip(round_half_away(w / per_row), -127, 127)
            back = q * per_row
            back = back.T if transposed else back
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(back.astype(np.float32),
                                                                  node.input[1]))
        return out

    # ------------------------------------------------------------ activations
    def group_of(self, tensor: str) -> str | None:
        """Which group of NPU tensors ``tensor`` is in (None: fused away or not held)."""
        if tensor == self.model.graph.input[0].name:
            return "in"
        op = self.producer[tensor].op_type
        if op == "Clip":
            return "relu"
        if op == "Conv":
            fused = any(r.op_type == "Clip" for r in self.readers.get(tensor, []))
            return None if fused else "proj"
        return {"Add": "add", "GlobalAveragePool": "head", "Gemm": "head"}.get(op)

    def activation_ranges(self, tensors: list[str]) -> tuple[dict, dict]:
        """Per tensor the least-squared-error clipping; per channel the extremes."""
        probe = with_outputs(self.model, tensors)
        names = [o.name for o in probe.graph.output]
        samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
        per_channel: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i in range(len(self.bench.calib)):   # a sample at a time: 64 x all tensors is GBs
            values = dict(zip(names, run(probe, self.bench.calib[i:i + 1]), strict=True))
            for t in tensors:
                v = values[t]
                axes = tuple(d for d in range(v.ndim) if d != 1)
                lo, hi = np.minimum(v.min(axis=axes), 0), np.maximum(v.max(axis=axes), 0)
                if t in per_channel:
                    lo, hi = np.minimum(per_channel[t][0], lo), np.maximum(per_channel[t][1], hi)
                per_channel[t] = (lo, hi)
                samples[t].append(v.ravel()[::7])
        rng = np.random.default_rng(0)
        per_tensor = {}
        for t in tensors:
            flat = np.concatenate(samples[t]).astype(np.float64)
            if flat.size > 200_000:
                flat = rng.choice(flat, 200_000, replace=False)
            lo0, hi0 = min(flat.min(), 0.0), max(flat.max(), 0.0)
            best = (np.inf, lo0, hi0)
            for fl in np.linspace(0.3, 1, 36) if lo0 < 0 else (1.0,):
                for fh in np.linspace(0.3, 1, 36):
                    lo, hi = lo0 * fl, hi0 * fh
                    s = (hi - lo) / 255 or 1.0
                    zp = np.round(-lo / s)
                    err = float(np.mean(((np.clip(np.round(flat / s) + zp, 0, 255) - zp) * s
                                         - flat) ** 2))
                    best = min(best, (err, lo, hi))
            per_tensor[t] = best[1:]
        return per_tensor, per_channel

    def int8_activations(self, groups: set[str], per_channel: bool,
                         base: onnx.ModelProto | None = None) -> onnx.ModelProto:
        """The float model (or ``base``, its weights changed) with a uint8
        quantize-dequantize on every tensor of ``groups``; the ranges are the float model's."""
        tensors = [t for t in [self.model.graph.input[0].name,
                               *(o for n in self.model.graph.node for o in n.output)]
                   if self.group_of(t) in groups]
        tensor_ranges, channel_ranges = self.activation_ranges(tensors)
        out = onnx.ModelProto()
        out.CopyFrom(base or self.model)
        after: dict[str, list[onnx.NodeProto]] = {}
        for t in tensors:
            lo, hi = channel_ranges[t] if per_channel else tensor_ranges[t]
            s = np.maximum((np.asarray(hi) - lo) / 255, 1e-8)
            zp = np.clip(np.round(-np.asarray(lo) / s), 0, 255).astype(np.uint8)
            axis = {"axis": 1} if per_channel else {}
            out.graph.initializer.extend([
                numpy_helper.from_array(s.astype(np.float32), f"{t}__s"),
                numpy_helper.from_array(zp, f"{t}__zp")])
            after[t] = [
                helper.make_node("QuantizeLinear", [t, f"{t}__s", f"{t}__zp"], [f"{t}__q"],
                                 **axis),
                helper.make_node("DequantizeLinear", [f"{t}__q", f"{t}__s", f"{t}__zp"],
                                 [f"{t}__fq"], **axis)]
        nodes = list(after.get(out.graph.input[0].name, []))
        for node in out.graph.node:
            for k, name in enumerate(node.input):
                if name in after:
                    node.input[k] = f"{name}__fq"
            nodes += [node, *(q for o in node.output for q in after.get(o, []))]
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an accuracy bench model (mobilenet_v2, ...)")
    parser.add_argument("rows", nargs="+",
                        help="weights:nearest|gptq, acts:GROUPS, acts-pc:GROUPS, "
                             "both:nearest|gptq (int8 weights and every activation per tensor) "
                             "npu:default|a16w8|int16=T1,T2 (ortnpu's own NPU graph) or "
                             "autofix:GOAL (its agreement goal) "
                             f"(GROUPS: all or comma-separated from {', '.join(GROUPS)})")
    args = parser.parse_args()
    ab = Ablation(args.model)
    makers: dict[str, Callable[[str], onnx.ModelProto]] = {
        "weights": ab.int8_weights,
        "acts": lambda g: ab.int8_activations(set(GROUPS) if g == "all" else set(g.split(",")),
                                              False),
        "acts-pc": lambda g: ab.int8_activations(set(GROUPS) if g == "all" else
                                                 set(g.split(",")), True),
        "both": lambda r: ab.int8_activations(set(GROUPS), False, ab.int8_weights(r)),
        "npu": ab.npu,
    }
    print(f"| {args.model} | top-1 agreement with float | agreement when float is confident "
          f"({int(ab.confident.sum())} crops) | logits SQNR |\n|---|---|---|---|", flush=True)
    for row in args.rows:
        kind, _, what = row.partition(":")
        if kind not in makers and kind != "autofix":
            raise SystemExit(f"unknown row {row!r}")
        if kind == "autofix":
            npu, crops = ab.autofix(what)
            agree, sure, sqnr = ab.score(npu, crops)
            row = f"{row} (the other {len(ab.bench.test[crops])} crops)"
        else:
            agree, sure, sqnr = ab.score(makers[kind](what))
        print(f"| {row} | {agree * 100:.1f} % | {sure * 100:.2f} % | {sqnr:.2f} dB |",
              flush=True)


if __name__ == "__main__":
    main()
