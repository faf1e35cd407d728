"""The real models the benchmarks run on, found in the package and the model cache.

Each entry knows its float model, its calibration samples and its evaluation samples (with labels
when the data set has them). Models that were not built (``python models/build_all.py``) or whose
data source is not installed are skipped with a message saying how to get them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

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


def photo_calibration(count: int = IMAGENET_CALIBRATION) -> np.ndarray | None:
    """``count`` crops of the scikit-image photos (``imagenet_photos.npz``), spread evenly over
    them: the calibration samples of the ImageNet models (None when not built)."""
    data = _npz("imagenet_photos.npz")
    if data is None:
        return None
    photos = data["x"].astype(np.float32)
    pick = np.linspace(0, len(photos) - 1, min(count, len(photos)))
    return photos[pick.round().astype(int)]


def _mobilenet() -> BenchModel | None:
    path = models_cache.cached_model("mobilenet_v2.onnx")
    calib = photo_calibration()
    if path is None or calib is None:
        return None
    test = images.normalise(images.wallpaper_crops(
        IMAGENET_EVALUATION, models_cache.cache_dir() / "wallpaper_crops.npz"))
    return BenchModel("mobilenet_v2", path, calib, test, None,
                      f"torchvision MobileNetV2 (ImageNet weights); {len(calib)} calibration crops "
                      f"of scikit-image photos, {len(test)} evaluation crops of Debian's desktop "
                      "backgrounds (a disjoint source)")


def _efficientnet_lite0() -> BenchModel | None:
    """EfficientNet-Lite0 on the MobileNetV2 bench's crops, converted to its own input
    normalisation (TensorFlow's ``(pixel - 127) / 128``; ``models/efficientnet_lite0.py``)."""
    path = models_cache.cached_model("efficientnet_lite0.onnx")
    if path is None or models_cache.cached_model("imagenet_photos.npz") is None:
        return None
    base = _mobilenet()
    if base is None:
        return None

    def convert(x: np.ndarray) -> np.ndarray:
        pixels = (x * images.IMAGENET_STD.reshape(1, 3, 1, 1)
                  + images.IMAGENET_MEAN.reshape(1, 3, 1, 1)) * 255.0
        return ((pixels - 127.0) / 128.0).astype(np.float32)

    return BenchModel("efficientnet_lite0", path, convert(base.calib), convert(base.test), None,
                      "EfficientNet-Lite0 (ImageNet weights, converted from TensorFlow); the "
                      "crops of mobilenet_v2")


def resnet18_like(seed: int = 0, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18's layers (7x7 stem, max pool, 8 basic blocks of 3x3 convolutions 64-512 wide
    with 1x1 strided shortcuts, global average pool, classifier) for 224x224 images, with seeded
    He-initialized weights and the batch norms folded: a speed subject that needs no download
    (its outputs mean nothing). Residual branches are scaled down so activations stay bounded."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, gain: float = 1.0,
             relu: bool = True) -> str:
        name = f"conv{len(nodes)}"
        w = rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))
        b = rng.standard_normal(cout) * 0.05
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
                      numpy_helper.from_array(b.astype(np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.r"], name=f"{name}.relu"))
        return f"{name}.r"

    x = conv("image", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                         (512, 1)):
        h = conv(conv(x, cin, cout, 3, stride), cout, cout, 3, 1, gain=0.5, relu=False)
        short = x if stride == 1 and cin == cout else conv(x, cin, cout, 1, stride, relu=False)
        out = f"add{len(nodes)}"
        nodes.append(helper.make_node("Add", [h, short], [out]))
        nodes.append(helper.make_node("Relu", [out], [f"{out}.r"]))
        x, cin = f"{out}.r", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    w = rng.standard_normal((classes, 512)) * np.sqrt(1.0 / 512)
    inits.extend([numpy_helper.from_array(w.astype(np.float32), "fc.w"),
                  numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet18_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _resnet18_like() -> BenchModel | None:
    data = _npz("imagenet_photos.npz")
    if data is None:
        return None
    path = Path(tempfile.gettempdir()) / f"ortnpu_resnet18_like_{os.getpid()}.onnx"
    if not path.is_file():
        onnx.save(resnet18_like(), str(path))
    x = data["x"].astype(np.float32)
    half = len(x) // 2
    return BenchModel("resnet18_like", path, x[:half], x[half:], None,
                      "ResNet-18 layers with seeded weights (no download), ImageNet-size crops")


def _zoo_vit() -> BenchModel | None:
    path = models_cache.cached_model("zoo_vit.onnx")
    if path is None:
        return None
    rng = np.random.default_rng(0)  # the zoo's own inputs for this model are seeded normals
    x = rng.standard_normal((96, 3, 64, 64)).astype(np.float32)
    return BenchModel("zoo_vit", path, x[:64], x[64:], None,
                      "the zoo's ViT (4 layers, dim 192, patch 16 on 64x64; batch fixed to 1)")


def _zoo_vit_s() -> BenchModel | None:
    path = models_cache.cached_model("zoo_vit_s.onnx")
    data = _npz("imagenet_photos.npz")
    if path is None or data is None:
        return None
    x = data["x"].astype(np.float32)
    return BenchModel("zoo_vit_s", path, x[:32], x[32:], None,
                      "ViT-S/16 at 224x224 (12 layers, dim 384, 6 heads; seeded weights, "
                      "dynamic batch), ImageNet-size photo crops (32 calibrate)")


LOADERS: dict[str, Callable[[], BenchModel | None]] = {
    "digits_cnn": _digits,
    "fashion_mnist_cnn": _fashion("fashion_mnist_cnn.onnx", "3-conv CNN"),
    "fashion_resnet": _fashion("fashion_resnet.onnx", "ResNet-like net"),
    "mobilenet_v2": _mobilenet,
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet18_like": _resnet18_like,
    "zoo_vit": _zoo_vit,
    "zoo_vit_s": _zoo_vit_s,
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
