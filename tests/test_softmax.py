"""Softmax (TFLite's integer SOFTMAX): C kernel against the numpy reference, the parameters
TFLite's Prepare computes, and the placement reasons of the lowering.

LiteRT itself is the oracle in tests/oracle/test_litert_oracle_softmax.py; here the C kernel
is held to the reference on the edges the fixed-point algorithm has.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ortnpu
from ortnpu.domain import Softmax, native
from ortnpu.domain.ops_softmax import MAX_DEPTH, softmax_params
from ortnpu.errors import KernelError

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="C kernels not built")


def _rows(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    x = rng.integers(int(info.min), int(info.max), size=shape, endpoint=True)
    x.reshape(-1, shape[-1])[::3] = info.max               # rows all at their maximum
    x.reshape(-1, shape[-1])[1::4, ::2] = info.min         # the extremes in one row
    return x.astype(dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_c_kernel_equals_the_reference(dtype: str, threads: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    native.set_threads(threads)
    monkeypatch.setattr(native, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(7)
    longest = MAX_DEPTH[np.dtype(dtype).itemsize]
    try:
        for depth in (1, 2, 7, 33, 255, 511, min(longest, 2000)):
            for scale in (1e-5, 0.003, 0.05, 0.7, 4.0):
                params = softmax_params(scale, np.dtype(dtype))
                if isinstance(params, str):
                    continue
                x = _rows(rng, dtype, (3, 5, depth))
                full = Softmax.full_attrs(params)
                ref = Softmax.run_reference([x], params, dtype)
                got = native.KERNELS["Softmax"]([x], full, np.dtype(dtype))
                assert np.array_equal(got, ref), (dtype, depth, scale)
    finally:
        native.set_threads(None)


def test_reference_rounds_like_tflite_on_known_values() -> None:
    """One row by hand: equal logits share 256 (int8: 1/256 steps from -128), the largest of
    two logits one step apart on scale 1 gets exp(1)/(1+exp(1)) = 0.731 → -128 + 187."""
    p = softmax_params(1.0, np.dtype("int8"))
    y = Softmax.run_reference([np.array([[5, 5, 5, 5], [1, 0, -128, -128]], np.int8)], p)
    assert y[0].tolist() == [-64] * 4
    assert y[1, 0] == -128 + 187 and y[1, 2] == -128


def test_parameters_follow_tflite_prepare() -> None:
    p = softmax_params(0.1, np.dtype("int8"))
    assert p["shift"] >= 0 and p["diff_min"] < 0 and p["multiplier"] >= 1 << 30
    # capped at 2^31 - 1: only differences of 0 count
    assert softmax_params(100.0, np.dtype("int8"))["diff_min"] == 0
    assert "below 2^-26" in softmax_params(1e-9, np.dtype("int8"))
    assert softmax_params(0.001, np.dtype("int16"))["diff_min"] == 0


def test_bad_arguments_are_kernel_errors() -> None:
    p = softmax_params(0.1, np.dtype("int8"))
    with pytest.raises(KernelError, match="511"):
        Softmax.run_reference([np.zeros((1, 512), np.int8)], p)
    with pytest.raises(KernelError, match="left shift"):
        Softmax.run_reference([np.zeros((1, 4), np.int8)], {**p, "shift": -1})
    with pytest.raises(KernelError, match="int32"):
        Softmax.run_reference([np.zeros((1, 4), np.int8)], {**p, "diff_min": -(1 << 30)})


def _model(shape: list, axis: int, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=axis)],
                          "sm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("shape", "axis", "opset", "target", "reason"), [
    # opset 11: a Softmax over every axis from 1 on (opset 13 ones move to the last axis)
    ([1, 4, 6], 1, 11, "tflite-int8", "normalizes axis 1 of a rank-3 input"),
    ([1, 600], -1, 17, "tflite-int8", "rows of 600 values"),
    ([1, 6], -1, 17, "n2d2-int8", "integer softmax is TFLite's"),
    ([1, "n"], -1, 17, "tflite-int8", "not known before run time"),
])
def test_reasons_of_a_softmax_left_on_the_cpu(shape: list, axis: int, opset: int, target: str,
                                              reason: str) -> None:
    model = _model(shape, axis, opset)
    plan = ortnpu.evaluate(model, target).plan
    assert plan.placement["sm"] == "CPU" and reason in plan.reasons["sm"], plan.reasons["sm"]
    assert "op_types" not in plan.reasons["sm"]   # no target advice: the target is not why


@pytest.mark.parametrize(("shape", "axis", "opset", "target", "force"), [
    ([2, 160], -1, 17, "tflite-a16w8", False),   # int16 rows up to 165 run by default
    ([2, 600], -1, 17, "tflite-a16w8", True),    # longer ones (test_wide_softmax.py) if forced
    ([2, 10], 1, 11, "tflite-int8", False),      # opset 11: axis 1 of a rank-2 input is the last
    ([2, 4, 6], 1, 17, "tflite-int8", False),    # an inner axis: moved last between Transposes
])
def test_softmax_runs_on_the_npu_and_equals_the_reference(shape: list, axis: int, opset: int,
                                                          target: str, force: bool) -> None:
    from ortnpu.quant.quantizer import QuantConfig

    model = _model(shape, axis, opset)
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((8, *shape[1:])) * 3).astype(np.float32)
    npu = ortnpu.quantize(model, target, data,
                          config=QuantConfig(force_npu=frozenset({"sm"} if force else ())))
    assert any(n.op_type.startswith("Softmax_") for n in npu.graph.node)
    # within the calibrated range: a clipped input moves a short row's probabilities a lot
    x = np.clip(rng.standard_normal(shape) * 3, data.min(), data.max()).astype(np.float32)
    fast = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(fast, ref)
    over = axis if opset >= 13 else -1   # opset 11 cases: axis 1 of rank 2 is the last
    e = np.exp(x - x.max(axis=over, keepdims=True))
    assert np.abs(fast - e / e.sum(axis=over, keepdims=True)).max() < 0.02
