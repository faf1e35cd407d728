"""Many samples through a fixed-batch model: run, compare and autofix share one rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper

import ortnpu
from ortnpu.cli import main
from ortnpu.errors import ModelError
from ortnpu.feeds import InputSpec, fixed_batch, run_samples, sample_batches


@pytest.fixture(scope="module")
def batch1() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    model = small_cnn(batch=1)
    return model, ortnpu.quantize(model, "tflite-int8", images(16))


def _spec(name: str, *shape: int | str | None) -> InputSpec:
    return InputSpec(name, TensorProto.FLOAT, shape)


def test_fixed_batch() -> None:
    def fixed(*specs: InputSpec, n: int = 8) -> int | None:
        arrays = {s.name: np.zeros([n if d == 1 or d == 4 else 3 for d in s.shape], np.float32)
                  for s in specs}
        return fixed_batch(specs, arrays)

    assert fixed(_spec("x", 1, 3)) == 1 and fixed(_spec("x", 4, 3), _spec("y", 4)) == 4
    assert fixed(_spec("x", "N", 3)) is None and fixed(_spec("x", None, 3)) is None
    assert fixed(_spec("x", 1, 3), n=1) is None   # exactly one batch: run as given
    # the batch axis of a recurrent state [2, 1, 64] is its axis of size 1, not the first
    h0 = _spec("h0", 2, 1, 5)
    assert fixed_batch([h0], {"h0": np.zeros((2, 6, 5), np.float32)}) == 1
    assert fixed_batch([], {}) is None


def test_sample_batches() -> None:
    x = np.arange(7)
    specs = [InputSpec("x", 0, None)]
    assert [b["x"].tolist() for _, b in sample_batches(specs, {"x": x}, batch=3)] == [
        [0, 1, 2], [3, 4, 5], [6]]
    assert [b["x"].tolist() for _, b in sample_batches(specs, {"x": x}, batch=3, whole=True)] == [
        [0, 1, 2], [3, 4, 5]]


def test_run_cli_loops_a_batch1_model_over_the_samples(
        batch1: tuple[onnx.ModelProto, onnx.ModelProto], tmp_path: Path) -> None:
    _, npu = batch1
    onnx.save(npu, tmp_path / "npu.onnx")
    x = images(7, seed=3)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(tmp_path / "npu.onnx"), "--inputs", str(tmp_path / "in.npz"), "-o",
                 str(tmp_path / "out.npz")]) == 0
    got = np.load(tmp_path / "out.npz")["probs"]
    sess = ortnpu.InferenceSession(npu)
    one_by_one = np.concatenate([sess.run(None, {"x": x[k:k + 1]})[0] for k in range(7)])
    assert got.shape == (7, 5)
    np.testing.assert_array_equal(got, one_by_one)   # bit for bit


def test_compare_loops_the_same_way(batch1: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    report = ortnpu.compare(*batch1, images(5, seed=3), progress=False)
    assert report.samples == 5


def test_samples_not_a_multiple_of_the_batch(tmp_path: Path, capsys) -> None:
    model = small_cnn(batch=2)
    onnx.save(model, tmp_path / "b2.onnx")
    np.savez(tmp_path / "in.npz", x=images(5))
    assert main(["run", str(tmp_path / "b2.onnx"), "--inputs", str(tmp_path / "in.npz")]) == 2
    err = capsys.readouterr().err
    assert "5 samples is not a multiple of 2" in err and len(err.strip().splitlines()) == 1


def test_outputs_that_are_not_per_sample_cannot_be_joined() -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "total",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ortnpu.InferenceSession(model)
    with pytest.raises(ModelError, match="not one row per sample"):
        run_samples(sess, {"x": np.ones((4, 3), np.float32)})
    assert run_samples(sess, {"x": np.ones((1, 3), np.float32)})[0] == 3.0


def test_a_dynamic_batch_vit_runs_on_the_npu_at_any_batch() -> None:
    """The tiny ViT exported with a dynamic batch (reshape targets from Shape, the class token
    expanded to the batch): evaluate and quantize put every node on the NPU, the NPU graph
    keeps its free batch, and a batch of 4 gives what the 4 samples give one at a time."""
    path = Path(__file__).resolve().parent / "data" / "zoo" / "zoo_vit_dyn_tiny.onnx"
    model = ortnpu.optimize(onnx.load(str(path)))
    report = ortnpu.evaluate(model, "tflite-int8")
    assert report.plan.cpu_nodes == [], report.plan.cpu_nodes
    rng = np.random.default_rng(0)
    calib = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
             for _ in range(4)]
    npu = ortnpu.quantize(model, "tflite-int8", calib)
    assert not [n.name for n in npu.graph.node if n.doc_string.startswith("CPU:")]
    dim0 = npu.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim0.dim_value, "the NPU graph fixed the batch"
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    sess = ortnpu.InferenceSession(npu)
    whole = sess.run(None, {"image": x})
    for k, out in enumerate(whole):
        one = np.concatenate([sess.run(None, {"image": x[i:i + 1]})[k] for i in range(4)])
        assert out.shape[0] == 4 and np.array_equal(out, one)


def test_a_placement_that_misses_a_node_is_a_clear_error(monkeypatch) -> None:
    """Placement reads a dynamic batch as 1; if a rewrite ever gave that copy other nodes than
    quantize's free-batch graph, quantize says so instead of failing on a missing key."""
    from ortnpu.quant import quantizer

    real = quantizer.place

    def dropping(model, *args, **kwargs):
        plan = real(model, *args, **kwargs)
        plan.placement.pop(next(iter(plan.placement)))
        return plan

    monkeypatch.setattr(quantizer, "place", dropping)
    model = small_cnn(batch=1)
    with pytest.raises(ModelError, match="--input-shape"):
        ortnpu.quantize(model, "tflite-int8", images(4))
