import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_one_exact_program, init, model, ops, rand, run

import ortnpu
from ortnpu.passes.pad_modes import PadModesAsSlices


def _pad_model(shape: list, pads: list[int], mode: str, opset: int = 17) -> onnx.ModelProto:
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode=mode)
    out = [f"d{k}" for k in range(len(shape))]
    return model([pad], {"x": shape}, {"y": out}, [init("pads", np.array(pads, np.int64))],
                 opset=opset)


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize(("shape", "pads"), [
    ([1, 40], [0, 3, 0, 5]),                      # an STFT's frame padding, one side wider
    ([2, 3, 5, 6], [0, 0, 2, 1, 0, 0, 1, 2]),     # both spatial axes: corners
    ([1, 2, 4, 4], [0, 0, 3, 0, 0, 0, 0, 3]),     # the widest reflection (n - 1)
    (["N", 3, 7], [0, 1, 4, 0, 2, 0]),            # a free batch, a channel axis padded
])
def test_pad_modes_become_slices_and_concat(mode: str, shape: list, pads: list[int]) -> None:
    m = _pad_model(shape, pads, mode, opset=19 if mode == "wrap" else 17)
    result = PadModesAsSlices()(m)
    assert result.modified, result.changes
    assert set(ops(result.model)) == {"Slice", "Concat"}
    last = result.model.graph.node[-1]
    assert last.name == "pad" and list(last.output) == ["y"]
    assert "pads" not in {t.name for t in result.model.graph.initializer}
    for batch in (1, 3):
        x = rand(*[batch if d == "N" else d for d in shape])
        want = run(m, {"x": x})[0]
        got = run(result.model, {"x": x})[0]
        assert np.array_equal(got, want)   # values only move: exactly equal


@pytest.mark.parametrize(("mode", "shape", "pads", "opset"), [
    ("constant", [1, 8], [0, 2, 0, 2], 17),
    ("reflect", [1, 4], [0, 4, 0, 0], 17),        # wider than n - 1: no reflection
    ("wrap", [1, 4], [0, 0, 0, 5], 19),           # wider than the axis
    ("reflect", [1, 8], [0, -1, 0, 2], 17),       # a crop
    ("reflect", [1, 8], [0, 0, 0, 0], 17),        # nothing padded
    ("reflect", [1, 8], [0, 2, 0, 2], 11),        # pads as an input: rewritten from opset 11
])
def test_other_pads_are_kept(mode: str, shape: list, pads: list[int], opset: int) -> None:
    m = _pad_model(shape, pads, mode, opset)
    result = PadModesAsSlices()(m)
    assert result.modified == (opset == 11), result.changes


def _stft_front() -> onnx.ModelProto:
    """Silero VAD's STFT front end: reflect padding of the samples, then a 1-D Conv of 256
    taps at stride 128 (the windowed DFT bases), magnitude-like ReLU after."""
    rng = np.random.default_rng(9)   # its own weights: the shared RNG depends on test order
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x3"], name="unsqueeze"),
             helper.make_node("Pad", ["x3", "pads"], ["p"], name="padding", mode="reflect"),
             helper.make_node("Conv", ["p", "w"], ["c"], name="stft", strides=[128]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return model(nodes, {"x": [1, 640]}, {"y": [1, 18, 5]},
                 [init("axes", np.array([1], np.int64)),
                  init("pads", np.array([0, 0, 64, 0, 0, 64], np.int64)),
                  init("w", rng.normal(0, 0.05, (18, 1, 256)))])


def test_stft_front_end_runs_on_the_npu_exactly() -> None:
    """The reflect Pad (slices + Concat) and the 256-tap stride-128 Conv (space-to-depth by
    128 and a 2-tap Conv) were CPU nodes on tflite-int8; now the whole front end is one
    compiled program, equal to the numpy reference."""
    m = _stft_front()
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    notes = " ".join(report.estimate.notes)
    assert "PadModesAsSlices (1" in notes and "PatchifyConv (1" in notes, notes
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 640)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    # float only at the boundaries
    assert {n.op_type for n in npu.graph.node if n.domain == ""} <= {"QuantizeLinear",
                                                                    "DequantizeLinear"}
    assert_one_exact_program(m, npu, calib[:1])
