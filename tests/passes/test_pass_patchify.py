import numpy as np
import onnx
import pytest
from onnx import helper
from passes_helpers import assert_same, init, model, ops, rand, run

import ortnpu
from ortnpu.passes.patchify import PatchifyConv

SPACE_TO_DEPTH = ["Reshape", "Transpose", "Reshape", "Transpose", "Reshape"]


def _conv_model(kernel: tuple[int, int], stride: tuple[int, int], hw: tuple[int, int] = (8, 12),
                batch: int | str = "N", cin: int = 3, **attrs: object) -> onnx.ModelProto:
    w = rand(5, cin // int(attrs.get("group", 1)), *kernel)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="patch", strides=list(stride),
                            kernel_shape=list(kernel), **attrs)
    return model([conv], {"x": [batch, cin, *hw]}, {"y": [batch, 5, "h", "w"]},
                 [init("w", w), init("b", rand(5))])


@pytest.mark.parametrize(("kernel", "hw"), [((4, 4), (8, 12)), ((2, 4), (6, 8)),
                                            ((16, 16), (32, 16))])
def test_patch_convolution_becomes_space_to_depth_and_1x1(kernel: tuple, hw: tuple) -> None:
    m = _conv_model(kernel, kernel, hw)
    result = PatchifyConv(max_stride=1, max_kernel=16)(m)
    assert result.modified, result.changes
    assert ops(result.model) == [*SPACE_TO_DEPTH, "Conv"]
    conv = result.model.graph.node[-1]
    assert conv.name == "patch" and list(conv.output) == ["y"]
    # the old weights are gone, the new ones are the same values as [O, C*k*l, 1, 1]
    names = [t.name for t in result.model.graph.initializer]
    assert "w" not in names
    assert_same(m, result.model, tol=1e-5)
    # any batch: the reshapes copy the batch (0); float sums of up to 768 products in
    # another order (channels as SPACE_TO_DEPTH orders them) differ by float32 rounding
    x = rand(3, 3, *hw)
    np.testing.assert_allclose(run(m, {"x": x})[0], run(result.model, {"x": x})[0],
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("kernel", "stride", "hw", "attrs", "limits"), [
    ((4, 4), (4, 4), (8, 12), {}, (4, 16)),                    # within the target's limits
    ((3, 3), (2, 2), (8, 12), {}, (1, 16)),                    # kernel not whole strides
    ((4, 4), (2, 2), (8, 12), {}, (2, 16)),                    # within the target's limits
    ((8, 8), (2, 2), (8, 12), {}, (1, 3)),                     # 4x4 blocks: still too wide
    ((4, 4), (4, 4), (8, 12), {"pads": [1, 1, 1, 1]}, (1, 16)),   # padded
    ((4, 4), (4, 4), (8, 12), {"dilations": [2, 2]}, (1, 16)),    # dilated
    ((4, 4), (4, 4), (10, 12), {}, (1, 16)),                   # rows left over
])
def test_other_convolutions_are_kept(kernel: tuple, stride: tuple, hw: tuple, attrs: dict,
                                     limits: tuple) -> None:
    m = _conv_model(kernel, stride, hw, **attrs)
    assert not PatchifyConv(*limits)(m).modified


@pytest.mark.parametrize(("kernel", "stride", "hw"), [((4, 4), (2, 2), (8, 12)),
                                                      ((2, 6), (1, 3), (5, 12)),
                                                      ((1, 32), (1, 16), (1, 64))])
def test_kernel_of_whole_strides_becomes_space_to_depth_and_a_small_conv(
        kernel: tuple, stride: tuple, hw: tuple) -> None:
    """A kernel of m x n strides (an STFT front end: 256 taps at stride 128) is a stride-1
    m x n convolution over the input's s x t blocks, with the same products and sums."""
    m = _conv_model(kernel, stride, hw)
    result = PatchifyConv(max_stride=1, max_kernel=16)(m)
    assert result.modified, result.changes
    assert ops(result.model) == [*SPACE_TO_DEPTH, "Conv"]
    conv = result.model.graph.node[-1]
    blocks = [kernel[0] // stride[0], kernel[1] // stride[1]]
    assert conv.name == "patch" and list(conv.attribute[0].ints) == blocks
    assert "stride 1" in result.changes[0] or blocks == [1, 1]
    # the new weights, entry by entry: [o, (i, j, c), a, b] = w[o, c, a*s + i, b*t + j]
    w = next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "w")
    got = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer
               if t.name == conv.input[1])
    (sh, sw), c = stride, w.shape[1]
    for o, ci, a, b, i, j in [(0, 0, 0, 0, 0, 0), (4, c - 1, blocks[0] - 1, blocks[1] - 1,
                                                   sh - 1, sw - 1), (2, 1, 0, blocks[1] - 1,
                                                                     0, sw - 1)]:
        assert got[o, (i * sw + j) * c + ci, a, b] == w[o, ci, a * sh + i, b * sw + j]
    for batch in (1, 3):
        x = rand(batch, 3, *hw)
        np.testing.assert_allclose(run(m, {"x": x})[0], run(result.model, {"x": x})[0],
                                   rtol=1e-5, atol=1e-5)


def test_grouped_patch_convolution_is_kept() -> None:
    m = _conv_model((4, 4), (4, 4), cin=4, group=2)
    assert not PatchifyConv(1, 16)(m).modified


def _patch_embedding() -> onnx.ModelProto:
    """A ViT stem: 16x16 patches of a 64x64 image at stride 16, then ReLU."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="patch_embed",
                            strides=[16, 16], kernel_shape=[16, 16])
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    rng = np.random.default_rng(6)   # its own weights: the shared RNG depends on test order
    return model([conv, relu], {"x": [1, 3, 64, 64]}, {"y": [1, 8, 4, 4]},
                 [init("w", rng.normal(0, 0.05, (8, 3, 16, 16))), init("b", rng.normal(0, 1, 8))])


def test_patch_embedding_runs_on_the_npu_as_one_program() -> None:
    """tflite-int8 allows strides up to 8: the stride-16 stem ran as a float convolution on
    the CPU; evaluate and quantize now both place it on the NPU, as one compiled program."""
    m = _patch_embedding()
    report = ortnpu.evaluate(m, "tflite-int8")
    assert not report.plan.cpu_nodes, report.plan.reasons
    # the report says what was rewritten, and that quantize does the same
    assert any(n.startswith("rewritten into NPU forms by PatchifyConv (1, quantize does the "
                            "same): Conv 'patch_embed'") for n in report.estimate.notes), \
        report.estimate.notes
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 3, 64, 64)).astype(np.float32)
    npu = ortnpu.quantize(m, "tflite-int8", calib)
    assert not [n for n in npu.graph.node if n.op_type == "Conv" and n.domain == ""]
    sess = ortnpu.InferenceSession(npu)
    assert [r.native for r in sess.compile_reports] == [True]
    x = calib[:1]   # within the calibrated ranges: no clipping in the comparison with float
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    # and close to the float model: within a few output steps
    ref = run(m, {"x": x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
