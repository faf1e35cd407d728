"""``ortnpu.from_torch``: a PyTorch module into the pipeline with fixed shapes, or a clear error.

Needs torch (skipped without it); the missing-torch error is tested in test_from_torch_missing.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ortnpu

torch = pytest.importorskip("torch")


class _TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, image: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.relu(self.bn(self.conv(image)))
        pooled = y.mean(dim=(2, 3))
        return self.fc(pooled) + bias, y


def _module() -> _TwoInputs:
    torch.manual_seed(0)
    m = _TwoInputs()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_export_is_fixed_shape_optimized_and_matches_torch() -> None:
    m = _module()
    m.train()                                   # from_torch must switch to eval mode
    image = torch.randn(2, 3, 6, 6)
    bias = np.arange(5, dtype=np.float32)       # numpy examples are accepted too
    model = ortnpu.from_torch(m, (image, bias), input_names=["image", "bias"],
                              output_names=["logits", "features"])
    assert [i.name for i in model.graph.input] == ["image", "bias"]
    assert [o.name for o in model.graph.output] == ["logits", "features"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 6, 6]                 # fixed, not dynamic
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops      # optimize folded it into the Conv
    assert not m.training
    with torch.no_grad():
        want = [t.numpy() for t in m(image, torch.from_numpy(bias))]
    got = _run(model, {"image": image.numpy(), "bias": bias})
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_raw_export_has_default_names_and_the_opset_asked() -> None:
    m = _module()
    model = ortnpu.from_torch(m, (torch.randn(1, 3, 4, 4), torch.zeros(5)), optimize=False,
                              opset=13)
    assert [i.name for i in model.graph.input] == ["input_0", "input_1"]
    assert [o.name for o in model.graph.output] == ["output_0", "output_1"]
    assert any(o.version == 13 for o in model.opset_import)


def test_result_goes_through_the_pipeline() -> None:
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 3))
    torch.manual_seed(1)
    model = ortnpu.from_torch(m, torch.randn(1, 1, 8, 8), input_names=["x"])
    calib = np.random.default_rng(0).standard_normal((8, 1, 1, 8, 8)).astype(np.float32)
    npu = ortnpu.quantize(model, "tflite-int8", [{"x": c} for c in calib])
    out = ortnpu.InferenceSession(npu).run(None, {"x": calib[0]})[0]
    assert out.shape == (1, 3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"output_names": ["a"]}, "1 output names given"),
    ({"input_names": ["x", "x"]}, "unique"),
    ({"opset": 9}, "opset 9 is outside"),
])
def test_bad_arguments_raise_model_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ortnpu.ModelError, match=match):
        ortnpu.from_torch(_module(), (torch.randn(1, 3, 4, 4), torch.zeros(5)), **kwargs)


def test_not_a_module_or_failing_forward_raise_model_error() -> None:
    with pytest.raises(ortnpu.ModelError, match="torch.nn.Module"):
        ortnpu.from_torch(lambda x: x, torch.zeros(1))
    with pytest.raises(ortnpu.ModelError, match="fails on the example inputs"):
        ortnpu.from_torch(_module(), torch.randn(1, 2, 4, 4))   # forward needs two inputs
    with pytest.raises(ortnpu.ModelError, match="at least one example input"):
        ortnpu.from_torch(_module(), ())
    with pytest.raises(ortnpu.ModelError, match="example input 0 is a str"):
        ortnpu.from_torch(_module(), ("image",))


def test_unexportable_module_raises_unsupported_error() -> None:
    class Sorts(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x).real            # no ONNX symbolic in the TorchScript exporter

    with pytest.raises(ortnpu.UnsupportedError, match="torch.onnx.export failed"):
        ortnpu.from_torch(Sorts(), torch.randn(1, 8))
