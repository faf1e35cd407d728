"""Per-layer float-vs-integer comparison of an NPU graph: which layer loses the accuracy.

A quantized model that is less accurate than its float original rarely loses it everywhere: one
layer with a bad range or a wrong rescale usually does the damage, and every layer after it looks
bad too because errors flow downstream. :func:`compare` therefore measures each layer twice:

* **in the graph**: the layer's dequantized integer output, with the integer inputs the NPU graph
  really gave it, against the float model's tensor (the error accumulated so far), and
* **in isolation**: the layer's integer node alone, fed the float model's *exact* inputs
  quantized with the input tensors' own parameters, against the float output. This is the
  error the layer itself adds, independent of what happened upstream.

Layers are ranked by the isolated SQNR (lowest first), so the culprit comes first and its
victims do not. ``sqnr_drop_db`` (the in-graph SQNR of the worst input minus that of the output)
is reported next to it as a second, cheaper view of the same question. Metrics are accumulated
over the data in batches, so memory does not grow with the number of samples. The JSON schema of
:meth:`ComparisonReport.to_dict` is documented in ``docs/compare.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortnpu import console
from ortnpu.errors import CalibrationError, ModelError
from ortnpu.onnx_types import dim_size

SCHEMA = "ortnpu.compare/1"
DEFAULT_BATCH = 32
#: a layer whose isolated SQNR is this far below the lower quartile of the others "stands out"
SUSPECT_MARGIN_DB = 12.0
#: op types whose layers multiply by weights (their error is the weights' rounding)
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _has_weights(layer: LayerComparison) -> bool:
    """Whether the layer is a conv / fully-connected / matmul (its op, before any fused
    activation: ``Conv+Clip``)."""
    return layer.op_type.split("+")[0] in WEIGHT_OPS
#: layer names longer than this are shortened in the middle in the text table (see short_names)
NAME_WIDTH = 40
_META_TENSORS = "ortnpu.tensors"
_META_PLACEMENT = "ortnpu.placement"
_DOMAIN = "com.ortnpu"
_ISO = "__ortnpu_iso"

Data = Any  # array | {name: array} | iterable of {name: array} | CalibrationDataReader


# -- metrics --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metrics:
    """Error of one tensor over all samples (flattened).

    Attributes:
        sqnr_db: ``10·log10(Σx² / Σ(x−y)²)`` with ``x`` the float reference; ``inf`` when exact.
        cosine: cosine similarity of the flattened tensors (1 is identical direction).
        max_abs_error: largest ``|x − y|``.
        mean_abs_error: mean ``|x − y|``.
        count: number of values compared.
    """

    sqnr_db: float
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    count: int

    def to_dict(self) -> dict[str, object]:
        return {"sqnr_db": _num(self.sqnr_db), "cosine": _num(self.cosine),
                "max_abs_error": _num(self.max_abs_error),
                "mean_abs_error": _num(self.mean_abs_error), "count": self.count}


class _Accumulator:
    """Running sums of one tensor pair, so metrics need no stored tensors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.ref2 = self.test2 = self.dot = self.err2 = self.abs_sum = 0.0
        self.max_abs = 0.0

    def update(self, ref: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(ref, np.float64)
        test = np.asarray(test, np.float64)
        if ref.shape != test.shape:
            raise ModelError(f"tensor {self.name!r}: the float model gives shape "
                             f"{list(ref.shape)}, the NPU graph {list(test.shape)}; compare "
                             "needs the NPU graph made from this float model")
        if not np.isfinite(test).all():
            raise ModelError(f"tensor {self.name!r}: the NPU graph produces NaN or infinite "
                             "values; check the CPU nodes and the quantization parameters")
        err = ref - test
        abs_err = np.abs(err)
        self.n += ref.size
        # numpy's pairwise sums, not np.dot: BLAS splits a dot product over its threads, so
        # its rounding depended on the process's BLAS thread count (a Ray actor runs BLAS on
        # one thread) and evaluate_accuracy's engines disagreed in the last bits
        r, t, e = ref.ravel(), test.ravel(), err.ravel()
        self.ref2 += float(np.sum(r * r))
        self.test2 += float(np.sum(t * t))
        self.dot += float(np.sum(r * t))
        self.err2 += float(np.sum(e * e))
        self.abs_sum += float(abs_err.sum())
        if abs_err.size:
            self.max_abs = max(self.max_abs, float(abs_err.max()))

    def state(self) -> list[float]:
        """The running sums, to merge partial results (workers, batches) in a fixed order."""
        return [self.n, self.ref2, self.test2, self.dot, self.err2, self.abs_sum, self.max_abs]

    def merge(self, state: list[float]) -> None:
        """Add the sums of another accumulator's :meth:`state`."""
        n, ref2, test2, dot, err2, abs_sum, max_abs = state
        self.n += int(n)
        self.ref2 += ref2
        self.test2 += test2
        self.dot += dot
        self.err2 += err2
        self.abs_sum += abs_sum
        self.max_abs = max(self.max_abs, max_abs)

    def result(self) -> Metrics:
        if self.err2 == 0.0:
            sqnr = math.inf
        elif self.ref2 == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.ref2 / self.err2)
        if self.ref2 == 0.0 and self.test2 == 0.0:
            cos = 1.0
        elif self.ref2 == 0.0 or self.test2 == 0.0:
            cos = 0.0
        else:
            cos = self.dot / math.sqrt(self.ref2 * self.test2)
        return Metrics(sqnr, cos, self.max_abs, self.abs_sum / max(self.n, 1), self.n)


def measure(reference: np.ndarray, test: np.ndarray, name: str = "tensor") -> Metrics:
    """The metrics of one tensor against its float reference (``name`` appears in errors).

    Raises:
        ModelError: the shapes differ or ``test`` holds NaN or infinite values.
    """
    acc = _Accumulator(name)
    acc.update(reference, test)
    return acc.result()


# -- report ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerComparison:
    """One layer of the NPU graph (fused activations included) against the float model.

    Attributes:
        name: node name in the NPU graph (the float node's name).
        op_type: float op type, with fused activations: ``Conv+Relu``.
        device: ``NPU`` or ``CPU``.
        output: float name of the compared output tensor.
        index: position of the layer in the graph (execution order).
        scale: quantization step of the output (``None`` for CPU layers).
        zero_point: zero point of the output (``None`` for CPU layers).
        dtype: integer type of the output (``float32`` for CPU layers).
        in_graph: error of the output as the NPU graph computes it (accumulated).
        input_sqnr_db: lowest in-graph SQNR of the layer's inputs (graph inputs: their own
            quantization; ``inf`` when every input is exact).
        sqnr_drop_db: ``input_sqnr_db − in_graph.sqnr_db``: how much SQNR the layer loses.
        isolated: error of the layer alone on quantized exact inputs (``None``: not measured,
            e.g. CPU layers, which compute in float).
        isolated_input_sqnr_db: lowest SQNR of the layer's inputs quantized from the exact
            float values: the noise the isolated run starts from. A layer whose isolated SQNR
            is far below it degrades the signal itself; one close to it only inherits a bad
            input range (from the layer that produces that input).
    """

    name: str
    op_type: str
    device: str
    output: str
    index: int
    scale: float | None
    zero_point: int | None
    dtype: str
    in_graph: Metrics
    input_sqnr_db: float
    sqnr_drop_db: float
    isolated: Metrics | None
    isolated_input_sqnr_db: float = math.inf

    @property
    def isolated_sqnr_db(self) -> float:
        """The ranking key: the SQNR of the error this layer adds (``inf`` if not measured)."""
        return math.inf if self.isolated is None else self.isolated.sqnr_db

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "op_type": self.op_type, "device": self.device,
                "output": self.output, "index": self.index, "scale": self.scale,
                "zero_point": self.zero_point, "dtype": self.dtype,
                "in_graph": self.in_graph.to_dict(), "input_sqnr_db": _num(self.input_sqnr_db),
                "sqnr_drop_db": _num(self.sqnr_drop_db),
                "isolated": None if self.isolated is None else self.isolated.to_dict(),
                "isolated_input_sqnr_db": _num(self.isolated_input_sqnr_db)}


@dataclass(frozen=True)
class OutputComparison:
    """One model output: its error and, for class scores, how often the top-1 class agrees."""

    name: str
    metrics: Metrics
    top1_agreement: float | None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, **self.metrics.to_dict(),
                "top1_agreement": self.top1_agreement}


@dataclass
class ComparisonReport:
    """Result of :func:`compare`: layers ranked worst first, model outputs, what was skipped.

    Attributes:
        layers: per-layer comparisons, worst first (lowest isolated SQNR, then largest drop).
        outputs: the model outputs.
        samples: number of samples compared.
        reference: ``"as given"`` or ``"optimized"``: which float graph the NPU graph matched
            (the quantizer optimizes first, so tensor names may only exist after
            :func:`ortnpu.optimize`).
        skipped: ``{tensor or node: reason}`` of what could not be compared.
        float_model: name of the float model.
        npu_model: name of the NPU graph.
    """

    layers: list[LayerComparison]
    outputs: list[OutputComparison]
    samples: int
    reference: str = "as given"
    skipped: dict[str, str] = field(default_factory=dict)
    float_model: str = ""
    npu_model: str = ""

    def worst(self, n: int = 1) -> list[LayerComparison]:
        """The ``n`` layers that add the most error."""
        return self.layers[:n]

    def suspects(self, margin_db: float = SUSPECT_MARGIN_DB) -> list[LayerComparison]:
        """Layers that stand out: they add far more error than the others.

        In a healthy model the layers add errors of the same order (each is one rounding of
        its output); a layer whose isolated SQNR is ``margin_db`` below the lower quartile of
        the others *and* ``margin_db`` below the SQNR of its own quantized inputs has a bad
        range, scale or rescale. The quartile, not the median, because layers legitimately
        differ (with 16-bit activations the 8-bit weights make every weight layer some 40 dB
        worse than the pools); the second condition spares the consumers of a badly quantized
        tensor, whose isolated run starts from that tensor's quantization noise. A layer with
        weights is held against the other weight layers when there are at least two: how far
        apart weight and weightless layers sit depends on the weight rounding (GPTQ lifted
        a fully connected layer from 41 to 66 dB while the convolutions stayed near 52, which
        made them look broken against a quartile of pools and that layer).
        """
        measured = [x for x in self.layers if x.isolated is not None
                    and math.isfinite(x.isolated.sqnr_db)]
        out = []
        for layer in measured:
            peers = [x for x in measured if x is not layer]
            kind = [x for x in peers if _has_weights(x) == _has_weights(layer)]
            if _has_weights(layer) and len(kind) >= 2:
                peers = kind
            others = [x.isolated.sqnr_db for x in peers]
            if (others and layer.isolated.sqnr_db < float(np.percentile(others, 25)) - margin_db
                    and layer.isolated.sqnr_db < layer.isolated_input_sqnr_db - margin_db):
                out.append(layer)
        return out

    # -- renderings ---------------------------------------------------------------------
    def to_text(self, top: int | None = None) -> str:
        """A fixed-width table, worst layer first, then the outputs."""
        rows = self.layers if top is None else self.layers[:top]
        label = short_names(x.name for x in self.layers)
        nw = max([5, *(len(label[x.name]) for x in rows)])
        head = (f"{'#':>3} {'layer':<{nw}} {'op':<18} {'dev':<3} {'alone':>6} {'in q':>6} "
                f"{'graph':>6} {'drop':>6} {'cosine':>8} {'max err':>9} {'mean err':>9} "
                f"{'scale':>9}")
        lines = [f"compare: {self.npu_model or 'NPU graph'} vs {self.float_model or 'float'} "
                 f"({self.reference}), {self.samples} samples; ranked by the error each layer "
                 "adds", "SQNR in dB: alone = the layer fed exact inputs (quantized), in q = "
                 "those quantized inputs, graph = as the NPU graph computes it, drop = worst "
                 "input - output in the graph", head, "-" * len(head)]
        for k, x in enumerate(rows, 1):
            lines.append(
                f"{k:>3} {label[x.name]:<{nw}} {_clip(x.op_type, 18):<18} {x.device:<3} "
                f"{_db(x.isolated_sqnr_db if x.isolated else None):>6} "
                f"{_db(x.isolated_input_sqnr_db if x.isolated else None):>6} "
                f"{_db(x.in_graph.sqnr_db):>6} {_db(x.sqnr_drop_db):>6} "
                f"{x.in_graph.cosine:>8.5f} {x.in_graph.max_abs_error:>9.3g} "
                f"{x.in_graph.mean_abs_error:>9.3g} "
                f"{'' if x.scale is None else format(x.scale, '.3g'):>9}")
        if top is not None and len(self.layers) > top:
            lines.append(f"    ... {len(self.layers) - top} more layers")
        for o in self.outputs:
            top1 = ("" if o.top1_agreement is None
                    else f", top-1 agreement {100 * o.top1_agreement:.2f}%")
            lines.append(f"output {o.name}: SQNR {_db(o.metrics.sqnr_db)} dB, cosine "
                         f"{o.metrics.cosine:.5f}, max abs error {o.metrics.max_abs_error:.3g}"
                         f"{top1}")
        suspects = self.suspects()
        if suspects:
            lines.append("stands out: " + ", ".join(
                f"{x.name} ({x.op_type}, {_db(x.isolated_sqnr_db)} dB alone)" for x in suspects))
        else:
            lines.append(f"no layer stands out (none alone is {SUSPECT_MARGIN_DB:g} dB below "
                         "both most layers and its own quantized inputs)")
        for name, reason in self.skipped.items():
            lines.append(f"skipped {name}: {reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def to_dict(self) -> dict[str, object]:
        """The stable JSON form (schema ``ortnpu.compare/1``, see docs/compare.md)."""
        return {"schema": SCHEMA, "float_model": self.float_model, "npu_model": self.npu_model,
                "reference": self.reference, "samples": self.samples,
                "ranking": "isolated.sqnr_db ascending, then sqnr_drop_db descending",
                "layers": [x.to_dict() for x in self.layers],
                "outputs": [o.to_dict() for o in self.outputs],
                "suspects": [x.name for x in self.suspects()],
                "skipped": dict(self.skipped)}

    def to_json(self, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self) -> str:
        """A self-contained HTML page: a chart of per-layer SQNR and the ranked table."""
        suspects = {x.name for x in self.suspects()}
        rows = []
        for k, x in enumerate(self.layers, 1):
            cls = ' class="bad"' if x.name in suspects else ""
            rows.append(
                f"<tr{cls}><td>{k}</td><td>{escape(x.name)}</td><td>{escape(x.op_type)}</td>"
                f"<td>{x.device}</td><td>{_db(x.isolated_sqnr_db if x.isolated else None)}</td>"
                f"<td>{_db(x.isolated_input_sqnr_db if x.isolated else None)}</td>"
                f"<td>{_db(x.in_graph.sqnr_db)}</td><td>{_db(x.sqnr_drop_db)}</td>"
                f"<td>{x.in_graph.cosine:.5f}</td><td>{x.in_graph.max_abs_error:.3g}</td>"
                f"<td>{x.in_graph.mean_abs_error:.3g}</td>"
                f"<td>{'' if x.scale is None else format(x.scale, '.3g')}</td></tr>")
        outs = "".join(
            f"<li>{escape(o.name)}: SQNR {_db(o.metrics.sqnr_db)} dB, cosine "
            f"{o.metrics.cosine:.5f}, max abs error {o.metrics.max_abs_error:.3g}"
            + ("" if o.top1_agreement is None
               else f", top-1 agreement {100 * o.top1_agreement:.2f}%") + "</li>"
            for o in self.outputs)
        title = f"ortnpu compare: {escape(self.npu_model or 'NPU graph')}"
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>"
            "body{font-family:sans-serif;margin:1.5em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:right}td:nth-child(2),td:nth-child(3){text-align:left}"
            "tr.bad{background:#fadbd8}</style></head><body>"
            f"<h1>{title}</h1><p>Float reference: {escape(self.float_model or 'float model')}"
            f" ({escape(self.reference)}), {self.samples} samples. Layers are ranked by the "
            "error each adds on its own (isolated SQNR: the layer's integer node fed the exact "
            "float inputs, quantized); in-graph SQNR includes everything upstream.</p>"
            f"<h2>Outputs</h2><ul>{outs}</ul>"
            f"<h2>SQNR per layer (execution order)</h2>{self._svg()}"
            "<h2>Layers, worst first</h2><table><tr><th>#</th><th>layer</th><th>op</th>"
            "<th>device</th><th>isolated SQNR dB</th><th>its quantized inputs dB</th>"
            "<th>in-graph SQNR dB</th><th>drop dB</th>"
            "<th>cosine</th><th>max abs err</th><th>mean abs err</th><th>scale</th></tr>"
            + "".join(rows) + "</table>"
            + ("<h2>Skipped</h2><ul>" + "".join(
                f"<li>{escape(k)}: {escape(v)}</li>" for k, v in self.skipped.items())
               + "</ul>" if self.skipped else "")
            + "</body></html>\n")

    def _svg(self, row: int = 16, width: int = 420) -> str:
        """Horizontal bars: isolated SQNR (solid) and in-graph SQNR (tick) per layer."""
        layers = sorted(self.layers, key=lambda x: x.index)
        if not layers:
            return "<p>No layer was compared.</p>"
        finite = [v for x in layers for v in (x.isolated_sqnr_db, x.in_graph.sqnr_db)
                  if math.isfinite(v)]
        top = max([*finite, 1.0]) * 1.1
        suspects = {x.name for x in self.suspects()}
        label = short_names((x.name for x in layers), 26)
        left = max(180, 7 * max(len(v) for v in label.values()) + 12)  # ~7 px a character
        height = row * len(layers) + 30
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" '
                 f'height="{height}" role="img" aria-label="SQNR per layer">']

        def px(v: float) -> float:
            v = top if v == math.inf else max(0.0, v)
            return min(v, top) / top * width

        for k, x in enumerate(layers):
            y = k * row + 4
            iso = x.isolated_sqnr_db if x.isolated is not None else None
            color = "#c0392b" if x.name in suspects else (
                "#2f6fbf" if x.device == "NPU" else "#e67e22")
            parts.append(f'<text x="{left - 6}" y="{y + row - 5}" text-anchor="end" '
                         f'font-size="11">{escape(label[x.name])}</text>')
            if iso is not None:
                parts.append(f'<rect x="{left}" y="{y}" width="{px(iso):.1f}" '
                             f'height="{row - 4}" fill="{color}"><title>'
                             f'{escape(x.name)} ({escape(x.op_type)}): isolated {_db(iso)} dB'
                             '</title></rect>')
            gx = left + px(x.in_graph.sqnr_db)
            parts.append(f'<line x1="{gx:.1f}" y1="{y - 1}" x2="{gx:.1f}" y2="{y + row - 3}" '
                         f'stroke="#222" stroke-width="2"><title>{escape(x.name)}: in graph '
                         f'{_db(x.in_graph.sqnr_db)} dB</title></line>')
            parts.append(f'<text x="{left + width + 4}" y="{y + row - 5}" font-size="10">'
                         f'{_db(iso if iso is not None else x.in_graph.sqnr_db)}</text>')
        parts.append(f'<text x="{left}" y="{height - 6}" font-size="11">bar: isolated SQNR '
                     f'(dB, 0 to {top:.0f}; red: stands out), tick: in-graph SQNR</text></svg>')
        return "".join(parts)


def _num(v: float | None) -> float | str | None:
    """JSON has no infinity: ``inf``/``-inf`` become strings (documented in docs/compare.md)."""
    if v is None:
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.1f}"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def short_names(names: Iterable[str], width: int = NAME_WIDTH) -> dict[str, str]:
    """Labels of at most about ``width`` characters that keep different names different.

    Exported models name layers by path (``/backbone/encoder/layer.11/attention/query/MatMul``):
    the start is shared by hundreds of layers and the tail repeats in every block, so cutting
    either end leaves identical labels. The cut goes in the middle, at the first split (head
    length) that leaves every label distinct; when no split at ``width`` does, the labels
    widen until one does (at worst to the full names).
    """
    unique = list(dict.fromkeys(names))
    longest = max((len(n) for n in unique), default=0)
    if longest <= width:
        return {n: n for n in unique}
    for w in range(width, longest, 4):
        for head in range(max(1, w // 4), w - 4):
            short = {n: _clip_middle(n, w, head) for n in unique}
            if len(set(short.values())) == len(unique):
                return short
    return {n: n for n in unique}


def _clip_middle(s: str, width: int, head: int) -> str:
    """``s`` with its middle replaced by "…": ``head`` characters, "…", then the tail."""
    if len(s) <= width:
        return s
    return s[:head] + "…" + s[len(s) - (width - head - 1):]


# -- model plumbing -------------------------------------------------------------------------

def _load(model: onnx.ModelProto | str | os.PathLike, what: str) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or what
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(model)), os.fspath(model)
        except Exception as exc:
            raise ModelError(f"{os.fspath(model)}: cannot load the {what}: {exc}") from None
    raise ModelError(f"compare expects the {what} as an onnx.ModelProto or a path, got "
                     f"{type(model).__name__}")


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    init = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def _produced(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in [*g.input, *g.output, *g.value_info] if vi.type.tensor_type.elem_type}


def _with_outputs(model: onnx.ModelProto, names: Iterable[str],
                  types: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``names`` (for reading intermediate tensors)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for n in names:
        if n not in have:
            copy.graph.output.append(helper.make_tensor_value_info(
                n, types.get(n, TensorProto.FLOAT), None))
            have.add(n)
    return copy


@dataclass(frozen=True)
class _Tensor:
    """A quantized tensor of the NPU graph, from ``metadata_props["ortnpu.tensors"]``."""

    name: str
    int_name: str
    scale: float
    zero_point: int
    dtype: str

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float64) - self.zero_point) * self.scale

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """``x`` through QuantizeLinear (round half to even, saturate) and back."""
        info = np.iinfo(self.dtype)
        q = np.clip(np.rint(np.asarray(x, np.float64) / np.float32(self.scale))
                    + self.zero_point, info.min, info.max)
        return self.dequantize(q)


def _npu_tensors(npu: onnx.ModelProto, npu_name: str) -> dict[str, _Tensor]:
    meta = {p.key: p.value for p in npu.metadata_props}
    if _META_TENSORS not in meta:
        raise ModelError(f"{npu_name}: has no {_META_TENSORS!r} metadata, so it is not an NPU "
                         "graph made by ortnpu; pass the output of ortnpu.quantize / "
                         "`ortnpu quantize` as the NPU model")
    try:
        raw = json.loads(meta[_META_TENSORS])
        return {name: _Tensor(name, str(p.get("int_name", "")), float(p["scale"]),
                              int(p["zero_point"]), str(p["dtype"]))
                for name, p in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{npu_name}: the {_META_TENSORS!r} metadata is malformed ({exc}); "
                         "re-create the NPU graph with ortnpu.quantize") from None


def _placements(npu: onnx.ModelProto) -> list[dict[str, str]]:
    meta = {p.key: p.value for p in npu.metadata_props}
    try:
        return [p for p in json.loads(meta.get(_META_PLACEMENT, "[]")) if isinstance(p, dict)]
    except ValueError:
        return []


@dataclass
class _Layer:
    """What :func:`compare` measures for one row, before the metrics exist."""

    name: str
    op_type: str
    device: str
    index: int
    inputs: list[str]    # float names of the activation inputs
    output: str          # float name of the compared output
    tensor: _Tensor | None  # integer output (NPU layers)


def _layers(npu: onnx.ModelProto, tensors: dict[str, _Tensor]) -> list[_Layer]:
    """One row per com.ortnpu node and per CPU node that came from the float model."""
    of_int = {t.int_name: t for t in tensors.values() if t.int_name}
    placements = _placements(npu)
    op_of = {p.get("node"): p.get("op_type", "") for p in placements}
    cpu = {p.get("node") for p in placements if p.get("device") == "CPU"}
    fused: dict[str, list[str]] = {}
    for p in placements:
        if p.get("fused_into"):
            fused.setdefault(p["fused_into"], []).append(p.get("op_type", ""))
    inits = {i.name for i in npu.graph.initializer}
    rows = []
    for k, node in enumerate(npu.graph.node):
        if node.domain == _DOMAIN:
            outs = [of_int[o] for o in node.output if o in of_int]
            if not outs:
                continue
            op = op_of.get(node.name) or node.op_type.rsplit("_", 1)[0]
            op = "+".join([op, *fused.get(node.name, [])])
            ins = [of_int[i].name for i in node.input if i in of_int]
            rows.append(_Layer(node.name, op, "NPU", k, ins, outs[0].name, outs[0]))
        elif node.name in cpu and node.output and node.output[0]:
            ins = [i for i in node.input if i and i not in inits]
            rows.append(_Layer(node.name, op_of.get(node.name) or node.op_type, "CPU", k, ins,
                               node.output[0], None))
    return rows


def _isolation_model(npu: onnx.ModelProto, tensors: dict[str, _Tensor],
                     available: Mapping[str, int]) -> tuple[onnx.ModelProto | None, dict[str, str],
                                                   list[str]]:
    """Every com.ortnpu node alone, fed its float inputs quantized with their parameters.

    Args:
        npu: the NPU graph.
        tensors: its quantized tensors.
        available: ``{float tensor: rank}`` of the float tensors the reference computes.

    Returns:
        the model (``None`` if no node can be isolated), ``{node name: isolated output}`` and
        the float tensors the model takes as inputs.
    """
    of_int = {t.int_name: t for t in tensors.values() if t.int_name}
    inits = {i.name for i in npu.graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in npu.graph.value_info}
    nodes: list[onnx.NodeProto] = []
    quantized: dict[str, str] = {}
    new_inits: list[onnx.TensorProto] = []
    outputs: dict[str, str] = {}
    out_infos = []
    for node in npu.graph.node:
        if (node.domain != _DOMAIN or not node.output or node.output[0] not in of_int
                or of_int[node.output[0]].name not in available):
            continue
        ins = []
        for i in node.input:
            if not i or i in inits:
                ins.append(i)
                continue
            t = of_int.get(i)
            if t is None or t.name not in available:
                ins = None
                break
            if t.name not in quantized:
                q = f"{t.int_name}{_ISO}_in"
                s, z = f"{q}_scale", f"{q}_zero_point"
                new_inits += [numpy_helper.from_array(np.array(t.scale, np.float32), s),
                              numpy_helper.from_array(np.array(t.zero_point, t.dtype), z)]
                nodes.append(helper.make_node("QuantizeLinear", [t.name, s, z], [q],
                                              name=f"{q}_quantize"))
                quantized[t.name] = q
            ins.append(quantized[t.name])
        if ins is None:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(ins)
        del copy.output[:]
        copy.output.extend(f"{o}{_ISO}" if o else o for o in node.output)
        nodes.append(copy)
        outputs[node.name] = copy.output[0]
        out_infos.append(helper.make_tensor_value_info(
            copy.output[0], types.get(node.output[0], TensorProto.INT8), None))
    if not outputs:
        return None, {}, []
    feeds = sorted(quantized)
    graph = helper.make_graph(
        nodes, "ortnpu_isolated_layers",
        [helper.make_tensor_value_info(t, TensorProto.FLOAT,
                                       [f"{t}_d{k}" for k in range(available[t])])
         for t in feeds], out_infos,
        initializer=[i for i in npu.graph.initializer] + new_inits)
    model = helper.make_model(graph, opset_imports=list(npu.opset_import),
                              ir_version=npu.ir_version)
    return model, outputs, feeds


# -- data -----------------------------------------------------------------------------------

def _batches(data: Data, inputs: list[onnx.ValueInfoProto], max_samples: int | None,
             batch_axes: Mapping[str, int | None] | None = None,
             ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(sample count, feed) of at most one batch each, cut to ``max_samples`` samples in
    total; each input of a dict of arrays is cut along its own sample axis (ortnpu.feeds)."""
    from ortnpu.feeds import sample_axis, sample_batches, spec_of

    names = [i.name for i in inputs]
    specs = [spec_of(i) for i in inputs]
    first = inputs[0].type.tensor_type.shape.dim
    fixed = (dim_size(first[0]) or 0) if first else 0
    size = fixed or DEFAULT_BATCH
    if data is None:
        raise CalibrationError("compare needs data: real samples of the model's inputs "
                               f"{names} (an array, a dict of arrays or an iterable of dicts)")
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise CalibrationError(f"the model has {len(names)} inputs {names}; pass a dict "
                                   "{name: array} instead of a single array")
        data = {names[0]: data}
    if isinstance(data, Mapping):
        arrays = {n: _array(data, n, names) for n in names}
        if fixed and sample_axis(specs[0], arrays[names[0]], None, batch_axes) not in (0, None):
            size = 1   # the batch is on another axis: one sample at a time
        yield from sample_batches(specs, arrays, batch_axes=batch_axes, batch=size,
                                  limit=max_samples, where="compare", whole=bool(fixed))
        return
    if hasattr(data, "get_next"):
        reader = data
        data = iter(lambda: reader.get_next(), None)
    try:
        items = iter(data)
    except TypeError:
        raise CalibrationError(f"compare cannot read data of type {type(data).__name__}; pass "
                               "an array, a dict of arrays or an iterable of dicts") from None
    yield from _item_batches(items, names, max_samples)


def _item_batches(items: Iterator[Any], names: list[str],
                  max_samples: int | None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """The feeds of an iterable of dicts (each one batch), checked, cut to ``max_samples``."""
    seen = 0
    for item in items:
        if isinstance(item, np.ndarray) and len(names) == 1:
            item = {names[0]: item}
        if not isinstance(item, Mapping):
            raise CalibrationError(f"compare: a data item is a {type(item).__name__}; each item "
                                   f"must be a dict {{input name: array}} with inputs {names}")
        feed = {n: _array(item, n, names) for n in names}
        if max_samples is not None:
            left = max_samples - seen
            if left <= 0:
                return
            feed = {k: a[:left] if a.ndim else a for k, a in feed.items()}
        count = min((len(a) for a in feed.values() if a.ndim), default=1)
        seen += count
        yield count, feed


def _array(data: Mapping[str, Any], name: str, names: list[str]) -> np.ndarray:
    if name not in data:
        raise CalibrationError(f"compare: the data has no array for model input {name!r} (it "
                               f"has {sorted(data)}); name the arrays like the inputs {names}")
    a = np.asarray(data[name])
    if a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise CalibrationError(f"compare: input {name!r} holds NaN or infinite values; clean "
                               "the data before comparing")
    return a


# -- the entry point ------------------------------------------------------------------------

def _reference(float_model: onnx.ModelProto, wanted: set[str]) -> tuple[onnx.ModelProto, str]:
    """The float graph that holds the NPU graph's tensors: as given, or as the quantizer saw it.

    ``ortnpu.quantize`` optimizes the model first (BatchNormalization folding etc.), so some
    tensors of the NPU graph only exist in ``ortnpu.optimize(float_model)``.
    """
    names = _produced(float_model) | {i.name for i in float_model.graph.input}
    if wanted <= names:
        return float_model, "as given"
    try:
        from ortnpu.passes import optimize

        optimized = optimize(float_model)
    except Exception:
        return float_model, "as given"
    opt_names = _produced(optimized) | {i.name for i in optimized.graph.input}
    if len(wanted - opt_names) < len(wanted - names):
        return optimized, "optimized"
    return float_model, "as given"


def compare(float_model: onnx.ModelProto | str | os.PathLike,
            npu_model: onnx.ModelProto | str | os.PathLike, data: Data, *,
            max_samples: int | None = None, progress: bool = True,
            batch_axes: Mapping[str, int | None] | None = None,
            freeze: Mapping[str, Any] | None = None) -> ComparisonReport:
    """Compare an NPU graph with its float model layer by layer on real data.

    Args:
        float_model: the float model the NPU graph was quantized from (ModelProto or path).
        npu_model: the NPU graph (from :func:`ortnpu.quantize` or :func:`ortnpu.import_qdq`).
        data: samples of the inputs: an array (single-input model, first axis = sample), a
            dict ``{input: array}``, an iterable of such dicts (each one batch), or an
            ``onnxruntime.quantization.CalibrationDataReader``.
        max_samples: compare at most this many samples.
        progress: a progress bar over the batches on stderr when it is a terminal.
        batch_axes: the sample axis of an input's array where the model does not tell it
            (``{"h0": 1}``; None: one value for every sample); see :mod:`ortnpu.feeds`.
        freeze: the constants the NPU graph was quantized with (``{"sr": 16000}``): the float
            model gets them too.

    Returns:
        A :class:`ComparisonReport` with the layers ranked worst first.

    Raises:
        ModelError: the models do not belong together, or one is not what compare needs.
        CalibrationError: the data is empty, malformed or holds NaN.
    """
    from ortnpu.runtime import InferenceSession

    float_model, float_name = _load(float_model, "float model")
    if freeze:
        from ortnpu.passes import fix_inputs

        float_model = fix_inputs(float_model, freeze=freeze)
    npu, npu_name = _load(npu_model, "NPU graph")
    if max_samples is not None and max_samples < 1:
        raise CalibrationError(f"compare: max_samples must be at least 1, got {max_samples}")
    tensors = _npu_tensors(npu, npu_name)
    f_inputs, n_inputs = _inputs(float_model), _inputs(npu)
    if [i.name for i in f_inputs] != [i.name for i in n_inputs]:
        frozen = sorted({i.name for i in f_inputs} - {i.name for i in n_inputs})
        hint = (f" (if it was quantized with --freeze, freeze {frozen} here too)"
                if frozen and {i.name for i in n_inputs} <= {i.name for i in f_inputs} else "")
        raise ModelError(f"{npu_name} has inputs {[i.name for i in n_inputs]} but {float_name} "
                         f"has {[i.name for i in f_inputs]}; pass the float model the NPU graph "
                         f"was quantized from{hint}")
    f_outputs = [o.name for o in float_model.graph.output]
    n_outputs = [o.name for o in npu.graph.output]
    if f_outputs != n_outputs:
        raise ModelError(f"{npu_name} has outputs {n_outputs} but {float_name} has {f_outputs}; "
                         "pass the float model the NPU graph was quantized from")
    layers = _layers(npu, tensors)
    cpu_outputs = {x.output for x in layers if x.device == "CPU"}
    quantized = {t.name for t in tensors.values() if t.int_name}
    wanted = quantized | cpu_outputs | set(f_outputs)
    reference, how = _reference(float_model, wanted)
    graph_inputs = {i.name for i in f_inputs}
    available = (_produced(reference) | graph_inputs) & wanted
    skipped = {t: (f"not a tensor of {float_name} (as given or optimized); it cannot be "
                   "compared") for t in sorted(wanted - available)}
    if not (available & quantized) - graph_inputs and quantized - graph_inputs:
        raise ModelError(f"none of the quantized tensors of {npu_name} exist in {float_name}; "
                         "pass the float model the NPU graph was quantized from")

    float_types = _elem_types(reference)
    rescale = _equalization_gap(npu, float_model)
    npu_int_types = {vi.name: vi.type.tensor_type.elem_type for vi in npu.graph.value_info}
    f_fetch = sorted(available - graph_inputs)
    f_sess = InferenceSession(_with_outputs(reference, f_fetch, float_types))
    npu_produced = _produced(npu) | {i.name for i in npu.graph.input}
    for t in sorted(available & quantized):
        if tensors[t].int_name not in npu_produced:  # declared, but no node computes it
            skipped[t] = (f"its integer tensor {tensors[t].int_name!r} is not computed in "
                          f"{npu_name} (no node writes it); it cannot be compared")
    available -= {t for t in skipped if t in quantized}
    n_fetch_int = sorted(tensors[t].int_name for t in available & quantized)
    n_fetch_float = sorted(cpu_outputs & available)
    n_fetch = [n for n in [*n_fetch_int, *n_fetch_float] if n in npu_produced]
    n_sess = InferenceSession(_with_outputs(npu, n_fetch, {**float_types, **npu_int_types}))
    iso_sess: Any = None
    iso_out: dict[str, str] = {}
    iso_feeds: list[str] = []

    acc_int = {t: _Accumulator(t) for t in available & quantized}
    acc_cpu = {t: _Accumulator(t) for t in n_fetch_float}
    acc_iso: dict[str, _Accumulator] = {}
    acc_q = {t: _Accumulator(t) for t in available & quantized}
    acc_out = {o: _Accumulator(o) for o in f_outputs}
    top1 = dict.fromkeys(f_outputs, 0)
    samples = 0
    f_names = [o.name for o in f_sess.get_outputs()]
    n_names = [o.name for o in n_sess.get_outputs()]
    # the NPU graph's inputs: their shapes may be fixed (--input-shape) where the float ones are not
    batches = console.progress(_batches(data, n_inputs, max_samples, batch_axes),
                               desc="compare", unit="batch", enabled=progress)
    for batch, feed in batches:
        if batch == 0:
            continue
        samples += batch
        ref = dict(zip(f_names, f_sess.run(None, feed), strict=True))
        for t, f in rescale.items():   # channels the NPU graph's equalization divided
            if t in ref and np.ndim(ref[t]) >= 2 and np.shape(ref[t])[1] == f.size:
                ref[t] = ref[t] / f.reshape((1, -1) + (1,) * (np.ndim(ref[t]) - 2))
        ref.update(feed)
        for name in f_fetch:
            v = ref[name]
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise ModelError(f"{float_name}: tensor {name!r} holds NaN or infinite values "
                                 "on this data; the float reference is broken, check the data "
                                 "and the model")
        got = dict(zip(n_names, n_sess.run(None, feed), strict=True))
        for t, acc in acc_int.items():
            acc.update(ref[t], tensors[t].dequantize(got[tensors[t].int_name]))
            acc_q[t].update(ref[t], tensors[t].fake_quantize(ref[t]))
        for t, acc in acc_cpu.items():
            acc.update(ref[t], got[t])
        for o, acc in acc_out.items():
            acc.update(ref[o], got[o])
            r, g = ref[o], got[o]
            if r.ndim == 2 and r.shape[1] > 1:  # class scores: top-1 agreement makes sense
                top1[o] += int((r.argmax(1) == g.argmax(1)).sum())
            else:
                top1.pop(o, None)
        if iso_sess is None:  # built on the first batch, when the tensors' ranks are known
            iso_model, iso_out, iso_feeds = _isolation_model(
                npu, tensors, {t: np.ndim(ref[t]) for t in available})
            iso_sess = InferenceSession(iso_model) if iso_model is not None else False
            acc_iso = {n: _Accumulator(n) for n in iso_out}
            for layer in layers:
                if layer.device == "NPU" and layer.name not in iso_out:
                    skipped[layer.name] = ("not run in isolation: an input is not a float "
                                           f"tensor of {float_name}")
        if iso_sess:
            iso = dict(zip([o.name for o in iso_sess.get_outputs()],
                           iso_sess.run(None, {t: np.asarray(ref[t], np.float32)
                                               for t in iso_feeds}), strict=True))
            by_node = {layer.name: layer for layer in layers}
            for node, acc in acc_iso.items():
                layer = by_node[node]
                acc.update(ref[layer.output], layer.tensor.dequantize(iso[iso_out[node]]))
    if samples == 0:
        raise CalibrationError("compare: the data holds no samples; pass at least one sample "
                               f"of the inputs {[i.name for i in f_inputs]}")

    int_metrics = {t: a.result() for t, a in acc_int.items()}
    cpu_metrics = {t: a.result() for t, a in acc_cpu.items()}
    q_metrics = {t: a.result() for t, a in acc_q.items()}
    rows = []
    for layer in layers:
        source = int_metrics if layer.device == "NPU" else {**int_metrics, **cpu_metrics}
        out = (int_metrics if layer.device == "NPU" else cpu_metrics).get(layer.output)
        if out is None:
            skipped.setdefault(layer.name, f"output {layer.output!r} could not be compared")
            continue
        ins = [source[i].sqnr_db if i in source else math.inf for i in layer.inputs]
        in_sqnr = min(ins, default=math.inf)
        drop = (0.0 if in_sqnr == out.sqnr_db else in_sqnr - out.sqnr_db)
        t = layer.tensor
        rows.append(LayerComparison(
            name=layer.name, op_type=layer.op_type, device=layer.device, output=layer.output,
            index=layer.index, scale=t.scale if t else None,
            zero_point=t.zero_point if t else None, dtype=t.dtype if t else "float32",
            in_graph=out, input_sqnr_db=in_sqnr, sqnr_drop_db=drop,
            isolated=acc_iso[layer.name].result() if layer.name in acc_iso else None,
            isolated_input_sqnr_db=min((q_metrics[i].sqnr_db for i in layer.inputs
                                        if i in q_metrics), default=math.inf)))
    rows.sort(key=lambda x: (x.isolated_sqnr_db, -_finite(x.sqnr_drop_db), x.index))
    outputs = [OutputComparison(o, acc_out[o].result(),
                                top1[o] / samples if o in top1 else None) for o in f_outputs]
    return ComparisonReport(layers=rows, outputs=outputs, samples=samples, reference=how,
                            skipped=skipped, float_model=float_name, npu_model=npu_name)


def _equalization_gap(npu: onnx.ModelProto, float_model: onnx.ModelProto
                      ) -> dict[str, np.ndarray]:
    """Per tensor, the channel factors by which the NPU graph's equalization divided it
    beyond what the float model's own did (a float model that autofix equalized already
    holds them): the float reference is divided by them before comparing."""
    from ortnpu.passes.weight_equalization import equalized_channels

    done = equalized_channels(float_model)
    gap = {}
    for t, f in equalized_channels(npu).items():
        g = f / done[t] if t in done and done[t].shape == f.shape else f
        if np.all(np.isfinite(g)) and np.all(g > 0) and not np.allclose(g, 1.0):
            gap[t] = g
    return gap


def _finite(v: float) -> float:
    if math.isnan(v):
        return 0.0
    return max(min(v, 1e9), -1e9)

__all__ = ["ComparisonReport", "LayerComparison", "Metrics", "OutputComparison", "compare",
           "measure", "short_names"]
