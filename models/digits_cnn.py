"""Train and export the bundled demo model: a small CNN on scikit-learn's 8x8 digits.

The network is tiny but exercises every op family the demo shows an NPU running: Conv with
BatchNormalization and Relu, MaxPool, a depthwise-separable residual block with Add,
GlobalAveragePool, Flatten, Gemm and Softmax. It writes ``ortnpu/data/digits_cnn.onnx`` and
``ortnpu/data/digits_data.npz`` (these are committed) and prints the torch and onnxruntime
accuracies on the held-out split, which must agree.

Run: ``python models/digits_cnn.py`` (about 20 s on 2 cores; see ``models/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

SEED = 0
TEST_FRACTION = 0.3
N_CALIB = 256
DATA_DIR = common.REPO_ROOT / "ortnpu" / "data"
DATASET = (
    "scikit-learn load_digits (UCI optdigits test set, 1797 images 8x8, 10 classes); "
    "train_test_split(test_size=0.3, stratify=y, random_state=0) -> 1257 train / 540 test; "
    "pixels / 16 -> [0,1], float32 NCHW [N,1,8,8]; calib_x = first 256 train images after a "
    "permutation with numpy default_rng(0)"
)


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2, MaxPool, a depthwise-separable residual block, GAP, Gemm, Softmax.

    Module names become ONNX node names, so they are the names the demo prints.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.dwconv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.dwbn = nn.BatchNorm2d(32)
        self.dwrelu = nn.ReLU()
        self.pwconv = nn.Conv2d(32, 32, 1, bias=False)
        self.pwbn = nn.BatchNorm2d(32)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class scores before Softmax (what training optimises)."""
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.pool(x)
        y = self.dwrelu(self.dwbn(self.dwconv(x)))
        y = self.pwbn(self.pwconv(y))
        x = self.relu3(x + y)
        return self.fc(self.flatten(self.gap(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in training mode (for the loss), probabilities in eval mode (as exported)."""
        logits = self.logits(x)
        return logits if self.training else torch.softmax(logits, dim=1)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the fixed stratified split, preprocessed as the model expects."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SEED
    )
    return x_tr, x_te, y_tr, y_te


def shift_augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel; it makes the tiny set go further."""
    padded = nn.functional.pad(xb, (1, 1, 1, 1))
    out = torch.empty_like(xb)
    offsets = torch.randint(0, 3, (len(xb), 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 8, dx : dx + 8]
    return out


def main(argv: list[str] | None = None) -> int:
    """Train, export, check and write the bundled model and data."""
    args = common.parse_args(__doc__.splitlines()[0], argv)
    out = args.out or DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "digits_cnn.onnx"
    data_path = out / "digits_data.npz"
    if common.up_to_date([onnx_path, data_path], args.force):
        return 0

    common.seed_everything(SEED, threads=1)
    x_tr, x_te, y_tr, y_te = load_split()
    print(f"digits: {len(x_tr)} train / {len(x_te)} held-out test")

    model = DigitsCNN()
    common.train_classifier(
        model, x_tr, y_tr, epochs=60, batch_size=32, lr=1e-2, augment=shift_augment, seed=SEED
    )
    torch_acc = common.accuracy(common.torch_predict(model, x_te), y_te)

    proto = common.export_onnx(
        model,
        torch.from_numpy(x_te[:1]),
        onnx_path,
        input_name="image",
        output_names=["probs"],
        dynamic_batch=True,
    )
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    common.rename_values(proto, {gemm.output[0]: "logits"})
    common.save_checked(proto, onnx_path)
    ort_acc = common.accuracy(common.onnx_predict(onnx_path, x_te), y_te)

    print(f"held-out accuracy: torch {common.format_accuracy(torch_acc)}")
    print(f"held-out accuracy: onnxruntime {common.format_accuracy(ort_acc)}")
    if common.format_accuracy(torch_acc) != common.format_accuracy(ort_acc):
        common.fail("onnxruntime and torch disagree on the held-out split")
    common.set_metadata(
        proto,
        {"ortnpu.float_accuracy": common.format_accuracy(ort_acc), "ortnpu.dataset": DATASET},
    )
    proto.doc_string = "ortnpu demo model: small CNN on scikit-learn digits (see metadata_props)"
    common.save_checked(proto, onnx_path)

    perm = np.random.default_rng(SEED).permutation(len(x_tr))
    calib_x = np.ascontiguousarray(x_tr[perm[:N_CALIB]], dtype=np.float32)
    np.savez_compressed(
        data_path,
        calib_x=calib_x,
        test_x=np.ascontiguousarray(x_te, dtype=np.float32),
        test_y=y_te.astype(np.int64),
    )
    print(f"ops: {common.op_counts(proto)}")
    for path in (onnx_path, data_path):
        print(f"wrote {path}  ({path.stat().st_size / 1e3:.1f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
