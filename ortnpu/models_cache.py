"""Where the demo model ships and where the real models are built.

The bundled digits CNN and its data travel inside the package so that the demo, the tests and CI
always have a real trained network with real data, with no download. The larger real models
(Fashion-MNIST, MobileNetV2, PP-OCR) are built by the scripts in ``models/`` from locally
installable packages into a cache outside the repository; tests and benchmarks find them here and
skip when they are absent. This module imports nothing heavier than numpy.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

CACHE_ENV_VAR = "ORTNPU_MODEL_CACHE"
"""Environment variable that overrides the cache folder (CI, read-only home directories)."""

BUNDLED_MODEL = "digits_cnn.onnx"
BUNDLED_DATA = "digits_data.npz"


def cache_dir() -> Path:
    """Return the folder the ``models/`` scripts build into.

    Returns:
        ``$ORTNPU_MODEL_CACHE`` if set and non-empty, else ``~/.cache/ortnpu/models``. The
        folder may not exist yet: builders create it, readers only look.
    """
    override = os.environ.get(CACHE_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "ortnpu" / "models"


def cached_model(name: str) -> Path | None:
    """Find a built file in the cache, so callers can skip cleanly when it was never built.

    Args:
        name: File name inside the cache, e.g. ``"mobilenet_v2.onnx"`` or
            ``"fashion_mnist_data.npz"``.

    Returns:
        The path if the file exists, else ``None``.
    """
    path = cache_dir() / name
    return path if path.is_file() else None


def _bundled(name: str) -> Path:
    """Locate a file of ``ortnpu/data`` whether ortnpu runs from a checkout or a wheel."""
    resource = resources.files("ortnpu").joinpath("data").joinpath(name)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled file {name!r} is missing from ortnpu/data; reinstall ortnpu or rebuild it "
            "with `python models/digits_cnn.py`"
        )
    return path


def bundled_model_path() -> Path:
    """Return the path of the bundled float digits CNN (the demo and CI model)."""
    return _bundled(BUNDLED_MODEL)


def load_bundled_data() -> dict[str, np.ndarray]:
    """Load the digits calibration and held-out test sets that belong to the bundled model.

    Returns:
        ``calib_x`` (float32 ``[256, 1, 8, 8]``, from the training split), ``test_x`` (float32
        ``[N, 1, 8, 8]``, the held-out split) and ``test_y`` (int64 ``[N]``), all preprocessed
        exactly as the model expects, so they can be fed to it as they are.
    """
    with np.load(_bundled(BUNDLED_DATA)) as npz:
        return {key: npz[key] for key in npz.files}


__all__ = [
    "BUNDLED_DATA",
    "BUNDLED_MODEL",
    "CACHE_ENV_VAR",
    "bundled_model_path",
    "cache_dir",
    "cached_model",
    "load_bundled_data",
]
