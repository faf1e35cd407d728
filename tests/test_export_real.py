"""Exported real models run on stock onnxruntime (ortnpu not loaded) with identical numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import ortnpu
from ortnpu import models_cache
from ortnpu.domain import DOMAIN

TARGETS = ["tflite-int8", "tflite-a16w8", "n2d2-int8"]

PLAIN_RUN = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
names = [o.name for o in s.get_outputs()]
outs = s.run(None, {s.get_inputs()[0].name: x})
assert "ortnpu" not in sys.modules
np.savez(sys.argv[3], **dict(zip(names, outs)))
"""


def _with_integer_outputs(npu: onnx.ModelProto) -> onnx.ModelProto:
    """The NPU graph with every integer tensor of an NPU node as an extra output."""
    probe = onnx.ModelProto()
    probe.CopyFrom(npu)
    ints = {n.output[0] for n in npu.graph.node if n.domain == DOMAIN}
    probe.graph.output.extend(v for v in npu.graph.value_info if v.name in ints)
    return probe


def check_export(model_path: Path, data: dict[str, np.ndarray], target: str,
                 tmp_path: Path) -> int:
    npu = _with_integer_outputs(ortnpu.quantize(onnx.load(str(model_path)), target,
                                                data["calib_x"][:128]))
    x = data["test_x"][:32]
    sess = ortnpu.InferenceSession(npu)
    sim = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {npu.graph.input[0].name: x}), strict=True))
    onnx.save(ortnpu.export(npu, style="integer"), str(tmp_path / "std.onnx"))
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", PLAIN_RUN, str(tmp_path / "std.onnx"),
                    str(tmp_path / "x.npy"), str(tmp_path / "out.npz")], check=True, timeout=300)
    with np.load(tmp_path / "out.npz") as std:
        for name, value in sim.items():
            assert std[name].dtype == value.dtype and np.array_equal(std[name], value), name
    return len(sim)


@pytest.mark.parametrize("target", TARGETS)
def test_bundled_model_exports_bit_exactly(target: str, tmp_path: Path) -> None:
    compared = check_export(models_cache.bundled_model_path(), models_cache.load_bundled_data(),
                            target, tmp_path)
    assert compared >= 10        # every layer's integer output, plus the float output


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fashion_mnist_cnn.onnx", "fashion_resnet.onnx"])
@pytest.mark.parametrize("target", TARGETS)
def test_cached_models_export_bit_exactly(model: str, target: str, tmp_path: Path) -> None:
    path = models_cache.cached_model(model)
    data_path = models_cache.cached_model("fashion_mnist_data.npz")
    if path is None or data_path is None:
        pytest.skip(f"{model} not built (python models/build_all.py)")
    with np.load(data_path) as f:
        data = {k: f[k] for k in f.files}
    check_export(path, data, target, tmp_path)
