"""Check that two float models compute the same outputs.

The check feeds random inputs whose shapes come from the model (or ``input_shapes``), so a
declared input of [12000, 12000] would allocate gigabytes: every input and every tensor whose
inferred shape is static is bounded by :data:`MAX_CHECK_TENSOR_BYTES`, and the refusal names
the tensor and says how to go on (a smaller ``input_shapes`` entry, or no check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ortnpu.console import quiet_session_options
from ortnpu.errors import ModelError, first_line
from ortnpu.onnx_types import dim_size

#: Largest tensor, in bytes, the output check creates (an input) or lets onnxruntime compute
#: (an intermediate or output of static inferred shape): 512 MiB.
MAX_CHECK_TENSOR_BYTES = 1 << 29
#: How to go on when the check cannot run as asked (library and CLI spellings).
_HINT = ("give the inputs smaller or real shapes with input_shapes={...} (CLI: --input-shape "
         "NAME=D1,D2,...) or skip the check (CLI: --no-verify)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _input_specs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None
                 ) -> list[tuple[str, list[int], np.dtype, bool]]:
    """``(name, dims, dtype, guessed)`` of every graph input that is not an initializer;
    ``guessed`` when a dynamic dimension was given a default size."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        guessed = False
        if input_shapes and inp.name in input_shapes:
            dims = [int(d) for d in input_shapes[inp.name]]
        else:
            dims = []
            rank = len(tt.shape.dim)
            for axis, d in enumerate(tt.shape.dim):
                size = dim_size(d)
                if size is not None:
                    dims.append(size)
                else:
                    guessed = True
                    dims.append(32 if rank == 4 and axis >= 2 else 1)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, ValueError, TypeError):
            raise ModelError(f"input {inp.name!r} has an element type ortnpu cannot generate "
                             "random data for") from None
        nbytes = dtype.itemsize
        for d in dims:
            nbytes *= max(d, 0)
        if nbytes > MAX_CHECK_TENSOR_BYTES:
            raise ModelError(f"input {inp.name!r} of shape {dims} ({dtype}) would need "
                             f"{_mib(nbytes)} of random data for the output check (limit "
                             f"{_mib(MAX_CHECK_TENSOR_BYTES)}); {_HINT}")
        specs.append((inp.name, dims, dtype, guessed))
    return specs


def check_tensor_sizes(model: onnx.ModelProto) -> None:
    """Refuse a check whose static inferred tensors exceed :data:`MAX_CHECK_TENSOR_BYTES`.

    Raises:
        ModelError: names the first tensor too large.
    """
    for vi in [*model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = [dim_size(d) for d in tt.shape.dim]
        if any(d is None for d in dims):
            continue
        try:
            nbytes = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except (KeyError, ValueError, TypeError):
            continue
        for d in dims:
            nbytes *= d
        if nbytes > MAX_CHECK_TENSOR_BYTES:
            raise ModelError(f"tensor {vi.name!r} of shape {dims} would take {_mib(nbytes)} "
                             f"in the output check (limit {_mib(MAX_CHECK_TENSOR_BYTES)}); "
                             f"{_HINT}")


def random_inputs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input: normal floats, small non-negative integers.

    Dims come from ``input_shapes`` when the input is named there, else from the model; an
    unknown dim becomes 1, or 32 for the spatial axes of a rank-4 (image-like) input.

    Raises:
        ModelError: an input type that cannot be generated, or an input larger than
            :data:`MAX_CHECK_TENSOR_BYTES`.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, dims, dtype, _ in _input_specs(model, input_shapes):
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(dims).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, 4, size=dims).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.random(dims) < 0.5
        else:
            raise ModelError(f"input {name!r} has type {dtype}; cannot generate data")
    return feeds


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = quiet_session_options()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from None


def compare_models(original: onnx.ModelProto, optimized: onnx.ModelProto, *,
                   input_shapes: Mapping[str, Sequence[int]] | None = None, samples: int = 3,
                   seed: int = 0, feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
                   tolerance: float = 1e-4, noise_floor: float = 1e-6) -> dict[str, Any]:
    """Run both models on the same random inputs and measure the largest output difference.

    Args:
        original: the reference model.
        optimized: the model that should compute the same outputs.
        input_shapes: shapes for dynamic inputs (else see :func:`random_inputs`).
        samples: number of random input sets.
        seed: seed of the first set.
        feeds: input sets to use instead of random ones (e.g. real images).
        tolerance: largest accepted error relative to an output's range.
        noise_floor: an absolute error this small is accepted whatever the range (float32
            rounding of outputs with a near-empty range, e.g. a saturated sigmoid).

    Returns:
        ``{"max_abs_error", "max_relative_error", "ok", "tolerance", "outputs": [{"name",
        "max_abs_error", "range", "relative_error", "ok"}], "samples"}``; the relative error
        divides by the output's range (max - min over all samples).

    Raises:
        ModelError: a model does not load or run in onnxruntime (with a hint when dynamic
            dimensions were given default sizes), or a tensor of the check would exceed
            :data:`MAX_CHECK_TENSOR_BYTES`.
    """
    guessed = [] if feeds is not None else [
        f"{name}={','.join(map(str, dims))}"
        for name, dims, _, g in _input_specs(original, input_shapes) if g]
    if feeds is None:
        check_tensor_sizes(optimized)
    a, b = _session(original), _session(optimized)
    names = [o.name for o in a.get_outputs()]
    errors: dict[str, float] = dict.fromkeys(names, 0.0)
    lo: dict[str, float] = dict.fromkeys(names, np.inf)
    hi: dict[str, float] = dict.fromkeys(names, -np.inf)
    sets = [dict(f) for f in feeds] if feeds is not None else [
        random_inputs(original, input_shapes, seed + k) for k in range(samples)]
    for feed in sets:
        try:
            ra = a.run(names, feed)
            rb = b.run(names, feed)
        except Exception as exc:  # onnxruntime raises its own exception types
            why = f"onnxruntime failed to run the models: {first_line(exc)}"
            if guessed:
                why += (f"; the check gave the dynamic dimensions default sizes "
                        f"({' '.join(guessed)}), which this model may not accept: {_HINT}")
            raise ModelError(why) from None
        for name, x, y in zip(names, ra, rb, strict=True):
            if x.shape != y.shape:
                raise ModelError(f"output {name!r} has shape {list(y.shape)} instead of "
                                 f"{list(x.shape)} after optimization")
            x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
            if x64.size:
                errors[name] = max(errors[name], float(np.max(np.abs(x64 - y64))))
                lo[name] = min(lo[name], float(x64.min()))
                hi[name] = max(hi[name], float(x64.max()))
    outputs = []
    for name in names:
        rng = max(hi[name] - lo[name], 0.0) if np.isfinite(hi[name]) else 0.0
        rel = errors[name] / rng if rng > 0 else (0.0 if errors[name] == 0 else np.inf)
        ok = rel <= tolerance or errors[name] <= noise_floor
        outputs.append({"name": name, "max_abs_error": errors[name], "range": rng,
                        "relative_error": rel, "ok": bool(ok)})
    return {"max_abs_error": max((o["max_abs_error"] for o in outputs), default=0.0),
            "max_relative_error": max((o["relative_error"] for o in outputs), default=0.0),
            "ok": all(o["ok"] for o in outputs), "tolerance": tolerance,
            "noise_floor": noise_floor, "outputs": outputs, "samples": len(sets)}
