"""A CNN + bidirectional LSTM unrolled over time (torch LSTMCell loop, tied weights), exported
with a fixed batch of 1: the shape of the CRNN readers of issue 13. Skipped without torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import ortnpu

torch = pytest.importorskip("torch")


class _UnrolledCRNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d((4, 1))
        self.fw = torch.nn.LSTMCell(16, 16)
        self.bw = torch.nn.LSTMCell(16, 16)
        self.fc = torch.nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(torch.relu(self.conv(x)))
        b, c, h, w = y.shape
        seq = y.reshape(b, c * h, w).permute(2, 0, 1)     # [T, batch, C]: time first
        zeros = torch.zeros(b, 16)
        hf, cf, hb, cb = zeros, zeros, zeros, zeros
        outs_f, outs_b = [], []
        for t in range(w):
            hf, cf = self.fw(seq[t], (hf, cf))
            outs_f.append(hf)
        for t in reversed(range(w)):
            hb, cb = self.bw(seq[t], (hb, cb))
            outs_b.insert(0, hb)
        out = torch.cat([torch.stack(outs_f), torch.stack(outs_b)], -1)
        return self.fc(out).log_softmax(-1)


@pytest.fixture(scope="module")
def crnn(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(0)
    path = Path(tmp_path_factory.mktemp("crnn")) / "crnn.onnx"
    torch.onnx.export(_UnrolledCRNN().eval(), (torch.rand(1, 1, 8, 10),), str(path),
                      input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    return onnx.load(str(path))


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


@pytest.mark.slow
def test_unrolled_bilstm_quantizes_and_runs_exactly(crnn: onnx.ModelProto) -> None:
    """The compiled program's output was [T, 1, C] cut to [1, 1, C]: a Gather on the time
    axis then failed ('idx=1 must be within [-1,0]'); the time-step copies of the weights
    multiplied the model's size by the time steps."""
    optimized = ortnpu.optimize(crnn)
    assert _weight_bytes(optimized) < 1.2 * _weight_bytes(crnn)
    rng = np.random.default_rng(0)
    calib = rng.random((8, 1, 8, 10)).astype(np.float32)
    npu = ortnpu.quantize(crnn, "tflite-int8", calib)
    int8_weights = sum(numpy_helper.to_array(t).nbytes for t in npu.graph.initializer
                       if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2)
    assert int8_weights < 0.3 * _weight_bytes(crnn)    # one int8 copy of each weight
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False)
    sess = ortnpu.InferenceSession(npu)
    for k in range(3):
        x = calib[k:k + 1]
        want = ref.run(None, {"x": x})[0]
        assert want.shape == (10, 1, 6)
        assert np.array_equal(sess.run(None, {"x": x})[0], want)
