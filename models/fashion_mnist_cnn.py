"""Build ``fashion_mnist_cnn.onnx``: a 3-conv CNN with BatchNormalization on Fashion-MNIST.

A mid-sized real model for the cache: 28x28 inputs, 10k labelled test images, so quantization
accuracy can be measured on a task harder than digits. Needs Debian's ``dataset-fashion-mnist``.

Run: ``python models/fashion_mnist_cnn.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fashion


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    """One 3x3 Conv (no bias: BN supplies it) + BatchNormalization + Relu."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FashionCNN(_fashion.Classifier):
    """Three Conv-BN-Relu stages with MaxPool, then Flatten and two Gemm layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv_bn_relu(1, 32)
        self.pool1 = nn.MaxPool2d(2)  # 14x14
        self.conv2, self.bn2, self.relu2 = conv_bn_relu(32, 64)
        self.pool2 = nn.MaxPool2d(2)  # 7x7
        self.conv3, self.bn3, self.relu3 = conv_bn_relu(64, 64)
        self.pool3 = nn.MaxPool2d(2)  # 3x3
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 3 * 3, 128)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return class scores."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.pool3(self.relu3(self.bn3(self.conv3(x))))
        return self.fc2(self.relu4(self.fc1(self.flatten(x))))


def main(argv: list[str] | None = None) -> int:
    """Train for a fixed number of epochs (about 2 minutes on 2 cores) and export."""
    return _fashion.build(
        "fashion_mnist_cnn", FashionCNN, __doc__.splitlines()[0], epochs=3, lr=3e-3, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
