"""Sessions: the domain runs in onnxruntime, kernel errors surface as KernelError, never abort."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import DOMAIN, Conv, MaxPool, make_node
from ortnpu.quant import QuantConfig


def conv_model(dynamic: bool = False) -> tuple[onnx.ModelProto, list[np.ndarray], dict]:
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (6, 2, 3, 3)).astype(np.int8)
    b = rng.integers(-1000, 1000, 6).astype(np.int64)
    m = rng.integers(1 << 30, (1 << 31) - 1, 6).astype(np.int32)
    s = rng.integers(-12, -6, 6).astype(np.int32)
    attrs = dict(x_zp=-3, y_zp=5, group=2, stride_h=2, pad_top=1, pad_left=1, pad_bottom=1)
    conv = make_node(Conv, ["x", "w", "b", "m", "s"], "c", np.int8, "conv1", **attrs)
    pool = make_node(MaxPool, ["c"], "y", np.int8, "pool1", kernel_h=2, kernel_w=2)
    shape = [None, None, None, None] if dynamic else [2, 4, 7, 7]
    graph = helper.make_graph(
        [conv, pool], "conv_pool", [helper.make_tensor_value_info("x", TensorProto.INT8, shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
        initializer=[numpy_helper.from_array(v, n) for v, n in
                     ((w, "w"), (b, "b"), (m, "m"), (s, "s"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, 1)])
    return model, [w, b, m, s], attrs


def reference(x: np.ndarray, params: list[np.ndarray], attrs: dict) -> np.ndarray:
    c = Conv.run_reference([x, *params], attrs, np.int8)
    return MaxPool.run_reference([c], dict(kernel_h=2, kernel_w=2))


def test_session_output_equals_reference_bit_for_bit() -> None:
    model, params, attrs = conv_model()
    x = np.random.default_rng(1).integers(-128, 128, (2, 4, 7, 7)).astype(np.int8)
    sess = ortnpu.InferenceSession(model)
    out = sess.run(None, {"x": x})[0]
    assert out.dtype == np.int8 and np.array_equal(out, reference(x, params, attrs))
    assert sess.get_inputs()[0].name == "x" and sess.get_outputs()[0].name == "y"
    assert "CPUExecutionProvider" in sess.get_providers()


def test_plain_onnxruntime_session_with_our_options() -> None:
    model, params, attrs = conv_model()
    x = np.random.default_rng(2).integers(-128, 128, (2, 4, 7, 7)).astype(np.int8)
    sess = ort.InferenceSession(model.SerializeToString(), ortnpu.session_options(),
                                providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(None, {"x": x})[0], reference(x, params, attrs))


def test_kernel_error_is_raised_naming_the_node() -> None:
    model, _, _ = conv_model(dynamic=True)
    sess = ortnpu.InferenceSession(model)
    bad = np.zeros((1, 3, 7, 7), np.int8)  # 3 channels do not fit weights of 2 x group 2
    with pytest.raises(ortnpu.KernelError, match=r"node 'conv1' \(Conv_i8\).*do not fit"):
        sess.run(None, {"x": bad})
    # the session stays usable afterwards
    good = np.zeros((1, 4, 7, 7), np.int8)
    assert sess.run(None, {"x": good})[0].shape == (1, 6, 3, 5)


def test_feed_errors_are_model_errors() -> None:
    model, _, _ = conv_model()
    sess = ortnpu.InferenceSession(model)
    with pytest.raises(ortnpu.ModelError, match="dtype float32, the model expects int8"):
        sess.run(None, {"x": np.zeros((2, 4, 7, 7), np.float32)})
    with pytest.raises(ortnpu.ModelError, match="unknown input"):
        sess.run(None, {"x": np.zeros((2, 4, 7, 7), np.int8), "z": np.zeros(1)})
    with pytest.raises(ortnpu.ModelError, match="missing input"):
        sess.run(None, {})
    with pytest.raises(ortnpu.ModelError, match="cannot read the model"):
        ortnpu.InferenceSession("/nonexistent/model.onnx")
    with pytest.raises(ortnpu.ModelError, match="onnxruntime cannot load"):
        ortnpu.InferenceSession(b"not an onnx model")


ABORT_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np, onnxruntime as ort, ortnpu
    from test_runtime import conv_model
    model, _, _ = conv_model(dynamic=True)
    bad = np.zeros((1, 3, 7, 7), np.int8)
    if sys.argv[1] == "drop-in":
        try:
            ortnpu.InferenceSession(model).run(None, {{"x": bad}})
        except ortnpu.KernelError as exc:
            print("KernelError", exc)
    else:
        sess = ort.InferenceSession(model.SerializeToString(), ortnpu.session_options(),
                                    providers=["CPUExecutionProvider"])
        try:
            out = sess.run(None, {{"x": bad}})
            print("empty output", out[0].size)
        except Exception as exc:
            print("onnxruntime error", type(exc).__name__)
        print("pending", [str(e) for e in ortnpu.session_options and
                          __import__("ortnpu.runtime").runtime.pending_errors()])
    print("alive")
""")


@pytest.mark.parametrize("mode", ["drop-in", "plain"])
def test_bad_kernel_input_does_not_kill_the_process(mode: str, tmp_path) -> None:
    import os

    script = tmp_path / "abort_check.py"
    script.write_text(ABORT_SCRIPT.format(tests=os.path.dirname(__file__)))
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alive" in proc.stdout
    assert "conv1" in proc.stdout


def test_four_threads_share_one_session() -> None:
    model, _params, _attrs = conv_model(dynamic=True)
    sess = ortnpu.InferenceSession(model)
    rng = np.random.default_rng(5)
    xs = [rng.integers(-128, 128, (1 + k % 3, 4, 7 + k % 2, 7)).astype(np.int8)
          for k in range(16)]
    serial = [sess.run(None, {"x": x})[0] for x in xs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(k0: int) -> None:
        try:
            for k in range(k0, 16, 4):
                results[k] = sess.run(None, {"x": xs[k]})[0]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(results[k], serial[k]) for k in range(16))


LATE_IMPORT_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np, onnxruntime as ort, ortnpu
    from test_runtime import conv_model
    model, _, _ = conv_model()
    sess = ort.InferenceSession(model.SerializeToString(), ortnpu.session_options(),
                                providers=["CPUExecutionProvider"])
    assert "torch" not in sys.modules, "registering our ops must not import torch"
    import onnxruntime_extensions  # installs its stock hook: it must not replace ours
    x = np.zeros((2, 4, 7, 7), np.int8)
    print("shape", sess.run(None, {{"x": x}})[0].shape)
    print("alive")
""")


def test_importing_onnxruntime_extensions_later_keeps_our_hook(tmp_path) -> None:
    import os

    script = tmp_path / "late_import.py"
    script.write_text(LATE_IMPORT_SCRIPT.format(tests=os.path.dirname(__file__)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shape (2, 6, 3, 5)" in proc.stdout and "alive" in proc.stdout


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8", "tosa-int8"])
def test_fused_subgraphs_give_the_same_numbers(target: str) -> None:
    from ortnpu import models_cache

    data = models_cache.load_bundled_data()
    model = onnx.load(str(models_cache.bundled_model_path()))
    npu = ortnpu.quantize(model, target, data["calib_x"][:64])
    x = data["test_x"][:100]
    fused = ortnpu.InferenceSession(npu)
    # every NPU layer in one onnxruntime node: a compiled program (or, without the C
    # kernels, one Python program)
    assert len(fused.native_programs) + len(fused._programs) == 1
    one_by_one = ortnpu.InferenceSession(npu, fuse=False)
    a = fused.run(None, {"image": x})[0]
    b = one_by_one.run(None, {"image": x})[0]
    assert np.array_equal(a, b)


def test_fused_subgraph_errors_still_name_the_layer() -> None:
    model, _, _ = conv_model(dynamic=True)
    sess = ortnpu.InferenceSession(model)
    assert sess._programs
    with pytest.raises(ortnpu.KernelError, match=r"node 'conv1' \(Conv_i8\).*do not fit"):
        sess.run(None, {"x": np.zeros((1, 3, 7, 7), np.int8)})
    assert sess.run(None, {"x": np.zeros((1, 4, 7, 7), np.int8)})[0].shape == (1, 6, 3, 5)


def _conv_then_unsqueeze() -> onnx.ModelProto:
    """Conv (NPU) whose output a CPU Unsqueeze reads: the NPU graph has DequantizeLinear ->
    Unsqueeze, a pattern onnxruntime's QDQ propagation rewrites."""
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Unsqueeze", ["r", "axes"], ["y"], name="unsqueeze")]
    graph = helper.make_graph(
        nodes, "conv_unsqueeze", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 6, 6])],
        initializer=[w, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_npu_graph_with_int16_tensors_loads_at_every_optimization_level(level) -> None:
    """An int16 tensor makes the NPU graph opset 21; onnxruntime's QDQ propagation then copies a
    Q/DQ pair past the CPU Unsqueeze with ``output_dtype=INT8`` and its S8->U8 rewrite turns
    the zero point into uint8: the session refused the graph (issue 13, autofix exit 2)."""
    rng = np.random.default_rng(6)
    calib = rng.random((8, 3, 6, 6)).astype(np.float32)
    npu = ortnpu.quantize(_conv_then_unsqueeze(), "tflite-int8", calib,
                          config=QuantConfig(int16_tensors=frozenset({"x"})))
    x = calib[:1]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    so = ortnpu.session_options()
    so.graph_optimization_level = level
    plain = ort.InferenceSession(npu.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert np.array_equal(plain.run(None, {"x": x})[0], ref)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    ours = ortnpu.InferenceSession(npu, sess_options=opts)
    assert np.array_equal(ours.run(None, {"x": x})[0], ref)


def test_session_options_from_session_options_print_nothing(capfd: pytest.CaptureFixture) -> None:
    """Options built on options that already carry ortnpu's settings (a copy, or a session
    made from ``session_options()``): no "Config with key ... already exists" line from
    onnxruntime on the console."""
    base = ortnpu.session_options()
    capfd.readouterr()
    again = ortnpu.session_options(base=base)
    assert again.get_session_config_entry("session.disable_quant_qdq") == "1"
    assert "already exists" not in capfd.readouterr().err
