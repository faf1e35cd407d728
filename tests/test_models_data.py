"""The bundled demo model and data are what the demo, the docs and CI rely on.

Fast tests check the committed digits CNN and its data (no torch needed); tests marked ``slow``
check the real models that ``models/*.py`` build into the cache, and skip when they are absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ortnpu import models_cache

DEMO_OPS = {
    "Conv",
    "BatchNormalization",
    "Relu",
    "MaxPool",
    "Add",
    "GlobalAveragePool",
    "Flatten",
    "Gemm",
    "Softmax",
}


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    """The bundled float model, loaded once."""
    return onnx.load(str(models_cache.bundled_model_path()))


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """The bundled calibration and test data, loaded once."""
    return models_cache.load_bundled_data()


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _run(path: Path, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    step = batch or len(x)
    return np.concatenate(
        [sess.run(None, {name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    )


def test_bundled_model_passes_full_checker() -> None:
    onnx.checker.check_model(str(models_cache.bundled_model_path()), full_check=True)


def test_bundled_model_has_the_demo_ops(model: onnx.ModelProto) -> None:
    counts = Counter(n.op_type for n in model.graph.node)
    assert set(counts) == DEMO_OPS
    assert counts["BatchNormalization"] == 4
    assert counts["Conv"] == 4
    depthwise = [
        n
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i == 32 for a in n.attribute)
    ]
    assert len(depthwise) == 1
    names = [n.name for n in model.graph.node]
    assert all(name and "/" not in name for name in names)
    assert {"conv1", "bn1", "relu1", "dwconv", "pwconv", "fc", "softmax"} <= set(names)
    assert len(set(names)) == len(names)


def test_bundled_model_interface(model: onnx.ModelProto) -> None:
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    (inp,) = model.graph.input
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert [o.name for o in model.graph.output] == ["probs"]
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert gemm.output[0] == "logits"
    meta = _metadata(model)
    assert "ortnpu.dataset" in meta
    assert 0.97 <= float(meta["ortnpu.float_accuracy"]) <= 1.0


def test_bundled_data_shapes_and_types(data: dict[str, np.ndarray]) -> None:
    assert set(data) == {"calib_x", "test_x", "test_y"}
    calib, test_x, test_y = data["calib_x"], data["test_x"], data["test_y"]
    assert calib.dtype == np.float32 and calib.shape == (256, 1, 8, 8)
    assert test_x.dtype == np.float32 and test_x.shape[1:] == (1, 8, 8)
    assert test_y.dtype == np.int64 and test_y.shape == (len(test_x),)
    assert len(test_x) == 540
    for x in (calib, test_x):
        assert x.min() >= 0.0 and x.max() <= 1.0
        # digits are 0..16 divided by 16: every pixel is a multiple of 1/16
        assert np.array_equal(x * 16, np.round(x * 16))
    assert set(np.unique(test_y)) == set(range(10))


def test_calibration_and_test_sets_do_not_overlap(data: dict[str, np.ndarray]) -> None:
    calib_rows = {row.tobytes() for row in data["calib_x"].reshape(len(data["calib_x"]), -1)}
    test_rows = {row.tobytes() for row in data["test_x"].reshape(len(data["test_x"]), -1)}
    assert len(calib_rows) == len(data["calib_x"])
    assert not calib_rows & test_rows


def test_bundled_model_accuracy_matches_metadata(
    model: onnx.ModelProto, data: dict[str, np.ndarray]
) -> None:
    probs = _run(models_cache.bundled_model_path(), data["test_x"], batch=100)
    assert probs.shape == (len(data["test_x"]), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    acc = float(np.mean(np.argmax(probs, axis=1) == data["test_y"]))
    assert f"{acc:.6f}" == _metadata(model)["ortnpu.float_accuracy"]
    assert acc >= 0.97


def test_cache_dir_honours_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models_cache.CACHE_ENV_VAR, str(tmp_path))
    assert models_cache.cache_dir() == tmp_path
    assert models_cache.cached_model("nothing_here.onnx") is None
    (tmp_path / "built.onnx").write_bytes(b"x")
    assert models_cache.cached_model("built.onnx") == tmp_path / "built.onnx"
    monkeypatch.delenv(models_cache.CACHE_ENV_VAR)
    assert models_cache.cache_dir() == Path.home() / ".cache" / "ortnpu" / "models"


# ---- real models built into the cache by models/*.py (slow, skipped when absent) ----


def _cached(name: str) -> Path:
    path = models_cache.cached_model(name)
    if path is None:
        pytest.skip(f"{name} not in {models_cache.cache_dir()}: run `python models/build_all.py`")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fashion_mnist_cnn.onnx", "fashion_resnet.onnx"])
def test_fashion_model_accuracy_matches_metadata(name: str) -> None:
    path = _cached(name)
    data_path = _cached("fashion_mnist_data.npz")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    with np.load(data_path) as npz:
        assert npz["calib_x"].shape == (512, 1, 28, 28)
        assert npz["test_x"].shape == (10000, 1, 28, 28)
        x, y = npz["test_x"], npz["test_y"]
    acc = float(np.mean(np.argmax(_run(path, x, batch=1000), axis=1) == y))
    assert f"{acc:.6f}" == _metadata(proto)["ortnpu.float_accuracy"]
    assert acc >= 0.85


@pytest.mark.slow
def test_mobilenet_v2_recognises_the_cat() -> None:
    path = _cached("mobilenet_v2.onnx")
    photos = _cached("imagenet_photos.npz")
    with np.load(photos) as npz:
        x = npz["x"]
        names = [str(n) for n in npz["names"]]
    assert x.shape[1:] == (3, 224, 224) and len(x) >= 64 and x.dtype == np.float32
    cat_rows = [i for i, n in enumerate(names) if n.startswith("chelsea")]
    top1 = np.argmax(_run(path, x[cat_rows], batch=1), axis=1)
    # ImageNet classes 281-285 are domestic cats; the tabby is an easy photo
    assert np.mean((top1 >= 281) & (top1 <= 285)) >= 0.5


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ],
)
def test_ppocr_models_load(name: str) -> None:
    path = _cached(name)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs() and sess.get_outputs()
