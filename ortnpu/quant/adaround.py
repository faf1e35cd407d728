"""Learned rounding of weights (AdaRound, Nagel et al., ICML 2020), in numpy.

Rounding every weight to its nearest grid point minimises each weight's own error, not the
layer's output error: errors of neighbouring weights that meet the same inputs add up or cancel.
AdaRound chooses, per weight, to round down or up so that the layer's output on the calibration
data stays closest to the float output. The binary choice is relaxed to a continuous ``h(V)`` in
[0, 1] (a rectified sigmoid, ``clip(σ(V)(ζ-γ)+γ, 0, 1)`` with ζ = 1.1, γ = -0.1), optimised by
Adam against

    ‖W·x - s·(⌊W/s⌋ + h(V))·x‖² + λ Σ (1 - |2h(V) - 1|^β),

where the regulariser (off for the first ``warmup`` share of the iterations, then with β annealed
from 20 down to 2) pushes every ``h`` to 0 or 1; at the end ``h`` is rounded and the integer
weights are exact. Only the rounding changes: scales, clipping and the integer pipeline
downstream are those of the nearest rounding.

Why a quadratic form: the output error of a linear layer is ``ΔW·x``, so its mean square over the
calibration data is ``tr(ΔW·H·ΔWᵀ)`` with ``H = E[x·xᵀ]`` (per group of a grouped conv). ``H`` is
accumulated during calibration (:class:`GramCollector`, one pass, memory one ``D×D`` matrix per
layer, ``D`` = inputs of one output), so each Adam step costs ``C_out·D²`` whatever the amount of
calibration data. When a layer has fewer input rows than ``D/2`` (a classifier on a few images)
the rows themselves are kept and the step costs ``2·C_out·D·rows``.

With float inputs only (``inputs="float"``) the loss is the layer's own output error, the
paper's basic form. The default (``inputs="quantized"``) feeds the layer its float input
through the input tensor's own quantization (``x_q``: QuantizeLinear and back with the NPU
graph's scale and zero point, clipping included): the loss becomes
``‖W·x - s·(⌊W/s⌋ + h(V))·x_q‖²``, i.e. ``tr(A·H_qq·Aᵀ) - 2·tr(W·H_fq·Aᵀ) + const`` with
``H_qq = E[x_q·x_qᵀ]`` and ``H_fq = E[x·x_qᵀ]``, so the rounding also offsets the input grid's
error. The upstream layers' errors are left out on purpose: they get their own learned
rounding, and offsetting the errors of their nearest rounding here as well corrected them twice
(MobileNetV2 collapsed; a sequential pass would avoid that at one NPU run per layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.domain.arith import round_half_away
from ortnpu.quant.params import weight_params
from ortnpu.target import Arithmetic

#: rectified sigmoid stretch (the paper's ζ and γ)
ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundOptions:
    """Optimisation settings (the paper's, with fewer iterations: the exact quadratic loss
    has no sampling noise, so a larger step converges in fewer of them).

    Attributes:
        iterations: Adam steps per layer.
        reg: weight λ of the rounding regulariser.
        beta: start and end of β, annealed linearly after the warm-up.
        warmup: share of the iterations without regulariser.
        lr: Adam step size on ``V``.
    """

    iterations: int = 1000
    reg: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2
    lr: float = 1e-2


@dataclass(frozen=True)
class Layer:
    """One conv / fully connected layer whose weights get learned rounding.

    ``weight`` is the initializer name; ``w`` is in the lowering's layout ([C_out, C_in/g, kh,
    kw] or [N, K]); ``transposed`` when the initializer stores the transpose ([K, N], MatMul).
    """

    node: str
    x: str
    weight: str
    w: np.ndarray
    group: int = 1
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    transposed: bool = False
    conv: bool = False

    @property
    def depth(self) -> int:
        """Inputs of one output: ``D`` of the Gram matrix."""
        return int(np.prod(self.w.shape[1:]))


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


#: the most inputs per output (``D``) of a layer whose rounding is learned: its Gram matrix
#: takes ``8·D²`` bytes and GPTQ holds several copies of it. VGG-19's first classifier layer
#: (D = 25 088: 5 GB per copy) drove a default quantization out of memory (killed at 24 GB);
#: layers beyond this round to nearest.
MAX_LEARNED_DEPTH = 8192


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """Conv (2-D, explicit pads), Gemm and MatMul nodes of the graph with constant weights.

    A weight shared by two layers is left to nearest rounding (one rounding cannot be
    learned for two different inputs), and so is a layer with more than
    :data:`MAX_LEARNED_DEPTH` inputs per output (its statistics would not fit in memory)."""
    g = model.graph
    consts = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    uses: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    layers: list[Layer] = []
    for node in g.node:
        if len(node.input) < 2 or node.input[1] not in consts or uses[node.input[1]] != 1:
            continue
        if node.input[0] in consts:
            continue
        w = numpy_helper.to_array(consts[node.input[1]])   # float64 only for the layers kept
        if node.op_type == "Conv" and w.ndim == 4:
            if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                continue
            pads = tuple(int(p) for p in _attr(node, "pads", [0, 0, 0, 0]))  # type: ignore[union-attr]
            layers.append(Layer(
                node.name, node.input[0], node.input[1], w, conv=True,
                group=int(_attr(node, "group", 1)),  # type: ignore[arg-type]
                kernel=(w.shape[2], w.shape[3]),
                strides=tuple(_attr(node, "strides", [1, 1])),  # type: ignore[arg-type]
                dilations=tuple(_attr(node, "dilations", [1, 1])),  # type: ignore[arg-type]
                pads=pads))  # type: ignore[arg-type]
        elif node.op_type in ("Gemm", "MatMul") and w.ndim == 2:
            if node.op_type == "Gemm" and (_attr(node, "transA", 0) or
                                           _attr(node, "alpha", 1.0) != 1.0):
                continue
            trans_b = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
            layers.append(Layer(node.name, node.input[0], node.input[1],
                                w if trans_b else w.T, transposed=not trans_b))
    return [replace(la, w=la.w.astype(np.float64)) for la in layers
            if la.depth <= MAX_LEARNED_DEPTH]


def _columns(layer: Layer, x: np.ndarray, pick: np.ndarray | None = None) -> np.ndarray:
    """Input columns of one sample per group: [G, D, rows] (D ordered as the weights'), the
    transpose of :func:`_patches`.

    Built from ``kh·kw`` strided slices of the padded input, one per kernel tap, so the
    positions stay the contiguous axis: a depthwise layer's Gram matrix is then one batched
    ``[D, rows]·[rows, D]`` product per channel, without the gather-and-transpose of an im2col
    (that took ~80 % of the statistics pass on MobileNetV2).

    ``pick``: the output positions (row-major over the output plane) to take, default all.
    """
    if not layer.conv:
        rows = x.reshape(-1, x.shape[-1])
        return np.ascontiguousarray((rows if pick is None else rows[pick]).T, np.float32)[None]
    c = x.shape[0]
    g = layer.group
    top, left, bottom, right = layer.pads
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(layer.pads):   # pointwise: no copy
        flat = x.reshape(c, -1)
        return np.asarray(flat if pick is None else flat[:, pick],
                          np.float32).reshape(g, c // g, -1)
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    cols = np.stack(taps, axis=1).reshape(c, kh * kw, ho * wo)      # [C, taps, positions]
    if pick is not None:
        cols = cols[:, :, pick]
    return cols.reshape(g, (c // g) * kh * kw, cols.shape[-1])


def _column_sums(layer: Layer, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Sums of one sample's input columns over every output position, [G, D] (float64),
    and the number of positions: the same as ``_columns(layer, x).sum(axis=2)`` without
    building the columns (one strided slice sum per kernel tap)."""
    if not layer.conv:
        rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        return rows.sum(axis=0)[None], rows.shape[0]
    c = x.shape[0]
    g = layer.group
    top, left, bottom, right = layer.pads
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    sums = np.stack([xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                        j * dw:j * dw + sw * (wo - 1) + 1:sw].sum(axis=(1, 2), dtype=np.float64)
                     for i in range(kh) for j in range(kw)], axis=1)      # [C, taps]
    return sums.reshape(g, (c // g) * kh * kw), ho * wo


def _patches(layer: Layer, x: np.ndarray, pick: np.ndarray | None = None) -> np.ndarray:
    """Input rows of one sample per group: [G, rows, D] (im2col; D ordered as the weights').

    ``pick``: the output positions (row-major over the output plane) to take, default all.
    """
    return np.ascontiguousarray(_columns(layer, x, pick).transpose(0, 2, 1))


def output_positions(layer: Layer, shape: tuple[int, ...]) -> int:
    """Output positions per sample of a conv layer on an input of ``shape`` ([C, H, W])."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    top, left, bottom, right = layer.pads
    ho = (shape[1] + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (shape[2] + left + right - dw * (kw - 1) - 1) // sw + 1
    return ho * wo


@dataclass
class _Stats:
    gram: np.ndarray | None = None   # [G, D, D], float64 sums
    rows: list[np.ndarray] = field(default_factory=list)  # kept while few: [G, r, D]
    kept: int = 0
    count: int = 0
    #: with the NPU graph's inputs: Σ x_q·x_qᵀ and Σ x·x_qᵀ, and the row pairs while few
    qgram: np.ndarray | None = None
    cross: np.ndarray | None = None
    qrows: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    qcount: int = 0
    #: Σ x and Σ x_q over every output position (not only the sampled rows), [G, D], and
    #: the positions counted: the empirical bias correction's means
    fsum: np.ndarray | None = None
    qsum: np.ndarray | None = None
    mcount: int = 0


@dataclass
class GramCollector:
    """Wraps a calibrator and also accumulates ``Σ x·xᵀ`` of every layer's input rows.

    Everything else (ranges, channel means) is the wrapped calibrator's.
    """

    inner: object
    layers: list[Layer]
    #: output positions sampled per image (fixed seed): the early layers of an image network
    #: have ~10⁴ positions of few inputs each; a few thousand estimate ``E[x·xᵀ]`` as well
    max_rows: int = 2048
    stats: dict[str, _Stats] = field(default_factory=dict)
    #: learned weights per (arithmetic, per-channel, options, solver): autofix quantizes many
    #: times
    cache: dict[tuple, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    #: also accumulate ``Σ x·x_qᵀ`` (only AdaRound's loss on quantized inputs reads it)
    need_cross: bool = True
    #: the 16-bit activations of the NPU graph whose inputs were read: a quantization that
    #: widens or narrows a layer's input has other input statistics (see :meth:`stale`)
    wide: frozenset[str] = frozenset()

    def stale(self, wide: frozenset[str]) -> set[str]:
        """Weight initializers whose layer reads a tensor that is 16-bit in a quantization
        with ``wide`` tensors and was not when the inputs were read, or the other way round:
        their measured bias answers another input grid (an autofix trial widening a badly
        ranged input would get a bias that corrects the int8 grid's error a second time), and
        so does AdaRound's rounding, learned to offset that grid's error; ``quantize`` drops
        the bias and rounds AdaRound's layers to nearest. GPTQ's rounding stays: it only sees
        the inputs' Gram, which the int8 grid merely damps. Only when the inputs were read
        (``x_q``); float-input statistics do not depend on the grid."""
        if not any(st.qcount for st in self.stats.values()):
            return set()
        changed = wide ^ self.wide
        return {la.weight for la in self.layers if la.x in changed}

    def learned(self, arith: Arithmetic, per_channel: bool,
                options: AdaRoundOptions = AdaRoundOptions(), solver: str = "adaround"
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Integer weights with learned rounding (see :func:`learned_weights`), computed once
        per setting."""
        key = (arith, per_channel, options, solver)
        if key not in self.cache:
            self.cache[key] = learned_weights(self, arith, per_channel, options, solver=solver)
        return self.cache[key]

    def bias_deltas(self, arith: Arithmetic, per_channel: bool,
                    options: AdaRoundOptions = AdaRoundOptions(), solver: str = "adaround"
                    ) -> dict[str, np.ndarray]:
        """Per weight initializer, the mean output error of its layer with the learned
        weights on the NPU graph's inputs, ``W·E[x] - A·E[x_q]`` per output channel (float,
        output units): added to the bias, it removes the mean shift that input clipping and
        rounding leave (empirical bias correction). Only layers whose quantized inputs were
        read get one."""
        learned = self.learned(arith, per_channel, options, solver)
        out: dict[str, np.ndarray] = {}
        for layer in self.layers:
            st = self.stats.get(layer.node)
            if st is None or st.fsum is None or not st.mcount or layer.weight not in learned:
                continue
            q, scales = learned[layer.weight]
            q = q.T if layer.transposed else q
            cout, g = layer.w.shape[0], layer.group
            sc = np.broadcast_to(np.asarray(scales, np.float64).reshape(-1), (cout,))
            a = (q.astype(np.float64).reshape(cout, -1) * sc[:, None]).reshape(g, cout // g, -1)
            w = layer.w.reshape(g, cout // g, -1)
            mf, mq = st.fsum / st.mcount, st.qsum / st.mcount              # [G, D]
            delta = np.einsum("god,gd->go", w, mf) - np.einsum("god,gd->go", a, mq)
            out[layer.weight] = delta.reshape(cout)
        return out

    def __post_init__(self) -> None:
        self._by_input: dict[str, list[Layer]] = {}
        for layer in self.layers:
            self._by_input.setdefault(layer.x, []).append(layer)

    def collect(self, name: str, values: np.ndarray) -> None:
        self.inner.collect(name, values)  # type: ignore[attr-defined]
        for layer in self._by_input.get(name, ()):
            self._add(layer, np.asarray(values, np.float32))

    def _add(self, layer: Layer, values: np.ndarray) -> None:
        s = self.stats.setdefault(layer.node, _Stats())
        if layer.conv:
            if values.ndim != 4 or values.shape[1] != layer.w.shape[1] * layer.group:
                return
            samples = list(values)
        else:
            if values.shape[-1] != layer.depth:
                return
            samples = [values]
        rng = np.random.default_rng(len(s.rows) + s.count)
        for x in samples:
            cols = _columns(layer, x, self._pick(layer, x, rng))
            s.gram = _accumulate(s.gram, np.matmul(cols, cols.transpose(0, 2, 1)))
            s.count += cols.shape[2]
            if s.kept * 2 < layer.depth:
                s.rows.append(np.ascontiguousarray(cols.transpose(0, 2, 1)))
                s.kept += cols.shape[2]

    def _pick(self, layer: Layer, x: np.ndarray, rng: np.random.Generator
              ) -> np.ndarray | None:
        """Output positions sampled for one image (None: all of them)."""
        if not layer.conv:
            return None
        total = output_positions(layer, x.shape)
        if total <= self.max_rows:
            return None
        return np.sort(rng.choice(total, self.max_rows, replace=False))

    def add_quantized(self, layer: Layer, x: np.ndarray, xq: np.ndarray) -> None:
        """One batch of a layer's float input ``x`` and the NPU graph's input ``xq``
        (dequantized) on the same sample: accumulates ``H_qq`` and ``H_fq``."""
        s = self.stats.setdefault(layer.node, _Stats())
        if layer.conv:
            if x.ndim != 4 or x.shape != xq.shape or x.shape[1] != layer.w.shape[1] * layer.group:
                return
            pairs = list(zip(x, xq, strict=True))
        else:
            if x.shape[-1] != layer.depth or x.shape != xq.shape:
                return
            pairs = [(x, xq)]
        rng = np.random.default_rng(len(s.qrows) + s.qcount)
        for xf, xqi in pairs:
            pick = self._pick(layer, xf, rng)
            cq = _columns(layer, np.asarray(xqi, np.float32), pick)     # [G, D, rows]
            s.qgram = _accumulate(s.qgram, np.matmul(cq, cq.transpose(0, 2, 1)))
            (fs, positions), (qs, _) = _column_sums(layer, xf), _column_sums(layer, xqi)
            s.fsum = fs if s.fsum is None else s.fsum + fs
            s.qsum = qs if s.qsum is None else s.qsum + qs
            s.mcount += positions
            if self.need_cross:
                cf = _columns(layer, np.asarray(xf, np.float32), pick)
                s.cross = _accumulate(s.cross, np.matmul(cf, cq.transpose(0, 2, 1)))
                if sum(r[0].shape[1] for r in s.qrows) * 2 < layer.depth:
                    s.qrows.append((np.ascontiguousarray(cf.transpose(0, 2, 1)),
                                    np.ascontiguousarray(cq.transpose(0, 2, 1))))
            s.qcount += cq.shape[2]

    def range_of(self, name: str) -> tuple[float, float]:
        return self.inner.range_of(name)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        if name in ("inner", "layers", "max_rows", "stats", "cache", "need_cross", "wide",
                    "_by_input"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _accumulate(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """``total + part`` in float64, in place: the same sums as adding a float64 copy of
    ``part`` (the cast is exact), without allocating two matrices of the Gram's size per image
    (a 4608-input layer's is 170 MB: 9 s of copies and gigabytes of peak memory on ResNet-18)."""
    if total is None:
        return part.astype(np.float64)
    return np.add(total, part, out=total)


def _h(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified sigmoid and its derivative."""
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    inside = (raw > 0.0) & (raw < 1.0)
    return np.clip(raw, 0.0, 1.0), np.where(inside, sig * (1.0 - sig) * (ZETA - GAMMA), 0.0)


def learn_rounding(w: np.ndarray, scales: np.ndarray, group: int, weight_range: tuple[int, int],
                   gram: np.ndarray | None = None, rows: np.ndarray | None = None,
                   options: AdaRoundOptions = AdaRoundOptions(),
                   cross: np.ndarray | None = None,
                   qrows: np.ndarray | None = None) -> np.ndarray:
    """Integer weights [C_out, ...] (as int64) with learned rounding.

    Args:
        w: float weights [C_out, D...] (D = the inputs of one output, in patch order).
        scales: per output channel (or one) weight scales.
        group: groups of the layer (output channel ``o`` reads input group ``o // (C_out/g)``).
        weight_range: integer bounds of the weights.
        gram: ``E[x·xᵀ]`` per group, [G, D, D]; or ``rows``: the input rows / sqrt(count),
            [G, r, D] (used when fewer than D/2).
        options: optimisation settings.
        cross: ``E[x·x_qᵀ]`` per group when the layer reads quantized inputs ``x_q`` (then
            ``gram`` is ``E[x_q·x_qᵀ]``); or ``qrows``: the rows of ``x_q`` beside ``rows``.

    The result is the learned rounding, or the nearest one when that has the lower output
    error (a safety net: the relaxation is not guaranteed to find a better binary point).
    """
    cout = w.shape[0]
    d = int(np.prod(w.shape[1:]))
    og = cout // group
    s = np.broadcast_to(np.asarray(scales, np.float64).reshape(-1), (cout,)).reshape(group, og, 1)
    wf = w.reshape(group, og, d).astype(np.float64)
    lo, hi = weight_range
    base = np.floor(wf / s)
    frac = wf / s - base
    nearest = np.clip(round_half_away(wf / s), lo, hi)   # what weight_params gives
    s32 = s.astype(np.float32)
    w32 = wf.astype(np.float32)
    if rows is not None and qrows is not None:
        f32, q32 = rows.astype(np.float32), qrows.astype(np.float32)
        target = np.matmul(w32, f32.transpose(0, 2, 1))              # float output [G, og, r]

        def error_grad(wq: np.ndarray) -> tuple[float, np.ndarray]:
            e = np.matmul(wq * s32, q32.transpose(0, 2, 1)) - target
            return float((e * e).sum()), 2.0 * np.matmul(e, q32)
    elif cross is not None:
        h32 = gram.astype(np.float32)
        wh = np.matmul(w32, cross.astype(np.float32))               # W·E[x·x_qᵀ]

        def error_grad(wq: np.ndarray) -> tuple[float, np.ndarray]:
            a = wq * s32
            ah = np.matmul(a, h32) - wh
            # E‖A·x_q - W·x‖² less its constant E‖W·x‖²: tr(A·H_qq·Aᵀ) - 2·tr(A·H_qf·Wᵀ)
            return float((a * (ah - wh)).sum()), 2.0 * ah
    elif rows is not None:
        f32 = rows.astype(np.float32)

        def error_grad(wq: np.ndarray) -> tuple[float, np.ndarray]:
            dw = (wq * s32 - w32)                               # [G, og, D]
            e = np.matmul(dw, f32.transpose(0, 2, 1))            # [G, og, r]
            return float((e * e).sum()), 2.0 * np.matmul(e, f32)
    else:
        h32 = gram.astype(np.float32)

        def error_grad(wq: np.ndarray) -> tuple[float, np.ndarray]:
            dw = (wq * s32 - w32)
            dh = np.matmul(dw, h32)
            return float((dw * dh).sum()), 2.0 * dh

    # V starts where h(V) equals the fractional part: the relaxation starts at the float weight
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1.0 - p))
    m = np.zeros_like(v)
    u = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    n = options.iterations
    start = int(options.warmup * n)
    fixed = (base + 1 <= lo) | (base >= hi)        # clipped either way: nothing to learn
    for t in range(1, n + 1):
        h, dh = _h(v)
        wq = np.clip(base + h, lo, hi).astype(np.float32)
        _, g_w = error_grad(wq)
        g = g_w.astype(np.float64) * s * dh
        if t > start:
            beta = options.beta[1] + (options.beta[0] - options.beta[1]) * \
                (1.0 - (t - start) / max(1, n - start))
            a = 2.0 * h - 1.0
            g = g + options.reg * (-beta * np.abs(a) ** (beta - 1.0) * np.sign(a) * 2.0) * dh
        g[fixed] = 0.0
        m = b1 * m + (1 - b1) * g
        u = b2 * u + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        uhat = u / (1 - b2 ** t)
        v -= options.lr * mhat / (np.sqrt(uhat) + eps)
    learned = np.clip(base + (v >= 0.0), lo, hi)
    if error_grad(learned.astype(np.float32))[0] > error_grad(nearest.astype(np.float32))[0]:
        learned = nearest
    return learned.reshape(w.shape).astype(np.int64)


def learned_weights(collector: GramCollector, arith: Arithmetic, per_channel: bool,
                    options: AdaRoundOptions = AdaRoundOptions(), progress: bool = True,
                    solver: str = "adaround") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Integer weights with learned rounding for every layer the collector saw, keyed by
    initializer and in its layout (the form of :class:`~ortnpu.quant.QuantPreset` weights).

    ``solver``: ``"adaround"`` (:func:`learn_rounding`, Adam on the relaxed rounding) or
    ``"gptq"`` (:func:`ortnpu.quant.gptq.gptq_rounding`, one error-feedback pass over the
    inputs' Gram matrix; the NPU graph's quantized inputs when they were read)."""
    from ortnpu import console
    from ortnpu.quant.gptq import gptq_rounding

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    layers = [la for la in collector.layers if la.node in collector.stats]
    if progress:
        layers = console.progress(layers, total=len(layers), desc="learning rounding",
                                  unit="layer")
    for layer in layers:
        st = collector.stats[layer.node]
        _, scales = weight_params(layer.w, arith, per_channel, axis=0)
        if solver == "gptq":
            if st.qgram is not None and st.qcount:
                h = st.qgram / st.qcount
            elif st.gram is not None and st.count:
                h = st.gram / st.count
            else:
                continue
            q = gptq_rounding(layer.w, scales, layer.group, arith.weight_range, h)
            q8 = q.astype(np.int8)
            out[layer.weight] = (q8.T if layer.transposed else q8, scales)
            continue
        if (st.gram is None or not st.count) and (st.qgram is None or not st.qcount):
            continue
        rows = qrows = cross = None
        if st.qgram is not None and st.qcount:    # the NPU graph's inputs were read
            gram, cross = st.qgram / st.qcount, st.cross / st.qcount
            if sum(r[0].shape[1] for r in st.qrows) * 2 < layer.depth and st.qrows:
                rows = np.concatenate([r[0] for r in st.qrows], axis=1) / math.sqrt(st.qcount)
                qrows = np.concatenate([r[1] for r in st.qrows], axis=1) / math.sqrt(st.qcount)
        else:
            gram = st.gram / st.count
            if st.kept * 2 < layer.depth and st.rows:
                rows = np.concatenate(st.rows, axis=1) / math.sqrt(st.count)
        q = learn_rounding(layer.w, scales, layer.group, arith.weight_range, gram=gram,
                           rows=rows, options=options, cross=cross, qrows=qrows)
        q8 = q.astype(np.int8)
        out[layer.weight] = (q8.T if layer.transposed else q8, scales)
    return out


def read_quantized_inputs(collector: GramCollector, model: onnx.ModelProto,
                          npu: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> int:
    """Run the float model on ``feeds`` and give the collector every layer's float input and
    that input through its NPU tensor's quantization (``npu``'s scale and zero point:
    QuantizeLinear and back; see :meth:`GramCollector.add_quantized`).

    Only the layer's own input grid, not the upstream layers' errors: those layers get learned
    rounding (and the measured bias) themselves, and a loss that also offset the errors their
    nearest rounding makes would correct them twice (measured on MobileNetV2: 38.6 % agreement
    with the NPU graph's own inputs against 74.9 % with float inputs, docs/measurements.md).

    Returns the number of layers whose input has NPU quantization parameters (a layer left on
    the CPU keeps the float-input loss when the calibration pass gathered one, else its
    nearest rounding, which the CPU does not use anyway).
    """
    import onnxruntime as ort

    from ortnpu import console
    from ortnpu.comparison import _npu_tensors, _with_outputs

    tensors = _npu_tensors(npu, "the nearest-rounded NPU graph")
    layers = [la for la in collector.layers if la.x in tensors and tensors[la.x].int_name]
    if not layers or not feeds:
        return 0
    xs = sorted({la.x for la in layers})
    graph_inputs = {i.name for i in model.graph.input}
    f_fetch = [x for x in xs if x not in graph_inputs]
    f_sess = ort.InferenceSession(
        _with_outputs(model, f_fetch, {}).SerializeToString(), console.quiet_session_options(),
        providers=["CPUExecutionProvider"]) if f_fetch else None
    for feed in feeds:   # (no names to fetch: run would return every output)
        got = dict(zip(f_fetch, f_sess.run(f_fetch, feed), strict=True)) if f_sess else {}
        got.update({x: feed[x] for x in xs if x in graph_inputs})
        for layer in layers:
            x = np.asarray(got[layer.x], np.float32)
            xq = tensors[layer.x].fake_quantize(x).astype(np.float32)
            collector.add_quantized(layer, x, xq)
    return len(layers)
