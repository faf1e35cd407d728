"""Model inputs and arrays of samples: each input's element type and sample (batch) axis.

Calibration, ``run`` and ``compare`` read samples from arrays (an .npz holds one array per
input). An input is fed in its own element type (an int64 sample rate, a bool flag), never
cast to float32. Each input has its own sample axis: axis 0 for an image, axis 1 for an LSTM
state ``[2, batch, 64]``, none for a scalar such as a sample rate. The axis is, in order:

1. given by the caller (``--batch-axis NAME=AXIS``, ``NAME=none``);
2. none for a rank-0 input (one value used for every sample; an array with one more axis
   than the input stacks one value per sample instead);
3. the axis carrying the model's batch symbol (the symbolic first dimension of the first input
   that has one, e.g. ``batch`` in ``x[batch, 3, H, W]`` and ``h0[2, batch, 64]``);
4. for a fixed shape, the one axis of size 1 where the array is longer than the model's dim
   (``h0[2, 1, 64]`` fed from an array ``[2, N, 64]``);
5. axis 0.

An input given for one sample only (size 1 on its sample axis) is fed unchanged with every
sample of the others.

:func:`run_samples` runs such arrays through a session: at once when the model takes them, else
a fixed batch at a time (exported models often fix the batch to 1), joining the outputs, so a
multi-sample file works in ``run``, ``compare`` and ``autofix`` alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ortnpu import console
from ortnpu.errors import CalibrationError, ModelError
from ortnpu.onnx_types import np_dtype, type_name

#: A sample axis: an axis number, None (the same value for every sample) or STACKED (the array
#: has one more leading axis than the input: sample i is ``array[i]``).
STACKED = "stacked"


@dataclass(frozen=True)
class InputSpec:
    """What a model input accepts: its element type and its shape as far as it is known."""

    name: str
    elem_type: int
    shape: tuple[int | str | None, ...] | None

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype onnxruntime wants (None for an element type numpy lacks)."""
        return np_dtype(self.elem_type) if self.elem_type else None


def spec_of(vi: onnx.ValueInfoProto) -> InputSpec:
    """The :class:`InputSpec` of a graph input's value info."""
    from ortnpu.passes.graph import shape_of

    shape = shape_of(vi)
    return InputSpec(vi.name, vi.type.tensor_type.elem_type,
                     None if shape is None else tuple(shape))


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are not initializers, in order."""
    inits = {t.name for t in model.graph.initializer}
    return [spec_of(vi) for vi in model.graph.input if vi.name not in inits]


def output_axis(shape: Sequence[int | str | None] | None, symbol: str | None) -> int | None:
    """The sample axis of an output (to join per-sample results): the batch symbol's axis,
    else the only axis of size 1 of a fixed shape, else 0 (None for a scalar)."""
    if shape is not None and len(shape) == 0:
        return None
    if shape is None:
        return 0
    if symbol is not None and symbol in shape:
        return list(shape).index(symbol)
    ones = [k for k, d in enumerate(shape) if d == 1]
    return ones[0] if len(ones) == 1 else 0


def cast_input(spec: InputSpec, value: object, where: str = "") -> np.ndarray:
    """``value`` as an array of the input's element type.

    Raises:
        CalibrationError: the value does not fit the type (floats for an integer input that
            are not whole numbers, out-of-range integers, text...), naming the input.
    """
    prefix = f"{where}: " if where else ""
    want = spec.dtype
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{prefix}input {spec.name!r} is not an array: {exc}") from None
    kind = type_name(spec.elem_type) if spec.elem_type else "unknown type"
    if a.dtype.kind not in "biuf":
        raise CalibrationError(f"{prefix}input {spec.name!r} ({kind}) got an array of dtype "
                               f"{a.dtype}; give numeric arrays")
    if want is None or a.dtype == want:
        return a
    if want.kind == "f":
        if a.dtype.kind == "b":
            raise CalibrationError(f"{prefix}input {spec.name!r} is {kind}; got booleans")
        return a.astype(want)
    if want.kind == "b":
        if a.dtype.kind != "b" and a.size and not np.isin(a, (0, 1)).all():
            raise CalibrationError(f"{prefix}input {spec.name!r} is BOOL; got values other than "
                                   "0 and 1")
        return a.astype(bool)
    if want.kind in "iu":
        if a.dtype.kind == "f" and a.size and not (np.isfinite(a).all() and
                                                   (a == np.round(a)).all()):
            raise CalibrationError(f"{prefix}input {spec.name!r} is {kind}; got non-integer "
                                   f"values (dtype {a.dtype}): save it as integers")
        info = np.iinfo(want)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise CalibrationError(f"{prefix}input {spec.name!r} is {kind}; values "
                                   f"{a.min()}..{a.max()} do not fit")
        return a.astype(want)
    raise CalibrationError(f"{prefix}input {spec.name!r} has element type {kind}, which ortnpu "
                           "cannot feed")


def parse_batch_axes(values: Sequence[str] | None) -> dict[str, int | None]:
    """``["h0=1", "sr=none"]`` -> ``{"h0": 1, "sr": None}`` (``--batch-axis``).

    Raises:
        CalibrationError: malformed value.
    """
    axes: dict[str, int | None] = {}
    for value in values or ():
        name, sep, axis = value.rpartition("=")
        axis = axis.strip().lower()
        if not sep or not name or not (axis == "none" or axis.lstrip("-").isdigit()):
            raise CalibrationError(f"--batch-axis {value!r}: expected NAME=AXIS or NAME=none, "
                                   "e.g. h0=1")
        axes[name] = None if axis == "none" else int(axis)
    return axes


def batch_symbol(specs: Sequence[InputSpec]) -> str | None:
    """The symbolic first dimension of the first input that has one (the batch)."""
    for s in specs:
        if s.shape and isinstance(s.shape[0], str):
            return s.shape[0]
    return None


def sample_axis(spec: InputSpec, array: np.ndarray | None = None, symbol: str | None = None,
                given: Mapping[str, int | None] | None = None) -> int | str | None:
    """The sample axis of ``spec`` for ``array`` (see the module docstring for the rules)."""
    rank = None if spec.shape is None else len(spec.shape)
    if given and spec.name in given:
        axis = given[spec.name]
        if axis is None:
            return None
        ndim = array.ndim if array is not None else rank
        if ndim is not None and not -ndim <= axis < ndim:
            raise CalibrationError(f"--batch-axis {spec.name}={axis}: the input has rank {ndim}")
        return axis % ndim if ndim else axis
    if array is not None and rank is not None and array.ndim == rank + 1:
        return STACKED
    if rank == 0:
        return None
    if spec.shape is not None and symbol is not None and symbol in spec.shape:
        return spec.shape.index(symbol)
    if array is not None and spec.shape is not None and array.ndim == len(spec.shape):
        longer = [k for k, d in enumerate(spec.shape)
                  if d == 1 and array.shape[k] > 1]
        if len(longer) == 1:
            return longer[0]
    return 0


def _count(array: np.ndarray, axis: int | str | None) -> int | None:
    if axis is None:
        return None
    return len(array) if axis == STACKED else array.shape[int(axis)]


def _take(array: np.ndarray, axis: int | str | None, start: int, stop: int,
          count: int | None) -> np.ndarray:
    if axis is None:
        return array
    if count == 1:   # one sample given: the same for every sample of the others
        start, stop = 0, 1
    if axis == STACKED:
        return array[start]
    index = [slice(None)] * array.ndim
    index[int(axis)] = slice(start, stop)
    return array[tuple(index)]


def check_whole_batches(n: int, batch: int) -> None:
    """Refuse ``n`` samples for a model that fixes its batch to ``batch`` unless they split
    into whole batches.

    Raises:
        ModelError: ``n`` is not a multiple of ``batch``.
    """
    if n % batch:
        raise ModelError(f"the model takes batches of {batch} samples (its input shape fixes "
                         f"the batch axis); {n} samples is not a multiple of {batch}: drop "
                         f"{n % batch} sample(s) or pad the data")


def fixed_batch(specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray],
                batch_axes: Mapping[str, int | None] | None = None) -> int | None:
    """The batch size the model fixes when ``arrays`` hold a different number of samples.

    Looks at the first input with a known shape and a sample axis: ``None`` when that axis is
    free (a batch symbol) or the arrays already hold exactly the fixed number of samples (they
    run as given), else the fixed size.
    """
    symbol = batch_symbol(specs)
    for s in specs:
        if s.name in arrays and s.shape:
            a = np.asarray(arrays[s.name])
            axis = sample_axis(s, a, symbol, batch_axes)
            if isinstance(axis, int) and isinstance(s.shape[axis], int) and s.shape[axis] > 0:
                return s.shape[axis] if a.shape[axis] != s.shape[axis] else None
            return None
    return None


def session_specs(sess: Any) -> list[InputSpec]:
    """The :class:`InputSpec` of each input of an (ortnpu or onnxruntime) session."""
    specs = []
    for i in sess.get_inputs():
        kind = str(i.type or "")
        name = kind[len("tensor("):-1].upper() if kind.startswith("tensor(") else ""
        elem = dict(onnx.TensorProto.DataType.items()).get(name, 0)
        shape = None if i.shape is None else tuple(d if isinstance(d, (int, str)) else None
                                                   for d in i.shape)
        specs.append(InputSpec(i.name, elem, shape))
    return specs


def run_samples(sess: Any, feed: Mapping[str, np.ndarray],
                output_names: Sequence[str] | None = None, *,
                batch_axes: Mapping[str, int | None] | None = None, progress: bool = True,
                desc: str = "run", where: str = "") -> list[np.ndarray]:
    """Run ``feed`` through ``sess``, a fixed batch at a time when the model needs it.

    The feed runs in one call when the model takes it as given. A model that fixes its batch
    (see :func:`fixed_batch`) fed more samples, or ``batch_axes`` given, runs batch by batch
    along each input's own sample axis, and each output is joined along its own sample axis.

    Args:
        sess: an :class:`ortnpu.InferenceSession` or ``onnxruntime.InferenceSession``.
        feed: ``{input name: array}``.
        output_names: outputs to return (default: all).
        batch_axes: sample axes given by the caller (``--batch-axis``).
        progress: a progress bar over the batches on a terminal.
        desc: the bar's label.
        where: prefix of input error messages (e.g. the data file).

    Raises:
        ModelError: the sample count is not a multiple of the fixed batch, or an output does
            not hold one row per sample so the batches' outputs cannot be joined.
        CalibrationError: an array does not fit its input.
    """
    names = list(output_names) if output_names else [o.name for o in sess.get_outputs()]
    specs = [s for s in session_specs(sess) if s.name in feed]
    batch = fixed_batch(specs, feed, batch_axes)
    if batch is None and not batch_axes:
        return list(sess.run(names, dict(feed)))
    symbol = batch_symbol(specs)
    total = None
    if batch is not None:
        first = next(s for s in specs if s.name in feed and s.shape)
        axis = sample_axis(first, np.asarray(feed[first.name]), symbol, batch_axes)
        n = np.asarray(feed[first.name]).shape[int(axis)]   # type: ignore[arg-type]
        check_whole_batches(n, batch)
        total = n // batch
    parts: list[list[np.ndarray]] = [[] for _ in names]
    batches = console.progress(
        sample_batches(specs, feed, batch_axes=batch_axes, batch=batch or 1 << 30, where=where),
        total=total, desc=desc, unit="batch", enabled=progress)
    for _, part in batches:
        for k, v in enumerate(sess.run(names, part)):
            parts[k].append(v)
    oshapes = {o.name: o.shape for o in sess.get_outputs()}
    joined = []
    for name, vs in zip(names, parts, strict=True):
        if len(vs) == 1:
            joined.append(vs[0])
            continue
        axis = output_axis(oshapes.get(name), symbol)
        if batch is not None and (axis is None or any(
                np.ndim(v) <= axis or np.shape(v)[axis] != batch for v in vs)):
            raise ModelError(f"output {name!r} has shape {list(np.shape(vs[0]))} for a batch "
                             f"of {batch}, not one row per sample, so the outputs of "
                             f"{batch * len(vs)} samples cannot be joined; run the samples one "
                             "batch at a time")
        joined.append(vs[0] if axis is None else np.concatenate(vs, axis))
    return joined


def iter_samples(specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray], *,
                 batch_axes: Mapping[str, int | None] | None = None, batch: int = 1,
                 limit: int | None = None, where: str = "") -> Iterator[dict[str, np.ndarray]]:
    """Feeds of ``batch`` samples (see :func:`sample_batches`)."""
    for _, feed in sample_batches(specs, arrays, batch_axes=batch_axes, batch=batch,
                                  limit=limit, where=where):
        yield feed


def sample_batches(specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray], *,
                   batch_axes: Mapping[str, int | None] | None = None, batch: int = 1,
                   limit: int | None = None, where: str = "",
                   whole: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(sample count, feed) pairs of ``batch`` samples (1 when an input stacks its samples)
    cut from ``arrays``, each input in its own element type and cut along its own sample axis.
    ``whole``: the model needs exactly ``batch`` samples per feed, so a last incomplete batch
    is left out (the caller reports how many samples it used).

    Raises:
        CalibrationError: an array is missing, has the wrong type, or ``batch_axes`` names
            an input the model does not have.
    """
    names = [s.name for s in specs]
    unknown = sorted(set(batch_axes or {}) - set(names))
    if unknown:
        raise CalibrationError(f"--batch-axis names {unknown}, not inputs of the model; its "
                               f"inputs are {names}")
    symbol = batch_symbol(specs)
    prepared = []
    for s in specs:
        if s.name not in arrays:
            raise CalibrationError(f"{where + ': ' if where else ''}no array for model input "
                                   f"{s.name!r}; the inputs are {names}")
        a = cast_input(s, arrays[s.name], where)
        axis = sample_axis(s, a, symbol, batch_axes)
        prepared.append((s.name, a, axis, _count(a, axis)))
    counts = [c for _, _, _, c in prepared if c is not None]
    many = [c for c in counts if c > 1]
    n = 0 if 0 in counts else min(many) if many else 1
    if limit is not None:
        n = min(n, limit)
    step = 1 if any(ax == STACKED for _, _, ax, _ in prepared) else max(1, batch)
    for start in range(0, n, step):
        stop = min(start + step, n)
        if whole and stop - start != step:
            return
        yield stop - start, {k: _take(a, ax, start, stop, c) for k, a, ax, c in prepared}


__all__ = ["STACKED", "InputSpec", "batch_symbol", "cast_input", "check_whole_batches",
           "fixed_batch", "input_specs", "iter_samples", "output_axis", "parse_batch_axes",
           "run_samples", "sample_axis", "sample_batches", "session_specs", "spec_of"]
