"""Shared plumbing of the model-building scripts: cache, training, export, checks.

These scripts need torch (see ``models/README.md``); ortnpu itself never imports them. Every
script trains or loads a network, exports it with the legacy TorchScript exporter (the one that
keeps BatchNormalization nodes when asked to preserve the eval-mode graph), renames the nodes to
readable names, checks the file, and compares onnxruntime with torch on the same data.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _cache import REPO_ROOT, cache_dir, output_dir, parse_args, up_to_date
from torch import nn

OPSET = 17


def seed_everything(seed: int, threads: int) -> None:
    """Make training repeatable: fixed seeds, fixed thread count, deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    time_budget_s: float | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
) -> int:
    """Train with AdamW and a one-cycle schedule; stop early if the time budget runs out.

    A time budget keeps the larger builds inside a couple of minutes on a 2-core machine; the
    schedule is laid out for ``epochs`` so stopping early only loses the last annealing steps.

    Returns:
        The number of epochs completed.
    """
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    start = time.monotonic()
    done = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            xb = xt[idx]
            if augment is not None:
                xb = augment(xb, gen)
            opt.zero_grad()
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        done = epoch + 1
        elapsed = time.monotonic() - start
        print(f"  epoch {done:3d}/{epochs}  loss {total / len(xt):.4f}  {elapsed:5.1f} s")
        if time_budget_s is not None and elapsed > time_budget_s and done < epochs:
            print(f"  time budget of {time_budget_s:.0f} s reached, stopping early")
            break
    model.eval()
    return done


@torch.no_grad()
def torch_predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Return the eval-mode outputs of ``model`` on ``x`` as a numpy array."""
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).numpy()


def onnx_predict(path: Path, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Run the exported file in onnxruntime, in batches if the batch dimension is dynamic."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or batch_size
    outs = [sess.run(None, {inp.name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs)


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of class scores (logits or probabilities)."""
    return float(np.mean(np.argmax(scores, axis=1) == y))


def format_accuracy(acc: float) -> str:
    """The one precision accuracies are printed, stored and compared with (6 decimals)."""
    return f"{acc:.6f}"


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    dynamic_batch: bool,
) -> onnx.ModelProto:
    """Export with BatchNormalization kept as its own nodes and with readable node names.

    The legacy exporter in ``EVAL`` mode fuses Conv+BN; ``PRESERVE`` on an eval-mode model keeps
    the BN nodes with the running statistics, which is what an NPU toolchain must see and fold.
    """
    model.eval()
    dynamic_axes = {input_name: {0: "batch"}} if dynamic_batch else None
    if dynamic_axes is not None:
        for name in output_names:
            dynamic_axes[name] = {0: "batch"}
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=list(output_names),
        opset_version=OPSET,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        dynamic_axes=dynamic_axes,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    inline_shared_initializers(proto)
    constants = constants_to_initializers(proto)
    rename_nodes(proto)
    name_constants(proto, constants)
    return proto


def constants_to_initializers(proto: onnx.ModelProto) -> list[str]:
    """Move ``Constant`` nodes (e.g. the bounds of ReLU6's Clip) into initializers.

    Without constant folding the exporter emits them as nodes; as initializers they are plain
    parameters that every tool treats alike. Returns the names of the new initializers.
    """
    graph = proto.graph
    moved: list[str] = []
    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and set(attrs) == {"value"}:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved.append(tensor.name)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return moved


def name_constants(proto: onnx.ModelProto, names: Sequence[str]) -> None:
    """Name former constants after their consumer: ``<clip>_min``, ``<clip>_max``, ``<op>_in1``."""
    graph = proto.graph
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, value in enumerate(node.input):
            consumers.setdefault(value, []).append((node, i))
    roles = {"Clip": {1: "min", 2: "max"}}
    mapping: dict[str, str] = {}
    taken = {t.name for t in graph.initializer}
    for name in names:
        users = consumers.get(name, [])
        if len(users) != 1:
            continue
        node, i = users[0]
        new = f"{node.name}_{roles.get(node.op_type, {}).get(i, f'in{i}')}"
        if new not in taken:
            mapping[name] = new
            taken.add(new)
    for tensor in graph.initializer:
        tensor.name = mapping.get(tensor.name, tensor.name)
    rename_values(proto, mapping)


def inline_shared_initializers(proto: onnx.ModelProto) -> None:
    """Undo the exporter's de-duplication of equal parameters (``Identity(weight)`` nodes).

    Two BN biases that always receive the same gradient (both feed one Add) stay equal, and the
    exporter then stores one and adds an Identity node for the other. Each layer should own its
    parameters, so the copy becomes an initializer again under the Identity's output name.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


FUNCTIONAL_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Concat", "Reshape", "Transpose"})
"""Ops written as expressions inside a module's forward, so its scope names the block."""


def rename_nodes(proto: onnx.ModelProto) -> None:
    """Turn exporter scopes (``/block/dw/Conv``) into short unique names (``block_dw``).

    Modules are named after what they are (``conv1``, ``bn1``, ``relu1``), so the scope alone
    is the readable name; helper nodes the exporter adds keep their op type as a suffix.
    """
    used: set[str] = set()
    for node in proto.graph.node:
        parts = [p for p in node.name.split("/") if p][:-1]
        scope: list[str] = []
        for part in parts:  # "/features/features.1/conv/conv.0" -> features, 1, conv, 0
            if scope and part.startswith(f"{parts[len(scope) - 1]}."):
                part = part[len(parts[len(scope) - 1]) + 1 :]
            scope.append(part)
        if scope and node.op_type in FUNCTIONAL_OPS:
            scope.append(node.op_type.lower())
        base = "_".join(scope) if scope else node.op_type.lower()
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        name = base
        if name in used:
            name = f"{base}_{node.op_type.lower()}"
        k = 1
        while name in used:
            k += 1
            name = f"{base}_{node.op_type.lower()}{k}"
        used.add(name)
        node.name = name
    _rename_values(proto)


def _rename_values(proto: onnx.ModelProto) -> None:
    """Name each intermediate tensor after the node that makes it (``conv1`` -> ``conv1_out``).

    Graph inputs, outputs and initializers keep their names: applications and weights use them.
    """
    graph = proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    keep |= {t.name for t in graph.initializer}
    mapping: dict[str, str] = {}
    for node in graph.node:
        for i, value in enumerate(node.output):
            if value and value not in keep:
                suffix = "_out" if len(node.output) == 1 else f"_out{i}"
                mapping[value] = f"{node.name}{suffix}"
    rename_values(proto, mapping)


def rename_values(proto: onnx.ModelProto, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere they appear: node inputs and outputs, graph outputs, shapes."""
    graph = proto.graph
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for vi in list(graph.output) + list(graph.value_info):
        vi.name = mapping.get(vi.name, vi.name)


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    """Record provenance in ``metadata_props`` (replacing keys that already exist)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key = key
            entry.value = value


def save_checked(proto: onnx.ModelProto, path: Path) -> None:
    """Save, then run the full ONNX checker (with shape inference) on the saved file."""
    proto.producer_name = "ortnpu-models"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    """Count nodes per op type, for the build log."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def fail(message: str) -> None:
    """Stop a build with a message and a non-zero exit code."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def env_threads(default: int = 2) -> int:
    """Threads for training: ``ORTNPU_TRAIN_THREADS`` or the default (the machines have 2)."""
    return int(os.environ.get("ORTNPU_TRAIN_THREADS", default))


__all__ = [
    "OPSET",
    "REPO_ROOT",
    "accuracy",
    "cache_dir",
    "env_threads",
    "export_onnx",
    "fail",
    "format_accuracy",
    "onnx_predict",
    "op_counts",
    "output_dir",
    "parse_args",
    "rename_nodes",
    "rename_values",
    "save_checked",
    "seed_everything",
    "set_metadata",
    "torch_predict",
    "train_classifier",
    "up_to_date",
]
