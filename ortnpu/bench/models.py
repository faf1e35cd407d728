"""The real models the benchmarks run on, found in the package and the model cache.

Each entry knows its float model, its calibration samples and its evaluation samples (with labels
when the data set has them). Models that were not built (``python models/build_all.py``) or whose
data source is not installed are skipped with a message saying how to get them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortnpu import models_cache
from ortnpu.bench import images

#: ImageNet models: calibration crops (scikit-image photos) and evaluation crops (wallpapers)
IMAGENET_CALIBRATION = 64
IMAGENET_EVALUATION = 1000


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
    photos = data["x"].astype(np.float32)
    pick = np.linspace(0, len(photos) - 1, min(IMAGENET_CALIBRATION, len(photos)))
    calib = photos[pick.round().astype(int)]
    test = images.normalise(images.wallpaper_crops(
        IMAGENET_EVALUATION, models_cache.cache_dir() / "wallpaper_crops.npz"))
    return BenchModel("mobilenet_v2", path, calib, test, None,
                      f"torchvision MobileNetV2 (ImageNet weights); {len(calib)} calibration crops "
                      f"of scikit-image photos, {len(test)} evaluation crops of Debian's desktop "
                      "backgrounds (a disjoint source)")


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
        try:
            model = LOADERS[name]()
        except images.MissingSourceError as exc:
            print(f"# {name}: evaluation data missing: {exc} (skipped)")
            continue
        if model is None:
            print(f"# {name}: not built; run `python models/build_all.py` first (skipped)")
            continue
        out.append(model)
    return out
