"""Freeze graph inputs to constants (``--freeze sr=16000``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ortnpu.errors import ModelError, OrtNpuError
from ortnpu.passes.base import Pass


class FreezeInputs(Pass):
    """Replace graph inputs by initializers holding the given values.

    A model often takes an input that is the same for every use (a voice-activity model's
    sample rate): frozen, it becomes a constant, so constant folding computes what depends on
    it and an ``If`` on it keeps only the branch taken (see ``FoldConstantIf``). The value is
    converted to the input's element type; a scalar or a flat list fills an input of that
    many elements whatever its static shape.

    Args:
        values: input name to its value (a number, a list or an array).

    Raises:
        ModelError: unknown input, a value that does not fit the input's type or shape.
    """

    def __init__(self, values: Mapping[str, object]) -> None:
        self.values = dict(values)

    def apply(self, model: onnx.ModelProto) -> list[str]:
        from ortnpu.feeds import cast_input, input_specs

        specs = {s.name: s for s in input_specs(model)}
        changes: list[str] = []
        for name, value in self.values.items():
            if name not in specs:
                raise ModelError(f"--freeze names {name!r}, which is not a model input; the "
                                 f"inputs are {', '.join(sorted(specs)) or 'none'}")
            spec = specs[name]
            try:
                array = cast_input(spec, value, "--freeze")
            except OrtNpuError as exc:
                raise ModelError(str(exc)) from None
            shape = spec.shape
            if shape is not None:
                static = all(isinstance(d, int) for d in shape)
                if static and array.size == int(np.prod(shape, dtype=np.int64)):
                    array = array.reshape([int(d) for d in shape])  # type: ignore[arg-type]
                elif array.ndim != len(shape) or any(
                        isinstance(d, int) and d != n for d, n in zip(shape, array.shape,
                                                                      strict=False)):
                    raise ModelError(f"--freeze {name}: the input has shape {list(shape)}, the "
                                     f"value {list(array.shape)}")
            keep = [i for i in model.graph.input if i.name != name]
            del model.graph.input[:]
            model.graph.input.extend(keep)
            model.graph.initializer.append(numpy_helper.from_array(array, name))
            shown = array.tolist() if array.size <= 8 else f"array {list(array.shape)}"
            changes.append(f"froze input {name!r} to {shown}")
        return changes


def parse_freeze(values: list[str] | None) -> dict[str, np.ndarray]:
    """``["sr=16000", "mask=1,0,1"]`` -> ``{"sr": array(16000), "mask": array([1, 0, 1])}``.

    Whole numbers become int64, others float64; the pass converts to the input's type.

    Raises:
        ModelError: malformed value.
    """
    frozen: dict[str, np.ndarray] = {}
    for value in values or ():
        name, sep, text = value.partition("=")
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            if not sep or not name or not items:
                raise ValueError
            numbers = [float(t) for t in items]
        except ValueError:
            raise ModelError(f"--freeze {value!r}: expected NAME=VALUE or NAME=V1,V2,..., e.g. "
                             "sr=16000") from None
        whole = all(n.is_integer() for n in numbers) and not any("." in t or "e" in t.lower()
                                                                 for t in items)
        array = np.array(numbers, np.int64 if whole else np.float64)
        frozen[name] = array[0] if len(items) == 1 else array
    return frozen
