"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, and the shared build steps.

Both Fashion-MNIST builders read the same idx files, preprocess the same way and share one data
file, so a CNN and a ResNet can be compared on identical calibration and test sets.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from pathlib import Path

import _common as common
import numpy as np
import torch
from torch import nn

FASHION_DIR = Path(os.environ.get("ORTNPU_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
DATA_NAME = "fashion_mnist_data.npz"
N_CALIB = 512
SEED = 0
DATASET = (
    "Fashion-MNIST (Zalando, MIT) from Debian dataset-fashion-mnist: official 60k train / 10k "
    "test split; pixels / 255 -> [0,1], float32 NCHW [N,1,28,28]; calib_x = 512 train images "
    "picked with numpy default_rng(0)"
)
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped idx file (the MNIST container: magic, dims, then raw uint8)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_fashion() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``x_train, y_train, x_test, y_test`` preprocessed as the models expect."""
    if not FASHION_DIR.is_dir():
        common.fail(
            f"{FASHION_DIR} not found: run `apt-get install -y dataset-fashion-mnist` "
            "(or set ORTNPU_FASHION_DIR to a folder with the four idx.gz files)"
        )

    def images(name: str) -> np.ndarray:
        arr = _read_idx(FASHION_DIR / name).astype(np.float32) / 255.0
        return np.ascontiguousarray(arr[:, None, :, :])

    def labels(name: str) -> np.ndarray:
        return _read_idx(FASHION_DIR / name).astype(np.int64)

    return (
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
    )


def write_data(path: Path, x_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> None:
    """Write the shared calibration/test file (both Fashion builders write identical bytes)."""
    pick = np.random.default_rng(SEED).choice(len(x_tr), size=N_CALIB, replace=False)
    np.savez_compressed(
        path,
        calib_x=np.ascontiguousarray(x_tr[np.sort(pick)]),
        test_x=x_te,
        test_y=y_te,
    )


def flip_augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror half of the batch left-right (clothes are roughly symmetric)."""
    flip = torch.rand(len(xb), generator=gen) < 0.5
    out = xb.clone()
    out[flip] = xb[flip].flip(-1)
    return out


class Classifier(nn.Module):
    """Base of the Fashion models: logits while training, Softmax appended in eval mode.

    The export then ends in ``probs`` like the demo model, while the loss sees the logits.
    """

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class scores; subclasses define the network here."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits while training, probabilities once in eval mode."""
        logits = self.logits(x)
        return logits if self.training else torch.softmax(logits, dim=1)


def build(
    name: str,
    make_model: Callable[[], Classifier],
    description: str,
    *,
    epochs: int,
    lr: float,
    argv: list[str] | None,
) -> int:
    """Train ``make_model()`` on Fashion-MNIST, export ``<name>.onnx`` and the shared data file.

    The model is built only after seeding, so its initial weights are repeatable.
    """
    args = common.parse_args(description, argv)
    out = common.output_dir(args)
    onnx_path = out / f"{name}.onnx"
    data_path = out / DATA_NAME
    if common.up_to_date([onnx_path, data_path], args.force):
        return 0

    threads = common.env_threads()
    common.seed_everything(SEED, threads=threads)
    x_tr, y_tr, x_te, y_te = load_fashion()
    model = make_model()
    print(f"fashion-mnist: {len(x_tr)} train / {len(x_te)} test; training on {threads} threads")
    start = time.monotonic()
    done = common.train_classifier(
        model, x_tr, y_tr, epochs=epochs, batch_size=128, lr=lr, augment=flip_augment, seed=SEED
    )
    print(f"trained {done} epochs in {time.monotonic() - start:.0f} s")
    torch_acc = common.accuracy(common.torch_predict(model, x_te), y_te)

    proto = common.export_onnx(
        model,
        torch.from_numpy(x_te[:1]),
        onnx_path,
        input_name="image",
        output_names=["probs"],
        dynamic_batch=True,
    )
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    common.rename_values(proto, {gemms[-1].output[0]: "logits"})
    common.save_checked(proto, onnx_path)
    ort_acc = common.accuracy(common.onnx_predict(onnx_path, x_te), y_te)
    print(f"test accuracy: torch {common.format_accuracy(torch_acc)}")
    print(f"test accuracy: onnxruntime {common.format_accuracy(ort_acc)}")
    if abs(torch_acc - ort_acc) > 1e-3:
        common.fail("onnxruntime and torch disagree on the test set")
    common.set_metadata(
        proto,
        {"ortnpu.float_accuracy": common.format_accuracy(ort_acc), "ortnpu.dataset": DATASET},
    )
    common.save_checked(proto, onnx_path)
    write_data(data_path, x_tr, x_te, y_te)
    print(f"ops: {common.op_counts(proto)}")
    for path in (onnx_path, data_path):
        print(f"wrote {path}  ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
