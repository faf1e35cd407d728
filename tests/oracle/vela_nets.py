"""Arm's Vela as an outside oracle of ortnpu's performance estimate (docs/measurements.md).

One layer list describes each network; it is written twice, as an int8 ``.tflite`` model (the
flatbuffer schema of the ``tflite`` package, through :mod:`tflite_builder`) that Vela compiles,
and as the float ONNX model ``ortnpu.estimate`` reads. Every layer's output tensor carries the
same name in both, so Vela's per-layer CSV (``--verbose-performance``) and ortnpu's per-layer
estimate are joined by name. Weights are seeded random int8 values (Vela compresses weights, so
their content changes its numbers a little; real weights compress better).

Run ``python tests/oracle/vela_nets.py`` for the comparison table (needs ``ethos-u-vela``).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tflite_builder import TFLiteGraph  # this folder is on sys.path (pytest, or the script)

#: ortnpu preset -> Vela accelerator config (the system config and memory mode are Vela's
#: defaults for the accelerator: Ethos_U55_High_End_Embedded + Shared_Sram, and
#: Ethos_U65_Client_Server + Dedicated_Sram_384KB).
PRESETS = {"ethos-u55-128": "ethos-u55-128", "ethos-u65-256": "ethos-u65-256"}


@dataclass(frozen=True)
class Layer:
    """One layer: ``kind`` is conv, dw, add, maxpool, gap or fc; ``src`` the input names."""

    kind: str
    name: str
    src: tuple[str, ...]
    k: int = 1
    stride: int = 1
    cout: int = 0
    relu: bool = False


def _inverted_residuals(layers: list[Layer], x: str, cin: int, settings: list[tuple],
                        prefix: str) -> tuple[str, int]:
    """MobileNetV2's bottlenecks (t, c, n, s): expand 1x1, depthwise 3x3, project 1x1, Add."""
    b = 0
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            name = f"{prefix}{b}"
            h = x
            if t != 1:
                layers.append(Layer("conv", f"{name}_expand", (h,), 1, 1, cin * t, True))
                h = f"{name}_expand"
            layers.append(Layer("dw", f"{name}_dw", (h,), 3, stride, 0, True))
            layers.append(Layer("conv", f"{name}_project", (f"{name}_dw",), 1, 1, c, False))
            h = f"{name}_project"
            if stride == 1 and cin == c:
                layers.append(Layer("add", f"{name}_add", (h, x)))
                h = f"{name}_add"
            x, cin, b = h, c, b + 1
    return x, cin


def mobilenet_v2(width: float = 1.0, blocks: int = 17) -> tuple[list[Layer], tuple[int, ...]]:
    """MobileNetV2 at 224x224 (the real layer shapes at ``width`` 1); fewer ``blocks`` and a
    smaller width give the MobileNetV2-like net."""
    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    flat, left = [], blocks
    for t, c, n, s in settings:
        if left > 0:
            flat.append((t, ch(c), min(n, left), s))
            left -= n
    layers = [Layer("conv", "stem", ("input",), 3, 2, ch(32), True)]
    x, _ = _inverted_residuals(layers, "stem", ch(32), flat, "b")
    head = ch(1280) if width >= 1 else ch(320)
    layers.append(Layer("conv", "head", (x,), 1, 1, head, True))
    layers.append(Layer("gap", "gap", ("head",)))
    layers.append(Layer("fc", "logits", ("gap",), cout=1000))
    return layers, (224, 224, 3)


def mobilenet_v2_like() -> tuple[list[Layer], tuple[int, ...]]:
    """A MobileNetV2-like net: the first 7 bottlenecks at width 0.5, a 2x2 max pool, head."""
    layers, shape = mobilenet_v2(width=0.5, blocks=6)
    head = next(i for i, x in enumerate(layers) if x.name == "head")
    src = layers[head - 1].name
    layers[head:head] = [Layer("maxpool", "pool", (src,), 2, 2)]
    layers[head + 1] = Layer("conv", "head", ("pool",), 1, 1, layers[head + 1].cout, True)
    return layers, shape


def resnet_like() -> tuple[list[Layer], tuple[int, ...]]:
    """ResNet-18's layers (ortnpu.bench.models.resnet18_like): 7x7 stem, 3x3 max pool, eight
    basic blocks with 1x1 strided shortcuts, residual Add + ReLU, global pool, classifier."""
    layers = [Layer("conv", "stem", ("input",), 7, 2, 64, True),
              Layer("maxpool", "pool", ("stem",), 3, 2)]
    x, cin = "pool", 64
    for i, (cout, stride) in enumerate(((64, 1), (64, 1), (128, 2), (128, 1), (256, 2),
                                        (256, 1), (512, 2), (512, 1))):
        layers.append(Layer("conv", f"r{i}_a", (x,), 3, stride, cout, True))
        layers.append(Layer("conv", f"r{i}_b", (f"r{i}_a",), 3, 1, cout, False))
        short = x
        if stride != 1 or cin != cout:
            layers.append(Layer("conv", f"r{i}_short", (x,), 1, stride, cout, False))
            short = f"r{i}_short"
        layers.append(Layer("add", f"r{i}_add", (f"r{i}_b", short), relu=True))
        x, cin = f"r{i}_add", cout
    layers += [Layer("gap", "gap", (x,)), Layer("fc", "logits", ("gap",), cout=1000)]
    return layers, (224, 224, 3)


NETWORKS = {"mobilenet_v2_like": mobilenet_v2_like, "resnet_like": resnet_like,
            "mobilenet_v2": mobilenet_v2}


def _shapes(layers: list[Layer], shape: tuple[int, ...]) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of every tensor (SAME padding: the output side is ceil(side / stride))."""
    hwc = {"input": tuple(shape)}
    for ly in layers:
        h, w, c = hwc[ly.src[0]]
        if ly.kind in ("conv", "dw", "maxpool"):
            h, w = -(-h // ly.stride), -(-w // ly.stride)
        if ly.kind in ("conv", "fc"):
            c = ly.cout
        if ly.kind in ("gap", "fc"):
            h = w = 1
        hwc[ly.name] = (h, w, c)
    return hwc


def to_tflite(layers: list[Layer], shape: tuple[int, ...], seed: int = 0) -> bytes:
    """The int8 ``.tflite`` model of the layer list (NHWC, SAME padding, fused ReLU6)."""
    rng = np.random.default_rng(seed)
    hwc = _shapes(layers, shape)
    g = TFLiteGraph()
    idx = {"input": g.tensor("input", (1, *shape), "int8", scale=0.02, zero_point=0)}
    act = {True: 3, False: 0}   # ActivationFunctionType RELU6 / NONE
    for ly in layers:
        h, w, c = hwc[ly.name]
        cin = hwc[ly.src[0]][2]
        out = g.tensor(ly.name, (1, h, w, c) if ly.kind != "fc" else (1, c), "int8",
                       scale=0.05, zero_point=-128 if ly.relu else 0)
        x = idx[ly.src[0]]
        if ly.kind in ("conv", "dw", "fc"):
            wshape = {"conv": (c, ly.k, ly.k, cin), "dw": (1, ly.k, ly.k, c),
                      "fc": (c, cin)}[ly.kind]
            wt = g.tensor(f"{ly.name}_w", wshape, "int8", scale=np.full(c, 0.01),
                          zero_point=np.zeros(c, np.int64), axis=3 if ly.kind == "dw" else 0,
                          data=rng.integers(-127, 128, wshape))
            bias = g.tensor(f"{ly.name}_b", (c,), "int32", scale=np.full(c, 0.0002),
                            zero_point=np.zeros(c, np.int64),
                            data=rng.integers(-1000, 1000, c))
            if ly.kind == "conv":
                g.op("CONV_2D", [x, wt, bias], [out], ("Conv2DOptions", {
                    "Padding": 0, "StrideW": ly.stride, "StrideH": ly.stride,
                    "FusedActivationFunction": act[ly.relu]}))
            elif ly.kind == "dw":
                g.op("DEPTHWISE_CONV_2D", [x, wt, bias], [out], ("DepthwiseConv2DOptions", {
                    "Padding": 0, "StrideW": ly.stride, "StrideH": ly.stride,
                    "DepthMultiplier": 1, "FusedActivationFunction": act[ly.relu]}))
            else:
                g.op("FULLY_CONNECTED", [x, wt, bias], [out],
                     ("FullyConnectedOptions", {"FusedActivationFunction": 0}))
        elif ly.kind == "add":
            g.op("ADD", [x, idx[ly.src[1]]], [out], ("AddOptions", {
                "FusedActivationFunction": 1 if ly.relu else 0}))
        elif ly.kind in ("maxpool", "gap"):
            hin, win, _ = hwc[ly.src[0]]
            k, s = (ly.k, ly.stride) if ly.kind == "maxpool" else (hin, 1)
            opts = {"Padding": 0 if ly.kind == "maxpool" else 1, "StrideW": s, "StrideH": s,
                    "FilterWidth": k if ly.kind == "maxpool" else win, "FilterHeight": k,
                    "FusedActivationFunction": 0}
            g.op("MAX_POOL_2D" if ly.kind == "maxpool" else "AVERAGE_POOL_2D", [x], [out],
                 ("Pool2DOptions", opts))
        idx[ly.name] = out
    return g.build([idx["input"]], [idx[layers[-1].name]])


def to_onnx(layers: list[Layer], shape: tuple[int, ...], seed: int = 0) -> onnx.ModelProto:
    """The float ONNX model of the layer list (NCHW; ReLU6 as Clip, ReLU as Relu)."""
    rng = np.random.default_rng(seed)
    hwc = _shapes(layers, shape)
    nodes, inits = [], []
    inits += [numpy_helper.from_array(np.float32(0.0), "zero"),
              numpy_helper.from_array(np.float32(6.0), "six")]
    for ly in layers:
        cin, c = hwc[ly.src[0]][2], hwc[ly.name][2]
        x = ly.src[0]
        out = f"{ly.name}_pre" if ly.relu else ly.name
        if ly.kind in ("conv", "dw"):
            group = c if ly.kind == "dw" else 1
            w = rng.standard_normal((c, cin // group, ly.k, ly.k)).astype(np.float32) * 0.1
            inits += [numpy_helper.from_array(w, f"{ly.name}_w"),
                      numpy_helper.from_array(np.zeros(c, np.float32), f"{ly.name}_b")]
            nodes.append(helper.make_node(
                "Conv", [x, f"{ly.name}_w", f"{ly.name}_b"], [out], name=ly.name,
                kernel_shape=[ly.k, ly.k], strides=[ly.stride] * 2, group=group,
                pads=[(ly.k - 1) // 2] * 4))
        elif ly.kind == "fc":
            w = rng.standard_normal((c, cin)).astype(np.float32) * 0.05
            inits += [numpy_helper.from_array(w, f"{ly.name}_w"),
                      numpy_helper.from_array(np.zeros(c, np.float32), f"{ly.name}_b")]
            nodes.append(helper.make_node("Flatten", [x], [f"{ly.name}_flat"],
                                          name=f"{ly.name}_flat"))
            nodes.append(helper.make_node("Gemm", [f"{ly.name}_flat", f"{ly.name}_w",
                                                   f"{ly.name}_b"], [out], name=ly.name,
                                          transB=1))
        elif ly.kind == "add":
            nodes.append(helper.make_node("Add", list(ly.src), [out], name=ly.name))
        elif ly.kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [x], [out], name=ly.name,
                                          kernel_shape=[ly.k] * 2, strides=[ly.stride] * 2,
                                          pads=[(ly.k - 1) // 2] * 4))
        elif ly.kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [out], name=ly.name))
        if ly.relu and ly.kind == "add":
            nodes.append(helper.make_node("Relu", [out], [ly.name], name=f"{ly.name}_relu"))
        elif ly.relu:
            nodes.append(helper.make_node("Clip", [out, "zero", "six"], [ly.name],
                                          name=f"{ly.name}_relu6"))
    h, w, c = shape
    graph = helper.make_graph(
        nodes, "vela_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          [1, c, h, w])],
        [helper.make_tensor_value_info(layers[-1].name, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_vela(model: bytes, accelerator: str, workdir: Path) -> dict[str, float]:
    """Compile with Vela (default system config and memory mode of ``accelerator``); returns
    the cycles per layer from its per-layer CSV, keyed by the layer's output tensor name."""
    exe = shutil.which("vela")
    if exe is None:
        raise RuntimeError("vela is not installed: pip install ethos-u-vela")
    path = workdir / "net.tflite"
    path.write_bytes(model)
    out = workdir / accelerator
    proc = subprocess.run([exe, str(path), "--accelerator-config", accelerator,
                           "--output-dir", str(out), "--verbose-performance"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vela failed:\n{proc.stdout}\n{proc.stderr}")
    cycles: dict[str, float] = {}
    with open(out / "net_per-layer.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["Name"].strip()
            cycles[name] = cycles.get(name, 0.0) + float(row["Op Cycles"])
    return cycles


@dataclass
class Row:
    """One layer of the comparison."""

    network: str
    target: str
    layer: str
    op: str
    vela: float
    ortnpu: float
    bound: str

    @property
    def ratio(self) -> float:
        return self.ortnpu / self.vela if self.vela else float("inf")


def compare(network: str, preset: str, workdir: Path | None = None) -> list[Row]:
    """Per-layer cycles of Vela and of ``ortnpu.estimate`` on ``preset`` for one network."""
    from ortnpu.estimate import estimate

    layers, shape = NETWORKS[network]()
    with tempfile.TemporaryDirectory() as tmp:
        vela = run_vela(to_tflite(layers, shape), PRESETS[preset], Path(workdir or tmp))
    est = {x.name: x for x in estimate(to_onnx(layers, shape), preset).layers}
    rows = []
    for ly in layers:
        e = est[ly.name]
        rows.append(Row(network, preset, ly.name, ly.kind, vela.get(ly.name, 0.0), e.cycles,
                        e.bound))
    return rows


def table(rows: list[Row], per_layer: bool = True) -> str:
    """The comparison as a markdown table, then the summary per network and target."""
    lines = []
    if per_layer:
        lines += ["| network | target | layer | op | Vela cycles | ortnpu cycles | ratio | "
                  "bound |", "|---|---|---|---|---:|---:|---:|---|"]
        lines += [f"| {r.network} | {r.target} | {r.layer} | {r.op} | {r.vela:.0f} | "
                  f"{r.ortnpu:.0f} | {r.ratio:.2f} | {r.bound} |" for r in rows]
        lines.append("")
    lines += ["| network | target | layers within ±20 % | Vela total | ortnpu total | ratio |",
              "|---|---|---:|---:|---:|---:|"]
    for key in dict.fromkeys((r.network, r.target) for r in rows):
        sel = [r for r in rows if (r.network, r.target) == key]
        ok = sum(1 for r in sel if 0.8 <= r.ratio <= 1.2)
        tv, to = sum(r.vela for r in sel), sum(r.ortnpu for r in sel)
        lines.append(f"| {key[0]} | {key[1]} | {ok}/{len(sel)} | {tv:.0f} | {to:.0f} | "
                     f"{to / tv:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    networks = [a for a in argv if a in NETWORKS] or list(NETWORKS)
    presets = [a for a in argv if a in PRESETS] or list(PRESETS)
    rows = [r for n in networks for p in presets for r in compare(n, p)]
    print(table(rows, per_layer="--summary" not in argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
