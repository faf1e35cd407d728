"""``ortnpu.from_torch``: a PyTorch module into an optimized float ONNX model.

An NPU runs a fixed-shape graph, so the module is exported with the example inputs' shapes
frozen (no dynamic axes; ``dynamic_batch=True`` keeps axis 0 free, as most exports do: the
NPU graph then runs any batch, one sample after another), at an opset whose forms ortnpu's
passes and onnxruntime both know, and then goes through :func:`ortnpu.optimize`, ready for
``evaluate``/``quantize``.

The exporter is torch's TorchScript-based one (``dynamo=False``): it runs offline with no
extra package, keeps the module scopes in node names (``/blocks.0/attn/MatMul``) and emits
plain opset-17 ops. The dynamo exporter (``dynamo=True``) also works where onnxscript is
installed; it writes opset 18+ and inlines functions.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from ortnpu.errors import ModelError, UnsupportedError, first_line

DEFAULT_OPSET = 17
"""Opset of the exported model: every op ortnpu lowers has its current form there."""

MIN_OPSET, MAX_OPSET = 13, 21

_INSTALL = "install PyTorch: pip install 'ortnpu[torch]' (or pip install torch)"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise UnsupportedError(f"from_torch needs PyTorch, which is not installed ({exc}); "
                               f"{_INSTALL}") from None
    return torch


def _as_tuple(torch: Any, example_inputs: Any) -> tuple[Any, ...]:
    """The example inputs as a tuple of tensors (numpy arrays are converted)."""
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not items:
        raise ModelError("from_torch needs at least one example input (a tensor per input of "
                         "forward(), with the shapes the NPU model will run at)")
    out = []
    for k, item in enumerate(items):
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        if not isinstance(item, torch.Tensor):
            raise ModelError(f"from_torch: example input {k} is a {type(item).__name__}; pass "
                             "torch tensors or numpy arrays (one per input of forward())")
        out.append(item)
    return tuple(out)


def from_torch(module: Any, example_inputs: Any, *, input_names: Sequence[str] | None = None,
               output_names: Sequence[str] | None = None, opset: int = DEFAULT_OPSET,
               optimize: bool = True, dynamo: bool = False,
               dynamic_batch: bool = False) -> onnx.ModelProto:
    """Export a PyTorch module with fixed shapes and (by default) optimize it for an NPU.

    Args:
        module: a ``torch.nn.Module`` (put in eval mode here: dropout off, BatchNorm uses its
            running statistics) or a scripted module.
        example_inputs: one tensor or array, or a tuple of them, one per input of
            ``forward()``; their shapes and dtypes become the model's fixed input shapes.
        input_names: names of the ONNX inputs (default ``input``/``input_0``, ``input_1``...).
        output_names: names of the ONNX outputs (default ``output``/``output_0``...).
        opset: ONNX opset of the export (13 to 21; default 17).
        optimize: run :func:`ortnpu.optimize` on the export (BatchNorm folding, constant
            folding, MatMul+Add fusion...); False returns the raw export.
        dynamo: use torch's dynamo-based exporter (needs onnxscript) instead of TorchScript's.
        dynamic_batch: leave axis 0 of every input and output dynamic (named ``batch``), as
            deployment exports usually do (TorchScript exporter only). The exporter then
            computes reshape targets from ``Shape`` at run time; ``optimize`` folds what does
            not depend on the batch (:class:`~ortnpu.passes.FoldShapeArithmetic`).

    Returns:
        The float ``onnx.ModelProto``, checked by the ONNX checker.

    Raises:
        UnsupportedError: torch is missing, or the exporter cannot export the module (its
            message is quoted).
        ModelError: bad arguments (no example input, wrong names count, opset out of range).
    """
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ModelError(f"from_torch: opset {opset} is outside {MIN_OPSET}..{MAX_OPSET}, the "
                         "opsets ortnpu's passes and the NPU graph handle")
    inputs = _as_tuple(torch, example_inputs)
    in_names = _names(input_names, len(inputs), "input")
    module.eval()
    with torch.no_grad():
        try:
            outs = module(*inputs)
        except Exception as exc:
            raise ModelError(f"from_torch: the module fails on the example inputs: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    n_out = len(outs) if isinstance(outs, (tuple, list)) else 1
    out_names = _names(output_names, n_out, "output")
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {"input_names": in_names, "output_names": out_names,
                              "opset_version": int(opset), "dynamo": dynamo}
    if not dynamo:
        kwargs["do_constant_folding"] = True
    if dynamic_batch:
        if dynamo:
            raise ModelError("from_torch: dynamic_batch needs the TorchScript exporter "
                             "(dynamo=False)")
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in [*in_names, *out_names]}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter is chosen on purpose (module docstring): hide its notice
            warnings.simplefilter("ignore", DeprecationWarning)
            exported = torch.onnx.export(module, inputs, None if dynamo else buffer, **kwargs)
    except Exception as exc:
        raise UnsupportedError(f"from_torch: torch.onnx.export failed: {type(exc).__name__}: "
                               f"{first_line(exc)}") from None
    model = exported.model_proto if dynamo else onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"from_torch: the exported model is not valid ONNX: "
                         f"{first_line(exc)}") from None
    if not optimize:
        return model
    from ortnpu.passes import optimize as run_optimize

    optimized: onnx.ModelProto = run_optimize(model)
    return optimized


def _names(given: Sequence[str] | None, count: int, stem: str) -> list[str]:
    """The given names (checked against the count) or ``stem`` / ``stem_<k>`` defaults."""
    if given is None:
        return [stem] if count == 1 else [f"{stem}_{k}" for k in range(count)]
    names = [str(n) for n in given]
    if len(names) != count:
        raise ModelError(f"from_torch: {len(names)} {stem} names given ({names}) but the module "
                         f"has {count} {stem}s")
    if len(set(names)) != len(names):
        raise ModelError(f"from_torch: {stem} names must be unique, got {names}")
    return names


__all__ = ["DEFAULT_OPSET", "from_torch"]
