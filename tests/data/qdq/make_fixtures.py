"""Make the PyTorch QAT fixture of tests/test_qdq_import.py (run with a venv that has torch).

    python -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.13.0 onnx
    /tmp/venv-torch/bin/python tests/data/qdq/make_fixtures.py

The network is tiny and its weights are synthetic (fixed seed): what matters is the structure
PyTorch's exporter writes. It is quantization-aware trained for a few steps on random inputs
with eager-mode QAT (FakeQuantize modules: quint8 activations in [0, 255], per-channel
symmetric qint8 weights in [-128, 127]), then exported with the
TorchScript ONNX exporter, which writes every FakeQuantize as a QuantizeLinear/DequantizeLinear
pair, weights included (float weights quantized inside the graph). torch 2.13 no longer ships
PT2E (``torch.ao.quantization.quantize_pt2e`` moved to torchao), so only eager QAT is covered.
torch is never a dependency of ortnpu: the .onnx file is committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class Net(nn.Module):
    """Conv+ReLU, MaxPool, Conv+ReLU, Flatten, Linear: the shape of the digits CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        x = self.fc(torch.flatten(x, 1))
        return self.dequant(x)


def main() -> None:
    torch.manual_seed(0)
    net = Net().train()
    q = torch.ao.quantization
    # The plain FakeQuantize modules (the fused x86 ones do not export to ONNX).
    net.qconfig = q.QConfig(activation=q.default_fake_quant,
                            weight=q.default_per_channel_weight_fake_quant)
    torch.ao.quantization.fuse_modules_qat(net, [["conv1", "relu1"], ["conv2", "relu2"]],
                                           inplace=True)
    torch.ao.quantization.prepare_qat(net, inplace=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = torch.from_numpy(rng.random((16, 1, 8, 8), dtype=np.float32))
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.apply(torch.ao.quantization.disable_observer)
    net.eval()
    x = torch.from_numpy(rng.random((1, 1, 8, 8), dtype=np.float32))
    torch.onnx.export(net, (x,), str(HERE / "torch_qat_cnn.onnx"), input_names=["x"],
                      output_names=["logits"], opset_version=13, dynamo=False)
    with torch.no_grad():
        probe = torch.from_numpy(rng.random((4, 1, 8, 8), dtype=np.float32))
        np.savez(HERE / "torch_qat_cnn_io.npz", x=probe.numpy(), torch_out=net(probe).numpy())
    print("wrote", HERE / "torch_qat_cnn.onnx")


if __name__ == "__main__":
    main()
