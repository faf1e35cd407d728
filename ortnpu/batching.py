"""Many samples through a model with a fixed batch size: one shared rule for run, compare, autofix.

Data files hold samples along the first axis; exported models often fix that axis (batch 1).
``compare`` and ``autofix`` cut the data into batches the model accepts and ``run`` does the
same, so a multi-sample file works everywhere a single sample does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ortnpu import console
from ortnpu.errors import ModelError


def fixed_batch(first_dims: Sequence[Any]) -> int | None:
    """The batch size the model fixes on the first axis of its inputs, or ``None``.

    Args:
        first_dims: the first dimension of each input (an int when fixed, a name or ``None``
            when free; inputs of rank 0 give ``None`` too).

    Returns:
        The common fixed size when every input fixes the same one, else ``None`` (a free batch,
        or inputs whose first axis is not the sample, e.g. a recurrent state).
    """
    sizes = {d for d in first_dims}
    if len(sizes) == 1:
        (size,) = sizes
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
            return int(size)
    return None


def sample_batches(arrays: Mapping[str, np.ndarray], size: int, *,
                   whole: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Cut every array along its first axis into feeds of ``size`` samples.

    Args:
        arrays: ``{input name: array}``; all arrays hold the same number of samples.
        size: samples per feed.
        whole: the model needs exactly ``size`` samples per feed: a last incomplete batch is
            left out (the caller reports how many samples it used).
    """
    n = min((len(a) for a in arrays.values()), default=0)
    for start in range(0, n, size):
        stop = min(start + size, n)
        if whole and stop - start != size:
            return
        yield {k: a[start:stop] for k, a in arrays.items()}


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


def _input_first_dims(sess: Any) -> list[Any]:
    return [i.shape[0] if i.shape else None for i in sess.get_inputs()]


def run_samples(sess: Any, feed: Mapping[str, np.ndarray],
                output_names: Sequence[str] | None = None, *, progress: bool = True,
                desc: str = "run") -> list[np.ndarray]:
    """Run ``feed`` (first axis = sample) through ``sess``, a fixed batch at a time if needed.

    A model that fixes its batch size (every input's first dimension the same number ``B``) is
    run on ``B`` samples at a time when the feed holds more, and the outputs are joined along
    the first axis; otherwise the feed runs in one call, as given.

    Args:
        sess: an :class:`ortnpu.InferenceSession` or ``onnxruntime.InferenceSession``.
        feed: ``{input name: array}``.
        output_names: outputs to return (default: all).
        progress: a progress bar over the batches on a terminal.
        desc: the bar's label.

    Raises:
        ModelError: the sample count is not a multiple of the fixed batch, or an output does
            not hold one row per sample so the batches' outputs cannot be joined.
    """
    names = list(output_names) if output_names else None
    batch = fixed_batch(_input_first_dims(sess))
    counts = {len(v) if np.ndim(v) else None for v in feed.values()}
    n = counts.pop() if len(counts) == 1 else None
    if batch is None or n is None or n <= batch:
        return sess.run(names, dict(feed))
    check_whole_batches(n, batch)
    results: list[list[np.ndarray]] = []
    batches = console.progress(sample_batches(feed, batch, whole=True), total=n // batch,
                               desc=desc, unit="batch", enabled=progress)
    for part in batches:
        results.append(sess.run(names, part))
    out_names = names or [o.name for o in sess.get_outputs()]
    joined = []
    for k, name in enumerate(out_names):
        parts = [r[k] for r in results]
        if any(np.ndim(p) == 0 or len(p) != batch for p in parts):
            raise ModelError(f"output {name!r} has shape {list(np.shape(parts[0]))} for a batch "
                             f"of {batch}, not one row per sample, so the outputs of {n} "
                             "samples cannot be joined; run the samples one batch at a time")
        joined.append(np.concatenate(parts, axis=0))
    return joined


__all__ = ["check_whole_batches", "fixed_batch", "run_samples", "sample_batches"]
