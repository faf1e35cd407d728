"""Calibration: run the float model on real data and collect per-tensor statistics.

Calibration data may be an iterable of ``{input name: array}`` dicts, a numpy array (for a
single-input model; the first axis is the sample axis), or an
``onnxruntime.quantization.CalibrationDataReader``. Statistics are streamed: memory does not grow
with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from ortnpu import console
from ortnpu.comparison import _with_outputs
from ortnpu.errors import CalibrationError, first_line
from ortnpu.feeds import cast_input, input_specs

CalibrationData = Any  # Iterable[Mapping[str, np.ndarray]] | np.ndarray | CalibrationDataReader


class Calibrator(Protocol):
    """Collects statistics of tensors batch by batch and turns them into ranges."""

    def collect(self, name: str, values: np.ndarray) -> None:
        """Add one batch of values of tensor ``name``."""

    def range_of(self, name: str) -> tuple[float, float]:
        """The (min, max) range to quantize ``name`` with."""


@dataclass
class MinMaxCalibrator:
    """Running minimum and maximum of every tensor."""

    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)

    def collect(self, name: str, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.lo[name] = min(self.lo.get(name, np.inf), float(values.min()))
        self.hi[name] = max(self.hi.get(name, -np.inf), float(values.max()))

    def range_of(self, name: str) -> tuple[float, float]:
        if name not in self.lo:
            raise CalibrationError(f"tensor {name!r} was never seen during calibration")
        return self.lo[name], self.hi[name]

    def observed_range(self, name: str) -> tuple[float, float]:
        """The smallest and largest value seen (what ``1 / x`` of a positive tensor needs)."""
        return self.range_of(name)


#: Range methods of :class:`HistogramCalibrator` (``auto`` is the default of ``quantize``).
METHODS = ("auto", "minmax", "percentile", "entropy", "mse", "headroom")

#: how far ``headroom`` widens a range: to the one-sided 99 % point of a normal fit of the
#: calibration samples' extremes (mean + 2.326 standard deviations)
HEADROOM_Z = 2.326


@dataclass
class _SampleExtremes:
    """Running mean and spread of each sample's smallest and largest value.

    A sample is a row of the batch (axis 0) of a tensor of rank 2 or more, the whole tensor
    of a lower rank (a rank-1 tensor's axis 0 is not a batch). Moments, not lists: memory
    stays four numbers per tensor whatever the sample count.
    """

    count: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))  # [lo/hi, Σx/Σx²]

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values)
        if v.size == 0:
            return
        rows = v.reshape(v.shape[0], -1) if v.ndim >= 2 else v.reshape(1, -1)
        # extremes in the tensor's own type (exact), moments in float64: no float64 copy of
        # the whole tensor beside the histogram's
        ends = np.stack([rows.min(axis=1), rows.max(axis=1)]).astype(np.float64)  # [2, n]
        self.sums += np.stack([ends.sum(axis=1), (ends * ends).sum(axis=1)], axis=1)
        self.count += rows.shape[0]

    def widened(self, lo: float, hi: float, z: float = HEADROOM_Z) -> tuple[float, float]:
        """``(lo, hi)`` widened on each side to ``mean ∓ z·std`` of the samples' extremes
        where that lies beyond; a side never crosses zero (a one-signed tensor stays so)."""
        if self.count < 2:
            return lo, hi
        mean = self.sums[:, 0] / self.count
        var = (self.sums[:, 1] - self.count * mean * mean) / (self.count - 1)
        std = np.sqrt(np.maximum(var, 0.0))
        low, high = float(mean[0] - z * std[0]), float(mean[1] + z * std[1])
        if lo >= 0:
            low = max(low, 0.0)
        if hi <= 0:
            high = min(high, 0.0)
        return min(lo, low), max(hi, high)


@dataclass
class _Histogram:
    """A symmetric histogram over [-limit, limit] whose range doubles when data exceeds it.

    Doubling merges neighbouring bins pairwise, so the histogram stays exact with respect to
    the data seen (no re-binning error) and its memory is fixed whatever the sample count.
    Exact zeros are also counted apart (``zeros``): after a ReLU they are often half the data,
    and zero is exactly representable, so range methods must not treat them as a density.
    """

    bins: int
    limit: float = 0.0
    counts: np.ndarray | None = None
    lo: float = np.inf
    hi: float = -np.inf
    zeros: int = 0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64).reshape(-1)
        if v.size == 0:
            return
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        self.zeros += int(np.count_nonzero(v == 0))
        top = max(abs(self.lo), abs(self.hi))
        if self.counts is None:
            self.limit = 2.0 ** np.ceil(np.log2(top)) if top > 0 else 1.0
            self.counts = np.zeros(self.bins, np.int64)
        while top > self.limit:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.zeros(self.bins, np.int64)
            self.counts[self.bins // 4: self.bins // 4 + merged.size] = merged
            self.limit *= 2.0
        idx = ((v + self.limit) / (2 * self.limit) * self.bins).astype(np.int64)
        self.counts += np.bincount(np.clip(idx, 0, self.bins - 1), minlength=self.bins)

    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit, self.limit, self.bins + 1)


@dataclass
class HistogramCalibrator:
    """Streaming histograms per tensor; the range comes from ``method``.

    Methods: ``auto`` (per tensor, the range whose expected squared quantization error on that
    tensor is smallest, searched over every pair of histogram edges: it includes the extremes,
    any percentile and any symmetric threshold, so it is at least as good as ``minmax``,
    ``percentile`` and ``mse`` by that measure), ``minmax`` (observed extremes), ``percentile``
    (drop the tails beyond ``percentile``), ``entropy`` (the clipping threshold minimising the
    KL divergence between the distribution and its quantized form, as TensorRT does), ``mse``
    (the symmetric threshold minimising the expected squared error), ``headroom`` (the
    observed extremes, each side widened to where a normal fit of the samples' own extremes
    puts 99 % of new samples, :data:`HEADROOM_Z`: with ``n`` calibration samples about one new
    sample in ``n + 1`` exceeds the largest value seen, and where a model's answer is its
    largest output, a clipped one ties with the runner-up; ``auto``'s choice for the model's
    outputs, see :meth:`ortnpu.quant.QuantConfig.collector`). ``levels`` and
    ``symmetric`` describe the target's activation grid. Memory is ``bins`` integers per
    tensor, whatever the number of samples.
    """

    method: str = "auto"
    percentile: float = 99.99
    bins: int = 2048
    levels: int = 256
    symmetric: bool = False
    overrides: dict[str, str] = field(default_factory=dict)
    hists: dict[str, _Histogram] = field(default_factory=dict)
    #: per-sample extremes of the ``headroom`` tensors
    sample_extremes: dict[str, _SampleExtremes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in [self.method, *self.overrides.values()]:
            if m not in METHODS:
                raise CalibrationError(f"unknown calibration method {m!r}; use one of "
                                       f"{', '.join(METHODS)}")

    def collect(self, name: str, values: np.ndarray) -> None:
        self.hists.setdefault(name, _Histogram(self.bins)).add(values)
        if self.overrides.get(name, self.method) == "headroom":
            self.sample_extremes.setdefault(name, _SampleExtremes()).add(values)

    def observed_range(self, name: str) -> tuple[float, float]:
        """The smallest and largest value seen (what ``1 / x`` of a positive tensor needs)."""
        h = self.hists.get(name)
        if h is None or h.counts is None:
            raise CalibrationError(f"tensor {name!r} was never seen during calibration")
        return h.lo, h.hi

    def range_of(self, name: str) -> tuple[float, float]:
        h = self.hists.get(name)
        if h is None or h.counts is None:
            raise CalibrationError(f"tensor {name!r} was never seen during calibration")
        method = self.overrides.get(name, self.method)
        if method == "headroom" and name in self.sample_extremes:
            return self.sample_extremes[name].widened(h.lo, h.hi)
        if method in ("minmax", "headroom") or h.hi <= h.lo:
            return h.lo, h.hi
        if method == "percentile":
            return self._percentile(h)
        if method == "auto":
            return self._auto(h)
        threshold = self._entropy(h) if method == "entropy" else self._mse(h)
        return max(h.lo, -threshold), min(h.hi, threshold)

    def _percentile(self, h: _Histogram) -> tuple[float, float]:
        cdf = np.cumsum(h.counts) / h.counts.sum()
        edges = h.edges()
        tail = (100.0 - self.percentile) / 100.0
        lo_i = int(np.searchsorted(cdf, tail, side="left"))
        hi_i = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        return max(h.lo, float(edges[lo_i])), min(h.hi, float(edges[min(hi_i + 1, h.bins)]))

    def _abs_hist(self, h: _Histogram) -> tuple[np.ndarray, float]:
        half = h.bins // 2
        folded = h.counts[half:] + h.counts[:half][::-1]
        return folded.astype(np.float64), h.limit / half

    def _entropy(self, h: _Histogram) -> float:
        """TensorRT's KL threshold search, with the exact zeros kept as an exact atom.

        Expanding a quantized level back over its histogram bins spreads the level's mass
        evenly; done on the spike of exact zeros a ReLU leaves (half of MobileNetV2's
        activations), that smearing costs more KL than any clipping, so every ReLU6 output
        was clipped at the smallest candidate (a quarter of the histogram) and the network
        collapsed. Zero is exactly representable, so the zeros are one bin of their own in
        both distributions.
        """
        hist, width = self._abs_hist(h)
        hist[0] -= h.zeros
        # a one-signed tensor (after ReLU) gets every level of the asymmetric range on [0, T]
        target = self.levels if h.lo >= 0 or h.hi <= 0 else self.levels // 2
        nz = np.nonzero(hist)[0]
        last = int(nz[-1]) + 1 if nz.size else 1
        if last <= target:
            return last * width  # fits without clipping: every bin is its own level
        csum = np.concatenate([[0.0], np.cumsum(hist)])
        cnz = np.concatenate([[0], np.cumsum(hist > 0)])
        zeros, total = float(h.zeros), float(csum[-1])
        candidates = [*range(target, last, max(1, (last - target) // 256)), last]
        best, best_kl = last, np.inf
        for i in candidates:
            size, extra = divmod(i, target)
            bounds = np.concatenate([[0], np.cumsum(np.repeat([size + 1, size],
                                                              [extra, target - extra]))])
            sums = csum[bounds[1:]] - csum[bounds[:-1]]
            nonzero = cnz[bounds[1:]] - cnz[bounds[:-1]]
            level = np.where(nonzero > 0, sums / np.maximum(nonzero, 1), 0.0)
            q = np.where(hist[:i] > 0, np.repeat(level, np.diff(bounds)), 0.0)
            p = hist[:i].copy()
            p[i - 1] += total - csum[i]  # the clipped tail lands on the last level
            p, q = np.append(p, zeros), np.append(q, zeros)
            p, q = p / p.sum(), q / q.sum()
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best, best_kl = i, kl
        return best * width

    def _mse(self, h: _Histogram) -> float:
        hist, width = self._abs_hist(h)
        centers = (np.arange(hist.size) + 0.5) * width
        top = max(abs(h.lo), abs(h.hi))
        best, best_err = top, np.inf
        for frac in np.linspace(0.2, 1.0, 81):
            t = top * frac
            step = 2 * t / (self.levels - 1)
            err = float(np.sum(hist * np.where(centers > t, (centers - t) ** 2,
                                               step * step / 12.0)))
            if err < best_err:
                best, best_err = t, err
        return best

    def _auto(self, h: _Histogram) -> tuple[float, float]:
        """The (lo, hi) pair of histogram edges with the least expected squared error.

        Error of a range: the clipping error of the values outside it (exact on the histogram,
        values at their bin centres) plus ``step²/12`` of rounding for every non-zero value
        inside (exact zeros stay exact). ``step`` follows the target's grid: the whole range
        over ``levels`` on an asymmetric target or for a one-signed tensor, twice the larger
        side on a symmetric one. All pairs are scored at once from cumulative sums.
        """
        edges = h.edges()
        centers = (edges[:-1] + edges[1:]) / 2
        counts = h.counts.astype(np.float64)
        counts[h.bins // 2] -= h.zeros

        def tail_error(order: np.ndarray, cuts: np.ndarray, sign: float
                       ) -> tuple[np.ndarray, np.ndarray]:
            """Clipping error and count of the values beyond each cut (on one side)."""
            c, x = counts[order], centers[order] * sign
            s0, s1, s2 = (np.concatenate([np.cumsum((c * x ** k)[::-1])[::-1], [0.0]])
                          for k in (0, 1, 2))
            beyond = np.searchsorted(x, cuts * sign, side="right")
            t = cuts * sign
            err = s2[beyond] - 2 * t * s1[beyond] + t * t * s0[beyond]
            return np.maximum(err, 0.0), s0[beyond]

        up = np.arange(h.bins)
        his = np.unique(np.concatenate([edges[(edges > 0) & (edges < h.hi)], [max(h.hi, 0.0)]]))
        los = np.unique(np.concatenate([edges[(edges < 0) & (edges > h.lo)], [min(h.lo, 0.0)]]))
        err_hi, out_hi = tail_error(up, his, 1.0)
        err_lo, out_lo = tail_error(up[::-1], los, -1.0)
        inside = counts.sum() - out_hi[None, :] - out_lo[:, None]
        if self.symmetric and h.lo < 0 < h.hi:
            step = 2 * np.maximum(his[None, :], -los[:, None]) / (self.levels - 1)
        else:
            step = (his[None, :] - los[:, None]) / (self.levels - 1)
        total = err_lo[:, None] + err_hi[None, :] + np.maximum(inside, 0) * step * step / 12
        i, j = np.unravel_index(int(np.argmin(total)), total.shape)
        return float(los[i]), float(his[j])


@dataclass
class WithChannelMeans:
    """Wraps a calibrator and also keeps per-channel means (for bias correction).

    The channel axis is 1 for tensors of rank 3 or more (NCHW) and the last axis for rank 2.
    Sums and counts are streamed, so memory stays one vector per tensor.
    """

    inner: Calibrator
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def collect(self, name: str, values: np.ndarray) -> None:
        self.inner.collect(name, values)
        v = np.asarray(values, np.float64)
        if v.ndim < 2 or v.size == 0:
            return
        axis = 1 if v.ndim >= 3 else v.ndim - 1
        reduce = tuple(d for d in range(v.ndim) if d != axis)
        total = v.sum(axis=reduce)
        if name in self.sums and self.sums[name].shape == total.shape:
            self.sums[name] += total
        else:
            self.sums[name] = total
            self.counts[name] = 0
        self.counts[name] += v.size // v.shape[axis]

    def range_of(self, name: str) -> tuple[float, float]:
        return self.inner.range_of(name)

    def observed_range(self, name: str) -> tuple[float, float]:
        """The inner calibrator's smallest and largest value seen."""
        return observed_range(self.inner, name)

    def channel_mean(self, name: str) -> np.ndarray | None:
        """Mean of each channel of ``name``, or None if it was not seen."""
        if name not in self.sums or not self.counts.get(name):
            return None
        return self.sums[name] / self.counts[name]


def observed_range(calibrator: Calibrator, name: str) -> tuple[float, float]:
    """The extremes ``calibrator`` saw of ``name`` (its ``range_of`` when it keeps none)."""
    getter = getattr(calibrator, "observed_range", None)
    return getter(name) if getter is not None else calibrator.range_of(name)


def make_calibrator(method: str = "auto", **options: object) -> Calibrator:
    """The calibrator of a range method (``minmax`` uses exact running extremes)."""
    if method == "minmax" and not options.get("overrides"):
        return MinMaxCalibrator()
    return HistogramCalibrator(method=method, **options)  # type: ignore[arg-type]


def iter_batches(data: CalibrationData, input_names: list[str],
                 batch: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """Normalise the accepted calibration-data forms into a stream of feed dicts.

    A bare array is cut into batches of ``batch`` samples (1 for a model with a fixed batch).
    """
    if isinstance(data, np.ndarray):
        if len(input_names) != 1:
            raise CalibrationError(f"a bare array can feed only a single-input model; this model "
                                   f"has inputs {input_names}: pass dicts instead")
        if data.ndim == 0 or data.shape[0] == 0:
            raise CalibrationError("the calibration array is empty")
        for start in range(0, data.shape[0], batch):
            yield {input_names[0]: data[start:start + batch]}
        return
    if hasattr(data, "get_next") and callable(data.get_next):
        while True:
            item = data.get_next()
            if item is None:
                return
            yield dict(item)
        return
    if isinstance(data, Mapping):
        yield dict(data)
        return
    if isinstance(data, Iterable):
        for item in data:
            if not isinstance(item, Mapping):
                raise CalibrationError(f"calibration items must be dicts of input name -> array, "
                                       f"got {type(item).__name__}")
            yield dict(item)
        return
    raise CalibrationError(f"unsupported calibration data {type(data).__name__}: pass a numpy "
                           "array, an iterable of dicts or a CalibrationDataReader")


def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every tensor of the graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def calibrate(model: onnx.ModelProto, data: CalibrationData,
              calibrator: Calibrator | None = None,
              tensors: Iterable[str] | None = None, progress: bool = True,
              ignore: frozenset[str] = frozenset()) -> Calibrator:
    """Run ``model`` on the data and feed every float activation to ``calibrator``.

    Args:
        model: the float model.
        data: calibration data in any accepted form.
        calibrator: defaults to :class:`MinMaxCalibrator`.
        tensors: names to observe (default: every float tensor produced by a node, plus inputs).
        progress: show a progress bar when stderr is a terminal.
        ignore: arrays of the data to drop (inputs frozen to constants).
    """
    calibrator = calibrator or MinMaxCalibrator()
    types = float_tensor_types(model)
    init_names = {i.name for i in model.graph.initializer}
    if tensors is None:
        wanted = [i.name for i in model.graph.input if i.name not in init_names]
        wanted += [o for n in model.graph.node for o in n.output if o]
    else:
        wanted = list(tensors)
    wanted = [t for t in dict.fromkeys(wanted) if types.get(t) == TensorProto.FLOAT]
    probe = _with_outputs(model, wanted, {})   # float outputs, the default type
    so = console.quiet_session_options()
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CalibrationError(f"{model.graph.name}: onnxruntime cannot run the float model for "
                               f"calibration: {first_line(exc)}") from None
    input_names = [i.name for i in sess.get_inputs()]
    specs = {s.name: s for s in input_specs(model)}
    out_names = [o.name for o in sess.get_outputs()]
    first = sess.get_inputs()[0].shape
    batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else 32
    seen = 0
    batches = iter_batches(data, input_names, batch)
    if progress:
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, Mapping) else None
        if isinstance(data, np.ndarray):
            total = -(-len(data) // batch)
        batches = console.progress(batches, total=total, desc="calibrating", unit="batch")
    for feed in batches:
        if ignore:
            feed = {k: v for k, v in feed.items() if k not in ignore}
        missing = set(input_names) - set(feed)
        if missing:
            raise CalibrationError(f"calibration batch {seen} lacks input(s) {sorted(missing)}; "
                                   f"the model's inputs are {input_names}")
        unknown = sorted(str(k) for k in set(feed) - set(input_names))
        if unknown:
            raise CalibrationError(f"calibration batch {seen} has input(s) {unknown} the model "
                                   f"does not have; its inputs are {input_names}: rename them")
        # each input in its own element type (an int64 sample rate, a bool flag)
        feed = {k: cast_input(specs[k], v, f"calibration batch {seen}") for k, v in feed.items()}
        for k, v in feed.items():
            if v.size == 0:
                raise CalibrationError(f"calibration batch {seen}: input {k!r} is empty (shape "
                                       f"{list(v.shape)}); give at least one sample per batch")
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise CalibrationError(f"calibration batch {seen}: input {k!r} contains NaN or "
                                       "infinity; clean the data first")
        try:
            values = sess.run(out_names, feed)
        except Exception as exc:
            raise CalibrationError(f"calibration batch {seen}: the float model failed: "
                                   f"{first_line(exc)}") from None
        for name, v in zip(out_names, values, strict=True):
            if name in wanted or name in feed:
                calibrator.collect(name, np.asarray(v))
        for k, v in feed.items():
            if v.dtype.kind == "f":  # integer and bool inputs have no quantization range
                calibrator.collect(k, v)
        seen += 1
    if seen == 0:
        raise CalibrationError("the calibration data is empty: give at least one sample")
    return calibrator
