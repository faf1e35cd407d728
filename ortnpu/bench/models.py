"""The real models the benchmarks run on, found in the package and the model cache.

Each entry knows its float model, its calibration samples and its evaluation samples (with labels
when the data set has them). Models that were not built (``python models/build_all.py``) are
skipped with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortnpu import models_cache


@dataclass(frozen=True)
class BenchModel:
    """A real model with its data."""

    name: str
    path: Path
    calib: np.ndarray
    test: np.ndarray
    labels: np.ndarray | None
    description: str


def _npz(name: str) -> dict[str, np.ndarray] | None:
    path = models_cache.cached_model(name)
    if path is None:
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _digits() -> BenchModel | None:
    try:
        data = models_cache.load_bundled_data()
        path = models_cache.bundled_model_path()
    except FileNotFoundError:
        return None
    return BenchModel("digits_cnn", path, data["calib_x"], data["test_x"], data["test_y"],
                      "bundled CNN on scikit-learn digits (8x8), held-out split")


def _fashion(model: str, label: str) -> Callable[[], BenchModel | None]:
    def load() -> BenchModel | None:
        path = models_cache.cached_model(model)
        data = _npz("fashion_mnist_data.npz")
        if path is None or data is None:
            return None
        return BenchModel(model.removesuffix(".onnx"), path, data["calib_x"], data["test_x"],
                          data["test_y"], f"{label} on Fashion-MNIST (28x28), 10k test set")

    return load


def _mobilenet() -> BenchModel | None:
    path = models_cache.cached_model("mobilenet_v2.onnx")
    data = _npz("imagenet_photos.npz")
    if path is None or data is None:
        return None
    key = next((k for k in ("x", "crops", "images") if k in data), next(iter(data)))
    x = data[key].astype(np.float32)
    half = len(x) // 2
    return BenchModel("mobilenet_v2", path, x[:half], x[half:], None,
                      "torchvision MobileNetV2 (ImageNet weights), crops of scikit-image photos; "
                      "calibration and evaluation crops are disjoint")


LOADERS: dict[str, Callable[[], BenchModel | None]] = {
    "digits_cnn": _digits,
    "fashion_mnist_cnn": _fashion("fashion_mnist_cnn.onnx", "3-conv CNN"),
    "fashion_resnet": _fashion("fashion_resnet.onnx", "ResNet-like net"),
    "mobilenet_v2": _mobilenet,
}


def load(names: list[str]) -> list[BenchModel]:
    """Load the named models, printing which are missing."""
    out = []
    for name in names:
        if name not in LOADERS:
            raise SystemExit(f"unknown benchmark model {name!r}; known: {', '.join(LOADERS)}")
        model = LOADERS[name]()
        if model is None:
            print(f"# {name}: not built; run `python models/build_all.py` first (skipped)")
            continue
        out.append(model)
    return out
