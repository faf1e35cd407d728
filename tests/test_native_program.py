"""Compiled subgraphs: onnxruntime runs each fused NPU subgraph in C, with the same numbers."""

from __future__ import annotations

import gc
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import (
    DOMAIN,
    Concat,
    Conv,
    MatMul,
    Pad,
    Reshape,
    Slice,
    Transpose,
    kernels,
    make_node,
    native,
)
from ortnpu.runtime.fusion import fuse_subgraphs
from ortnpu.runtime.native_program import (
    NATIVE_DOMAIN,
    compile_program,
    compile_subgraphs,
    library_path,
)

pytestmark = [pytest.mark.usefixtures("require_c"),  # fails when C is expected but missing
              pytest.mark.skipif(kernels.get_mode() == "numpy",
                                 reason="C kernels not in use (ORTNPU_KERNELS=numpy)")]


def _sessions(npu: onnx.ModelProto) -> dict[str, ortnpu.InferenceSession]:
    return {"native": ortnpu.InferenceSession(npu),
            "python": ortnpu.InferenceSession(npu, native=False),
            "per-layer": ortnpu.InferenceSession(npu, fuse=False)}


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_compiled_subgraph_equals_python_and_per_layer_runs(target: str) -> None:
    npu = ortnpu.quantize(small_cnn(), target, images(32))
    sessions = _sessions(npu)
    reports = sessions["native"].compile_reports
    assert reports and all(r.native for r in reports), reports
    for batch in (1, 5):
        x = images(batch, seed=batch)
        outs = {k: s.run(None, {"x": x})[0] for k, s in sessions.items()}
        assert np.array_equal(outs["native"], outs["python"])
        assert np.array_equal(outs["native"], outs["per-layer"])


def test_bundled_model_runs_native_with_the_same_numbers() -> None:
    from ortnpu import models_cache

    data = models_cache.load_bundled_data()
    npu = ortnpu.quantize(onnx.load(str(models_cache.bundled_model_path())), "tflite-int8",
                          data["calib_x"][:64])
    sessions = _sessions(npu)
    assert [r.native for r in sessions["native"].compile_reports] == [True]
    x = data["test_x"][:200]
    outs = {k: s.run(None, {"image": x})[0] for k, s in sessions.items()}
    assert np.array_equal(outs["native"], outs["per-layer"])
    assert np.array_equal(outs["native"], outs["python"])
    empty = sessions["native"].run(None, {"image": x[:0]})[0]
    assert empty.shape == (0, 10)


def _int_graph(nodes: list, x_shape: list, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, x_shape)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.INT8, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, 1)])
    return onnx.shape_inference.infer_shapes(model)


def _conv_inits() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"w": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8),
            "b": rng.integers(-500, 500, 4).astype(np.int64),
            "m": np.full(4, 1 << 30, np.int32), "s": np.full(4, -7, np.int32)}


def _conv() -> onnx.NodeProto:
    return make_node(Conv, ["x", "w", "b", "m", "s"], "c", np.int8, "conv", x_zp=1,
                     pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)


def test_reshape_that_mixes_samples_is_refused_with_a_reason() -> None:
    inits = {**_conv_inits(), "shape": np.array([1, -1], np.int64)}
    reshape = make_node(Reshape, ["c", "shape"], "y", np.int8, "mix")
    model = _int_graph([_conv(), reshape], ["N", 2, 5, 5], inits)
    _, programs = fuse_subgraphs(model)
    result = compile_program(programs[0], programs[0].in_shape, programs[0].in_dtype)
    assert isinstance(result, str) and "mixes the samples" in result
    sess = ortnpu.InferenceSession(model)
    assert sess.compile_reports and not sess.compile_reports[0].native
    x = np.random.default_rng(0).integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


@pytest.mark.parametrize(("start", "end", "axis", "step", "compiles"), [
    (-3, 1 << 62, -4, 1, False),       # the last 3 samples: all of 1 or 2, 3 of 6
    (0, 9, 0, 1, False),               # the first 9: all of 1, 2 or 6, 9 of 12
    (1 << 62, -(1 << 62), 0, -1, False),
    (0, 1 << 62, -4, 1, True),         # the whole batch: compiles
    (0, 2, 1, 1, True),                # another axis: compiles
])
def test_slice_of_the_batch_axis_is_not_compiled_per_sample(start: int, end: int, axis: int,
                                                           step: int, compiles: bool) -> None:
    """A Slice of the batch axis gives the same tensors for one and two samples and other
    ones for 6 (chain fuzzer, seed 2 case 3053: the compiled program ran 6 samples where the
    model keeps 3). Such a program stays on the Python path, which gets every batch right."""
    inits = {**_conv_inits(), "st": np.array([start], np.int64),
             "en": np.array([end], np.int64), "ax": np.array([axis], np.int64),
             "sp": np.array([step], np.int64)}
    sl = make_node(Slice, ["c", "st", "en", "ax", "sp"], "y", np.int8, "cut")
    model = _int_graph([_conv(), sl], ["N", 2, 5, 5], inits)
    sess = ortnpu.InferenceSession(model)
    assert sess.compile_reports and sess.compile_reports[0].native == compiles
    if not compiles:
        assert "slices the batch axis" in sess.compile_reports[0].reason
    ref = ortnpu.InferenceSession(model, fuse=False, native=False)
    for n in (1, 2, 6, 12):
        x = np.random.default_rng(n).integers(-128, 128, (n, 2, 5, 5)).astype(np.int8)
        want = ref.run(None, {"x": x})[0]
        got = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape and np.array_equal(got, want), n


def test_layers_without_a_c_step_and_dynamic_shapes_say_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ortnpu.runtime import native_program

    rng = np.random.default_rng(8)
    mm = make_node(MatMul, ["c", "mb", "m1", "s1"], "y", np.int8, "mm")
    model = _int_graph([_conv(), mm], ["N", 2, 5, 5],
                       {**_conv_inits(), "mb": rng.integers(-5, 5, (5, 3)).astype(np.int8),
                        "m1": np.array([1 << 30], np.int32), "s1": np.array([-6], np.int32)})
    assert [r.native for r in ortnpu.InferenceSession(model).compile_reports] == [True]
    # every op of the domain has a C step today; an op without one keeps the Python path
    monkeypatch.setattr(native_program, "NATIVE_OPS", native_program.NATIVE_OPS - {"MatMul"})
    reports = ortnpu.InferenceSession(model).compile_reports
    assert any("layers without a C program step: MatMul" in r.reason for r in reports)
    assert [r.native for r in reports if r.layers == ("conv",)] == [True]   # conv still in C
    monkeypatch.undo()
    reshape = make_node(Reshape, ["c", "shape"], "y", np.int8, "flat")
    dynamic = _int_graph([_conv(), reshape], ["N", 2, "H", "W"],
                         {**_conv_inits(), "shape": np.array([0, -1], np.int64)})
    reports = ortnpu.InferenceSession(dynamic).compile_reports
    assert "fixed dimensions after the batch axis" in reports[0].reason


def test_numpy_mode_keeps_the_python_path() -> None:
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16))
    before = kernels.get_mode()
    kernels.set_mode("numpy")
    try:
        sess = ortnpu.InferenceSession(npu)
    finally:
        kernels.set_mode(before)
    assert "not in use" in sess.compile_reports[0].reason


def test_unknown_handle_is_an_error_not_a_crash() -> None:
    node = helper.make_node("Program_i8_i8", ["x"], ["y"], domain=NATIVE_DOMAIN, handle=12345)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.INT8, [1, 2])], [helper.make_tensor_value_info("y", TensorProto.INT8,
                                                                        [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(NATIVE_DOMAIN, 1)])
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path())
    with pytest.raises(Exception, match="compiled program not found"):
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_threads_share_a_native_session_and_programs_outlive_it() -> None:
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16))
    sess = ortnpu.InferenceSession(npu)
    x = images(3, seed=9)
    want = sess.run(None, {"x": x})[0]
    results: list[bool] = []

    def work() -> None:
        for _ in range(20):
            results.append(np.array_equal(sess.run(None, {"x": x})[0], want))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and all(results)
    inner = sess._sess
    sess._natives.clear()      # drop Python's references first: the kernel keeps its own
    gc.collect()
    assert np.array_equal(inner.run(None, {"x": x})[0], want)


def test_profile_names_every_layer() -> None:
    npu = ortnpu.quantize(small_cnn(batch=1), "tflite-int8", images(16))
    fused, programs = fuse_subgraphs(npu)
    _, natives, reports = compile_subgraphs(fused, programs)
    assert natives and reports[0].native
    x = np.zeros((1, *natives[0].in_dims), natives[0].in_dtype)
    prof = natives[0].profile(x, repeat=2)
    assert [name for name, _ in prof] == [s.where.split("'")[1] for s in programs[0].steps]
    assert all(ms >= 0 for _, ms in prof)


def _qdq_scale(npu: onnx.ModelProto) -> tuple[float, int]:
    inits = {i.name: numpy_helper.to_array(i) for i in npu.graph.initializer}
    q = next(n for n in npu.graph.node if n.op_type == "QuantizeLinear")
    zp = int(inits[q.input[2]].reshape(-1)[0]) if len(q.input) > 2 else 0
    return float(inits[q.input[1]].reshape(-1)[0]), zp


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_float_boundary_equals_onnxruntime_quantize_and_dequantize(target: str) -> None:
    """The program's own QuantizeLinear/DequantizeLinear against onnxruntime's on edge values:
    rounding ties of both parities, the clamp bounds and beyond, infinities, subnormals, -0."""
    npu = ortnpu.quantize(small_cnn(), target, images(32))
    scale, zp = _qdq_scale(npu)
    native_sess = ortnpu.InferenceSession(npu)
    fused, programs = fuse_subgraphs(npu)
    compiled, _, _ = compile_subgraphs(fused, programs)
    kinds = [n.op_type for n in compiled.graph.node]
    assert "QuantizeLinear" not in kinds and kinds[0].startswith("Program_f32_")
    ref = ortnpu.InferenceSession(npu, native=False)      # onnxruntime's Q/DQ nodes
    rng = np.random.default_rng(5)
    # ties at every level of an 8-bit input and a little beyond, where rounding decides the
    # value; an int16 input over a wider span (one step of int16 moves its outputs less)
    lo, hi = (-40000, 40000) if target == "tflite-a16w8" else (-128 - zp - 3, 127 - zp + 3)
    k = rng.integers(lo, hi, size=3 * 12 * 12 * 4)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3e38, -3e38,
                        (127.5 - zp) * scale, (-128.5 - zp) * scale, (255.5 - zp) * scale,
                        (32767.5 - zp) * scale, 0.5 * scale, -0.5 * scale, 1.5 * scale,
                        -2.5 * scale], np.float32)
    x = ((k + 0.5) * scale).astype(np.float32)               # ties at every integer
    x[:special.size] = special
    x = x.reshape(4, 3, 12, 12)
    x[1] = rng.standard_normal((3, 12, 12)).astype(np.float32) * 0.3 * hi * scale
    a = native_sess.run(None, {"x": x})[0]
    b = ref.run(None, {"x": x})[0]
    assert np.array_equal(a, b, equal_nan=True)


def test_quantize_shared_with_another_consumer_is_not_absorbed() -> None:
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16))
    q = next(n for n in npu.graph.node if n.op_type == "QuantizeLinear")
    npu.graph.output.append(helper.make_tensor_value_info(q.output[0], TensorProto.INT8, None))
    fused, programs = fuse_subgraphs(npu)
    compiled, natives, _ = compile_subgraphs(fused, programs)
    assert natives and any(n.op_type == "QuantizeLinear" for n in compiled.graph.node)
    assert np.dtype(natives[0].in_dtype) == np.int8


def test_nan_policy_applied_inside_the_program() -> None:
    """A graph input read only by a program that quantizes it: the program applies the NaN
    policy (no Python pass over the input); results and messages are those of the Python path."""
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16))
    x = images(3, seed=4)
    x[1, 2, 3, 4] = np.nan
    x[2, 0, 0, 0] = np.nan
    for policy in ("raise", "zero", "allow"):
        sess = ortnpu.InferenceSession(npu, nan_policy=policy)
        assert sess._nan_in_program == {"x"}
        ref = ortnpu.InferenceSession(npu, nan_policy=policy, native=False)
        if policy == "raise":
            for s in (sess, ref):
                with pytest.raises(ortnpu.ModelError,
                                   match=r"contains 2 NaN value\(s\), the first at index "
                                         r"\[1, 2, 3, 4\]"):
                    s.run(None, {"x": x})
        elif policy == "zero":
            assert np.array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])
        else:
            y = sess.run(None, {"x": x})[0]
            assert y.shape == (3, 5) and np.isfinite(y).all()


def test_fixed_batch_one_compiles_even_when_a_reshape_fixes_the_batch() -> None:
    inits = {**_conv_inits(), "shape": np.array([1, -1], np.int64)}
    reshape = make_node(Reshape, ["c", "shape"], "y", np.int8, "flat1")
    model = _int_graph([_conv(), reshape], [1, 2, 5, 5], inits)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = np.random.default_rng(2).integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)
    with pytest.raises(ortnpu.KernelError, match="compiled for batch 1"):
        sess.native_programs[0].run(np.zeros((2, 2, 5, 5), np.int8))


def test_fixed_batch_output_whose_first_axis_is_not_the_batch_is_refused() -> None:
    """Batch fixed to 1, and a Transpose moves the height to axis 0 (a CNN feeding a sequence
    model, [T, B, C]): the C op writes [batch, *per-sample dims], so compiling it would keep one
    time step of five (issue 13: a Gather downstream then failed with idx=1 out of [-1, 0])."""
    t = make_node(Transpose, ["c", "perm"], "y", np.int8, "to_time_major")
    model = _int_graph([_conv(), t], [1, 2, 5, 7],
                       {**_conv_inits(), "perm": np.array([2, 0, 1, 3], np.int64)})
    sess = ortnpu.InferenceSession(model)
    reports = sess.compile_reports
    assert not reports[0].native and "the batch axis moves" in reports[0].reason
    x = np.random.default_rng(7).integers(-128, 128, (1, 2, 5, 7)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert ref.shape[:2] == (5, 1) and got.shape == ref.shape and np.array_equal(got, ref)


@pytest.mark.parametrize("perm", [[0, 1, 3, 2], [0, 2, 3, 1], [0, 3, 1, 2]])
def test_transpose_layers_run_in_the_program(perm: list[int]) -> None:
    t = make_node(Transpose, ["c", "perm"], "y", np.int8, "t")
    model = _int_graph([_conv(), t], ["N", 2, 5, 7],
                       {**_conv_inits(), "perm": np.array(perm, np.int64)})
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = np.random.default_rng(3).integers(-128, 128, (3, 2, 5, 7)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ([0], [1], [2], [1]),                          # a class token: one row
    ([1, -1], [4, -8], [1, 3], [2, -2]),           # strided and reversed
    ([2, 0], [2**62, 5], [-1, -2], [1, 3]),        # open ends, negative axes
])
def test_slice_layers_run_in_the_program(starts: list[int], ends: list[int], axes: list[int],
                                         steps: list[int]) -> None:
    inits = {**_conv_inits(), **{k: np.array(v, np.int64) for k, v in
                                 (("st", starts), ("en", ends), ("ax", axes), ("sp", steps))}}
    s = make_node(Slice, ["c", "st", "en", "ax", "sp"], "y", np.int8, "s")
    model = _int_graph([_conv(), s], ["N", 2, 5, 7], inits)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = np.random.default_rng(4).integers(-128, 128, (3, 2, 5, 7)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


def test_slice_of_the_batch_axis_is_refused() -> None:
    inits = {**_conv_inits(), **{k: np.array([v], np.int64) for k, v in
                                 (("st", 0), ("en", 1), ("ax", 0), ("sp", 1))}}
    s = make_node(Slice, ["c", "st", "en", "ax", "sp"], "y", np.int8, "s")
    reports = ortnpu.InferenceSession(_int_graph([_conv(), s], ["N", 2, 5, 5],
                                                 inits)).compile_reports
    assert not reports[0].native


def test_transpose_moving_the_batch_axis_is_refused() -> None:
    t = make_node(Transpose, ["c", "perm"], "y", np.int8, "t")
    model = _int_graph([_conv(), t], ["N", 2, 5, 5],
                       {**_conv_inits(), "perm": np.array([1, 0, 2, 3], np.int64)})
    reports = ortnpu.InferenceSession(model).compile_reports
    assert not reports[0].native and "batch axis" in reports[0].reason


def test_transpose_of_int16_values() -> None:
    conv16 = make_node(Conv, ["x", "w", "b", "m", "s"], "c", np.int16, "conv16", x_zp=1,
                       pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    t = make_node(Transpose, ["c", "perm"], "y", np.int16, "t16")
    model = _int_graph([conv16, t], ["N", 2, 4, 6],
                       {**_conv_inits(), "perm": np.array([0, 3, 2, 1], np.int64)})
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT16
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = np.random.default_rng(4).integers(-128, 128, (2, 2, 4, 6)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert got.dtype == np.int16 and np.array_equal(got, ref)


def test_transpose_swapping_the_batch_with_a_unit_axis_is_refused() -> None:
    """[1, 1, H, W] transposed by (1, 0, 2, 3) keeps its shape for one sample but mixes the
    samples of a batch: only the two-sample check sees it."""
    rng = np.random.default_rng(6)
    inits = {"w": rng.integers(-127, 128, (1, 2, 3, 3)).astype(np.int8),
             "b": np.zeros(1, np.int64), "m": np.full(1, 1 << 30, np.int32),
             "s": np.full(1, -7, np.int32), "perm": np.array([1, 0, 2, 3], np.int64)}
    t = make_node(Transpose, ["c", "perm"], "y", np.int8, "swap")
    model = _int_graph([_conv(), t], ["N", 2, 5, 5], inits)
    reports = ortnpu.InferenceSession(model).compile_reports
    assert not reports[0].native and "mixes the samples" in reports[0].reason
    x = rng.integers(-128, 128, (3, 2, 5, 5)).astype(np.int8)
    got = ortnpu.InferenceSession(model).run(None, {"x": x})[0]
    assert np.array_equal(got, ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0])


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_pad_layers_run_in_the_program(dtype: type) -> None:
    conv = make_node(Conv, ["x", "w", "b", "m", "s"], "c", dtype, "convp", x_zp=1)
    value = -3 if dtype == np.int8 else -1000
    pad = make_node(Pad, ["c", "pads"], "y", dtype, "pad", value=value)
    model = _int_graph([conv, pad], ["N", 2, 6, 5],
                       {**_conv_inits(), "pads": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)})
    model.graph.output[0].type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(
        np.dtype(dtype))
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = np.random.default_rng(9).integers(-128, 128, (3, 2, 6, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_concat_of_branches_runs_in_the_program(axis: int) -> None:
    """Two branches of one input joined by a Concat inside one compiled subgraph."""
    rng = np.random.default_rng(10)
    inits = {**_conv_inits(), "w2": rng.integers(-127, 128, (4, 4, 1, 1)).astype(np.int8),
             "b2": np.zeros(4, np.int64), "m2": np.full(4, 1 << 30, np.int32),
             "s2": np.full(4, -6, np.int32)}
    c2 = make_node(Conv, ["c", "w2", "b2", "m2", "s2"], "d", np.int8, "branch", x_zp=0)
    cat = make_node(Concat, ["c", "d", "c"], "y", np.int8, "cat", axis=axis)
    model = _int_graph([_conv(), c2, cat], ["N", 2, 5, 5], inits)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = rng.integers(-128, 128, (2, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_with_constant_inputs_runs_in_the_program(axis: int) -> None:
    """A ViT's class token: constants joined to a layer's output, first and in the middle,
    copied into the sample by the program."""
    rng = np.random.default_rng(11)
    dims = [1, 4, 5, 5]
    consts = {}
    for k, size in (("tok", 1), ("mid", 3)):
        shape = list(dims)
        shape[axis] = size
        consts[k] = rng.integers(-128, 128, shape).astype(np.int8)
    cat = make_node(Concat, ["tok", "c", "mid", "c"], "y", np.int8, "cat", axis=axis)
    model = _int_graph([_conv(), cat], [1, 2, 5, 5], {**_conv_inits(), **consts})
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True]
    x = rng.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


def test_concat_of_a_one_sample_constant_with_a_batch_is_not_compiled() -> None:
    """With a free batch size, a constant of one sample does not match a batch of two (the
    reference refuses): the program must not copy it into every sample instead."""
    rng = np.random.default_rng(12)
    tok = rng.integers(-128, 128, (1, 1, 5, 5)).astype(np.int8)
    cat = make_node(Concat, ["tok", "c"], "y", np.int8, "cat", axis=1)
    model = _int_graph([_conv(), cat], ["N", 2, 5, 5], {**_conv_inits(), "tok": tok})
    sess = ortnpu.InferenceSession(model)
    assert not any(r.native for r in sess.compile_reports)
    x = rng.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)


@pytest.mark.parametrize("simd", ["avx512", "avx2", "scalar"])
def test_compiled_programs_equal_the_numpy_references_on_every_simd_path(simd: str) -> None:
    """A program compiled under each SIMD path the CPU has against the numpy references."""
    available = {"avx512": native.has_avx512_vnni(), "avx2": native.has_avx2(), "scalar": True}
    if not available[simd]:
        pytest.skip(f"the CPU has no {simd} path")
    npu = ortnpu.quantize(small_cnn(), "tflite-int8", images(16))
    x = images(4, seed=12)
    before = kernels.get_mode()
    kernels.set_mode("numpy")
    try:
        want = ortnpu.InferenceSession(npu, fuse=False).run(None, {"x": x})[0]
    finally:
        kernels.set_mode(before)
    native.set_simd(simd)
    try:
        sess = ortnpu.InferenceSession(npu)
    finally:
        native.set_simd("auto")
    assert [r.native for r in sess.compile_reports] == [True]
    assert np.array_equal(sess.run(None, {"x": x})[0], want)


def _add(a: str, b: str, out: str, name: str) -> onnx.NodeProto:
    from ortnpu.domain import Add

    return make_node(Add, [a, b], out, np.int8, name, a_multiplier=1 << 30, a_shift=-1,
                     b_multiplier=1 << 30, b_shift=-1, y_multiplier=1 << 30, y_shift=-18)


def _paths_agree(model: onnx.ModelProto, x: np.ndarray) -> list[bool]:
    """Compiled, fused-Python and per-node runs give the same array; returns what compiled."""
    sess = ortnpu.InferenceSession(model)
    ref = ortnpu.InferenceSession(model, fuse=False, native=False).run(None, {"x": x})[0]
    for s in (sess, ortnpu.InferenceSession(model, native=False)):
        got = s.run(None, {"x": x})[0]
        assert got.shape == ref.shape and np.array_equal(got, ref)
    return [r.native for r in sess.compile_reports]


@pytest.mark.parametrize("batch", [3, "N"])
def test_rank_expanding_broadcast_is_exact(batch: int | str) -> None:
    """x [3, 4] + zeros [1, 1, 1, 4] is [1, 1, 3, 4]: the batch axis moves. The per-sample
    program gave one global average per row ([[8]], [[28]], [[48]]) instead of one ([[28]])."""
    from ortnpu.domain import GlobalAveragePool

    gap = make_node(GlobalAveragePool, ["a"], "y", np.int8, "gap")
    model = _int_graph([_add("x", "z", "a", "add"), gap], [batch, 4],
                       {"z": np.zeros((1, 1, 1, 4), np.int8)})
    x = (np.arange(12, dtype=np.int8).reshape(3, 4) * 4).astype(np.int8)
    assert _paths_agree(model, x) == [False]
    sess = ortnpu.InferenceSession(model)
    assert "batch axis moves" in sess.compile_reports[0].reason or \
        "moves or mixes the samples" in sess.compile_reports[0].reason


def test_activations_of_different_rank_are_exact() -> None:
    """[N, 4] + [N, 1, 1, 4] combines every sample with every other ([N, 1, N, 4])."""
    reshape = make_node(Reshape, ["x", "shape"], "r", np.int8, "r")
    model = _int_graph([reshape, _add("x", "r", "y", "add")], ["N", 4],
                       {"shape": np.array([-1, 1, 1, 4], np.int64)})
    x = np.random.default_rng(5).integers(-128, 128, (3, 4)).astype(np.int8)
    assert _paths_agree(model, x) == [False]


@pytest.mark.parametrize("batch", [1, 3])
def test_fixed_batch_runs_the_whole_batch_as_one_unit(batch: int) -> None:
    """A model that fixes its batch compiles for the whole batch, so even a broadcast that
    moves the batch axis inside the program is exact; other batch sizes are refused."""
    from ortnpu.domain import GlobalAveragePool

    nodes = [_add("x", "z", "a", "add"), make_node(Reshape, ["a", "shape"], "r", np.int8, "r"),
             make_node(GlobalAveragePool, ["r"], "y", np.int8, "gap")]
    model = _int_graph(nodes, [batch, 4], {"z": np.zeros((1, 1, 1, 4), np.int8),
                                           "shape": np.array([batch, 1, 1, 4], np.int64)})
    x = np.random.default_rng(6).integers(-128, 128, (batch, 4)).astype(np.int8)
    assert _paths_agree(model, x) == [True]
    with pytest.raises(ortnpu.KernelError, match=f"compiled for batch {batch}"):
        ortnpu.InferenceSession(model).native_programs[0].run(
            np.zeros((batch + 1, 4), np.int8))


def _attention_scores(seed: int = 0) -> onnx.ModelProto:
    """MatMul + residual Add, Softmax, MatMul+Add(bias), MatMul: the float part of attention
    (the first Add adds x, not a bias, so that the island before the Softmax keeps two nodes:
    a bias Add fuses into its MatMul's FullyConnected)."""
    rng = np.random.default_rng(seed)
    d = 16
    inits = [numpy_helper.from_array((rng.standard_normal((d, d)) * 0.5).astype(np.float32), n)
             for n in ("w1", "w2", "w3")]
    inits += [numpy_helper.from_array((rng.standard_normal(d) * 0.1).astype(np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="m1"),
             helper.make_node("Add", ["m1", "x"], ["a1"], name="a1"),
             helper.make_node("Softmax", ["a1"], ["s"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["m2"], name="m2"),
             helper.make_node("Add", ["m2", "b2"], ["a2"], name="a2"),
             helper.make_node("MatMul", ["a2", "w3"], ["y"], name="m3")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, d])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_boundaries_onnxruntime_fuses_stay_in_the_graph(target: str) -> None:
    """onnxruntime turns DequantizeLinear -> Softmax -> QuantizeLinear into QLinearSoftmax in
    the reference path; a program that absorbed the DequantizeLinear and the QuantizeLinear left
    it a float Softmax: 0.0195 apart on 8-bit scores (the ViT of issue 13). The Softmax is
    kept on the CPU (the tflite targets would run it on the NPU)."""
    rng = np.random.default_rng(1)
    npu = ortnpu.quantize(_attention_scores(), target,
                          (rng.random((32, 8, 16)) * 4 - 2).astype(np.float32),
                          force_cpu=["softmax"])
    x = (rng.random((1, 8, 16)) * 4 - 2).astype(np.float32)
    sess = ortnpu.InferenceSession(npu)
    assert [r.native for r in sess.compile_reports] == [True, True]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    plain = ort.InferenceSession(npu.SerializeToString(), ortnpu.session_options())
    exported = ort.InferenceSession(ortnpu.export(npu).SerializeToString())
    assert np.array_equal(plain.run(None, {"x": x})[0], ref)
    assert np.array_equal(exported.run(None, {"x": x})[0], ref)
    assert np.array_equal(sess.run(None, {"x": x})[0], ref)
    # with onnxruntime's optimizations off, nothing is fused: the programs take the Q/DQ nodes
    def no_opt() -> ort.SessionOptions:   # one per session: a session registers into it
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return so

    kinds = [n.op_type for n in
             compile_subgraphs(*fuse_subgraphs(npu), sess_options=no_opt())[0].graph.node]
    assert "QuantizeLinear" not in kinds and "DequantizeLinear" not in kinds
    ref_off = ortnpu.InferenceSession(npu, no_opt(), fuse=False, native=False)
    off = ortnpu.InferenceSession(npu, no_opt())
    assert np.array_equal(off.run(None, {"x": x})[0], ref_off.run(None, {"x": x})[0])


def test_initializers_that_are_graph_inputs_are_kept() -> None:
    """A model that lists its initializers as graph inputs (torch's
    keep_initializers_as_inputs=True): fusion dropped the initializers it had copied into a
    program, leaving graph inputs without a value; they are defaults a feed may replace, so
    they stay in the graph and no program freezes them."""
    inits = {**_conv_inits(), "shape": np.array([0, -1], np.int64)}
    reshape = make_node(Reshape, ["c", "shape"], "y", np.int8, "flat")
    model = _int_graph([_conv(), reshape], ["N", 2, 5, 5], inits)
    for name in ("w", "b", "m", "s", "shape"):
        value = inits[name]
        model.graph.input.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    fused, programs = fuse_subgraphs(model)
    assert not programs   # the parameters are not constants: nothing to fuse
    assert {i.name for i in fused.graph.initializer} == set(inits)
    x = np.random.default_rng(9).integers(-128, 128, (2, 2, 5, 5)).astype(np.int8)
    ref = ortnpu.InferenceSession(model, fuse=False, native=False).run(None, {"x": x})[0]
    assert np.array_equal(ortnpu.InferenceSession(model).run(None, {"x": x})[0], ref)


def _steps_model(kind: str, dtype: type) -> tuple[onnx.ModelProto, list[str]]:
    """conv → a layer of ``kind`` whose operands are activations of the program (and a
    constant where the op takes one), on int8 or int16 values."""
    from ortnpu.domain import Maximum, Minimum, Slice, Sub

    rng = np.random.default_rng(11)
    inits = _conv_inits()
    t = TensorProto.INT8 if dtype is np.int8 else TensorProto.INT16
    conv = make_node(Conv, ["x", "w", "b", "m", "s"], "c", dtype, "conv", x_zp=1,
                     pad_top=1, pad_left=1, pad_bottom=1, pad_right=1,
                     act_min=int(np.iinfo(dtype).min), act_max=int(np.iinfo(dtype).max))
    conv2 = make_node(Conv, ["x", "w", "b", "m2", "s"], "d", dtype, "conv2",
                      act_min=int(np.iinfo(dtype).min), act_max=int(np.iinfo(dtype).max))
    inits["m2"] = np.full(4, 3 << 28, np.int32)
    lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    if kind == "Sub":
        # c [N,4,5,5] - d [N,4,3,3] do not broadcast: subtract a slice of c, and a constant
        inits.update(st=np.array([1, 1], np.int64), en=np.array([4, 4], np.int64),
                     ax=np.array([2, 3], np.int64), sp=np.array([1, 1], np.int64),
                     k=rng.integers(lo, hi, (4, 1, 3)).astype(dtype))
        nodes = [conv, conv2, make_node(Slice, ["c", "st", "en", "ax", "sp"], "cs", dtype, "sl"),
                 make_node(Sub, ["cs", "d"], "e", dtype, "sub", a_zp=3, b_zp=-2, y_zp=5,
                           left_shift=20 if dtype is np.int8 else 15, a_multiplier=1 << 30,
                           a_shift=-1, b_multiplier=1717986918, b_shift=-1,
                           y_multiplier=1 << 30, y_shift=-18 if dtype is np.int8 else -14,
                           act_min=lo, act_max=hi),
                 make_node(Sub, ["k", "e"], "y", dtype, "subk", a_zp=0, b_zp=1,
                           left_shift=20 if dtype is np.int8 else 15, a_multiplier=1 << 30,
                           a_shift=0, b_multiplier=(1 << 30) + 12345, b_shift=0,
                           y_multiplier=1 << 30, y_shift=-20 if dtype is np.int8 else -15,
                           act_min=lo, act_max=hi)]
    elif kind == "SquaredDifference":
        # (slice of c - d)², then (constant - that)²: TFLite's left shift 7
        from ortnpu.domain import SquaredDifference

        inits.update(st=np.array([1, 1], np.int64), en=np.array([4, 4], np.int64),
                     ax=np.array([2, 3], np.int64), sp=np.array([1, 1], np.int64),
                     k=rng.integers(lo, hi, (4, 1, 1)).astype(dtype))
        nodes = [conv, conv2, make_node(Slice, ["c", "st", "en", "ax", "sp"], "cs", dtype, "sl"),
                 make_node(SquaredDifference, ["cs", "d"], "e", dtype, "sqd", a_zp=3, b_zp=-2,
                           y_zp=5, left_shift=7, a_multiplier=1 << 30, a_shift=-1,
                           b_multiplier=1717986918, b_shift=-1, y_multiplier=1 << 30,
                           y_shift=-12 if dtype is np.int8 else -20, act_min=lo, act_max=hi),
                 make_node(SquaredDifference, ["k", "e"], "y", dtype, "sqk", a_zp=0, b_zp=1,
                           left_shift=7, a_multiplier=1 << 30, a_shift=0,
                           b_multiplier=(1 << 30) + 12345, b_shift=0, y_multiplier=1 << 30,
                           y_shift=-14 if dtype is np.int8 else -22, act_min=lo, act_max=hi)]
    elif kind in ("Maximum", "Minimum"):
        spec = Maximum if kind == "Maximum" else Minimum
        inits.update(st=np.array([4, 0], np.int64), en=np.array([-6, 3], np.int64),
                     ax=np.array([-1, -2], np.int64), sp=np.array([-2, 1], np.int64),
                     k=rng.integers(lo, hi, (1, 3, 1)).astype(dtype))
        nodes = [conv, conv2,
                 make_node(Slice, ["c", "st", "en", "ax", "sp"], "cs", dtype, "sl"),
                 make_node(spec, ["cs", "d"], "e", dtype, "mm"),
                 make_node(spec, ["k", "e"], "y", dtype, "mk")]
    else:   # MatMul: attention-like, both operands computed, batch dims broadcast
        rule = {"rounding": "tflite_double", "acc_bits": 32} if dtype is np.int8 else \
            {"rounding": "tflite_int64", "acc_bits": 64}
        inits.update(m1=np.array([1 << 30], np.int32), s1=np.array([-9], np.int32),
                     kk=rng.integers(lo, hi, (1, 5, 2)).astype(dtype),
                     st=np.array([0], np.int64), en=np.array([3], np.int64),
                     ax=np.array([2], np.int64), sp=np.array([1], np.int64))
        nodes = [conv, conv2,
                 make_node(Slice, ["c", "st", "en", "ax", "sp"], "cs", dtype, "sl"),
                 # d [N,4,3,3] @ cs [N,4,3,5], then @ kk [1,5,2] (a broadcast constant)
                 make_node(MatMul, ["d", "cs", "m1", "s1"], "e", dtype, "qk", a_zp=-3, b_zp=7,
                           y_zp=2, act_min=lo, act_max=hi, **rule),
                 make_node(MatMul, ["e", "kk", "m1", "s1"], "y", dtype, "av", a_zp=1,
                           act_min=lo, act_max=hi, **rule)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", t, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, 1)])
    return onnx.shape_inference.infer_shapes(model), [n.name for n in nodes]


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("kind", ["Sub", "SquaredDifference", "Maximum", "Minimum", "MatMul"])
def test_issue14_ops_run_in_the_program(kind: str, dtype: type) -> None:
    """Slice, Sub, SquaredDifference, Maximum, Minimum and MatMul of two activations are C
    program steps, equal to the numpy references (batch 1 and 3, constants on either side)."""
    model, _ = _steps_model(kind, dtype)
    sess = ortnpu.InferenceSession(model)
    assert [r.native for r in sess.compile_reports] == [True], sess.compile_reports
    for batch in (1, 3):
        x = np.random.default_rng(batch).integers(-128, 128, (batch, 2, 5, 5)).astype(np.int8)
        before = kernels.get_mode()
        kernels.set_mode("numpy")
        try:
            want = ortnpu.InferenceSession(model, fuse=False).run(None, {"x": x})[0]
        finally:
            kernels.set_mode(before)
        assert np.array_equal(sess.run(None, {"x": x})[0], want)
        assert np.array_equal(ortnpu.InferenceSession(model, fuse=False).run(
            None, {"x": x})[0], want)   # the per-op C kernels
