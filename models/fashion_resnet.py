"""Build ``fashion_resnet.onnx``: a small ResNet (basic blocks, BN, strided downsampling).

Residual Adds whose two inputs come from different scales, 1x1 strided projection shortcuts and
GlobalAveragePool: the patterns a quantizer must get right for real ResNets, at Fashion-MNIST
size. Shares ``fashion_mnist_data.npz`` with ``fashion_mnist_cnn.py``.

Run: ``python models/fashion_resnet.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fashion


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN with a Relu between, plus a shortcut; Relu after the Add.

    With ``stride=2`` or a channel change the shortcut is a 1x1 strided Conv + BN (the ResNet
    "projection" shortcut), otherwise the identity.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.down_conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.down_bn = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual basic block."""
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = self.down_bn(self.down_conv(x)) if self.project else x
        return self.relu2(y + shortcut)


class FashionResNet(_fashion.Classifier):
    """Stem (28x28x16), then four basic blocks: 14x14x32 (strided), 14x14x32, 7x7x64 (strided),
    7x7x64, then GlobalAveragePool and one Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.stem_relu = nn.ReLU()
        self.block1 = BasicBlock(16, 32, stride=2)
        self.block2 = BasicBlock(32, 32)
        self.block3 = BasicBlock(32, 64, stride=2)
        self.block4 = BasicBlock(64, 64)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return class scores."""
        x = self.stem_relu(self.stem_bn(self.stem_conv(x)))
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.flatten(self.gap(x)))


def main(argv: list[str] | None = None) -> int:
    """Train for a fixed number of epochs (a few minutes on 2 cores) and export."""
    return _fashion.build(
        "fashion_resnet", FashionResNet, __doc__.splitlines()[0], epochs=3, lr=3e-3, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
