"""ortnpu as an onnxruntime plugin EP: a plain onnxruntime session of an unchanged QDQ model.

The reference is ``ortnpu.InferenceSession(ortnpu.import_qdq(model))``: the EP session's outputs
must be identical to it, bit for bit, and the nodes ``import_qdq`` puts on the NPU must be the
ones onnxruntime assigned to the ortnpu EP (its graph-assignment info). The per-op QDQ forms of
the conformance kit run in tests/oracle/test_ep_conformance.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper
from test_qdq_import import ort_quantize

import ortnpu
import ortnpu.ep
from ortnpu.errors import EpUnavailableError
from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds

pytestmark = pytest.mark.usefixtures("require_c")


def ep_session(model: onnx.ModelProto | str, options: dict[str, str] | None = None,
               record: bool = True) -> ort.InferenceSession:
    """The two-line use: register, add the devices, a plain onnxruntime session."""
    devices = ortnpu.ep.register()
    so = ort.SessionOptions()
    so.add_provider_for_devices(devices, options or {"target": "tflite-int8"})
    if record:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, so)


def assigned(sess: ort.InferenceSession) -> dict[str, list[tuple[str, str]]]:
    """onnxruntime's own record of which EP runs which node."""
    out: dict[str, list[tuple[str, str]]] = {}
    for sub in sess.get_provider_graph_assignment_info():
        out.setdefault(sub.ep_name, []).extend((n.name, n.op_type) for n in sub.get_nodes())
    return out


def assert_all_on_npu(sess: ort.InferenceSession, qdq: onnx.ModelProto) -> None:
    """onnxruntime assigned every node of the graph the EP saw to it; that graph is the model's
    (onnxruntime may first give a shared DequantizeLinear one copy per consumer)."""
    report = ortnpu.ep.explain(sess)
    assert {r.device for r in report} == {"NPU"}
    assert sorted(assigned(sess)[ortnpu.ep.EP_NAME]) == sorted((r.node, r.op_type)
                                                               for r in report)
    assert {n.name for n in qdq.graph.node} <= {r.node for r in report}


def assert_identical(sess: ort.InferenceSession, qdq: onnx.ModelProto, feeds: list[dict],
                     target: str = "tflite-int8") -> None:
    ref = ortnpu.InferenceSession(ortnpu.import_qdq(qdq, target))
    for feed in feeds:
        got, want = sess.run(None, feed), ref.run(None, feed)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def cnn_qdq() -> dict[str, onnx.ModelProto]:
    model = small_cnn(batch=1)
    return {"s8": ort_quantize(model, "QInt8"), "u8": ort_quantize(model, "QUInt8")}


def test_register_returns_the_ortnpu_device_once_per_process() -> None:
    devices = ortnpu.ep.register()
    assert [d.ep_name for d in devices] == [ortnpu.ep.EP_NAME]
    assert devices[0].ep_vendor == "ortnpu"
    again = ortnpu.ep.register()   # a second call neither fails nor adds a device
    assert len(again) == 1
    assert sum(d.ep_name == ortnpu.ep.EP_NAME for d in ort.get_ep_devices()) == 1


@pytest.mark.parametrize("act", ["s8", "u8"])
def test_ort_quantized_cnn_runs_on_the_ep_identical_to_import_qdq(cnn_qdq: dict,
                                                                   act: str) -> None:
    qdq = cnn_qdq[act]
    sess = ep_session(qdq)
    assert sess.get_providers()[0] == ortnpu.ep.EP_NAME
    assert_all_on_npu(sess, qdq)   # the model's QDQ boundaries and all its ops
    x = images(6, seed=4)
    assert_identical(sess, qdq, [{"x": x[i:i + 1]} for i in range(len(x))])


def _cos_between_convs() -> onnx.ModelProto:
    """conv → Cos → conv: onnxruntime's quantizer leaves Cos in float, ortnpu has no
    lowering for it; the EP runs the two convolutions, onnxruntime's CPU EP the Cos."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (2, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Cos", ["c1"], ["k"], name="cos"),
             helper.make_node("Conv", ["k", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(
        nodes, "cos", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 12, 12])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_cpu_node_between_npu_groups() -> None:
    qdq = ort_quantize(_cos_between_convs(), "QInt8")
    sess = ep_session(qdq)
    nodes = assigned(sess)
    on_npu = {op for _, op in nodes[ortnpu.ep.EP_NAME]}
    assert "Conv" in on_npu and "Cos" not in on_npu
    report = ortnpu.ep.explain(sess)
    (cos,) = [r for r in report if r.op_type == "Cos"]
    assert cos.device == "CPU" and cos.node == "cos" and "Cos" in cos.reason
    groups = {r.group for r in report if r.device == "NPU"}
    assert len(groups) == 2   # one group before the CPU node, one after
    x = images(4, seed=2)
    assert_identical(sess, qdq, [{"x": x[i:i + 1]} for i in range(len(x))])


def test_explain_without_the_assignment_record(cnn_qdq: dict) -> None:
    sess = ep_session(cnn_qdq["s8"], record=False)
    report = ortnpu.ep.explain(sess)   # the plan of the latest graph the EP was given
    assert {n.name for n in cnn_qdq["s8"].graph.node} <= {r.node for r in report}
    text = ortnpu.ep.explain_text(report)
    assert text.count("\n") == len(report) - 1 and text.startswith("NPU")


def test_bad_options_are_errors_not_crashes(cnn_qdq: dict) -> None:
    with pytest.raises(Exception, match="no-such-target"):
        ep_session(cnn_qdq["s8"], {"target": "no-such-target"})
    with pytest.raises(Exception, match="nan_policy"):
        ep_session(cnn_qdq["s8"], {"nan_policy": "sometimes"})


def test_nan_policy_option(cnn_qdq: dict) -> None:
    x = images(1, seed=7)
    x[0, 0, 0, 0] = np.nan
    strict = ep_session(cnn_qdq["s8"])
    with pytest.raises(Exception, match="NaN"):
        strict.run(None, {"x": x})
    # an error, not onnxruntime's silent rerun on the CPU EP (which EP_FAIL would trigger)
    assert strict.get_providers()[0] == ortnpu.ep.EP_NAME
    sess = ep_session(cnn_qdq["s8"], {"target": "tflite-int8", "nan_policy": "zero"})
    clean = x.copy()
    clean[0, 0, 0, 0] = 0.0
    ref = ortnpu.InferenceSession(ortnpu.import_qdq(cnn_qdq["s8"], "tflite-int8"))
    assert np.array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": clean})[0])


def test_target_option_reaches_the_ep(cnn_qdq: dict) -> None:
    sess = ep_session(cnn_qdq["s8"], {"target": "tflite-a16w8"})
    x = images(2, seed=9)
    assert_identical(sess, cnn_qdq["s8"], [{"x": x[i:i + 1]} for i in range(2)],
                     target="tflite-a16w8")


def test_old_onnxruntime_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "__version__", "1.22.1")
    with pytest.raises(EpUnavailableError, match=r"1\.22\.1 has no plugin execution providers"):
        ortnpu.ep.check_runtime()
    monkeypatch.setattr(ort, "__version__", "1.32.0")
    monkeypatch.delattr(ort, "register_execution_provider_library")
    with pytest.raises(EpUnavailableError, match=">= 1.23"):
        ortnpu.ep.register()


def test_digits_cnn_quantized_by_onnxruntime(tmp_path: Path) -> None:
    """The bundled digits CNN through onnxruntime's own quantize_static, on the EP."""
    from ortnpu import models_cache

    data = models_cache.load_bundled_data()
    float_model = ortnpu.optimize(onnx.load(models_cache.bundled_model_path()))
    name = float_model.graph.input[0].name
    calib = data["calib_x"][:16]
    qdq = quantize_with_onnxruntime(float_model, sample_feeds(name, calib))
    onnx.save(qdq, tmp_path / "q.onnx")
    sess = ep_session(str(tmp_path / "q.onnx"))
    assert_all_on_npu(sess, qdq)
    x = data["test_x"][:32]
    assert_identical(sess, qdq, [{name: x[i:i + 1]} for i in range(len(x))])
    assert (np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
            .argmax(1) == data["test_y"][:32]).mean() > 0.85


@pytest.mark.slow
def test_mobilenet_v2_quantized_by_onnxruntime(tmp_path: Path) -> None:
    """MobileNetV2 (models/build_all.py) through quantize_static: all on the EP, identical."""
    from ortnpu import models_cache

    path = models_cache.cached_model("mobilenet_v2.onnx")
    photos = models_cache.cached_model("imagenet_photos.npz")
    if path is None or photos is None:
        pytest.skip("mobilenet_v2 is not built (python models/build_all.py)")
    with np.load(photos) as f:
        x = f["x"]
    float_model = ortnpu.optimize(onnx.load(path))
    name = float_model.graph.input[0].name
    calib = x[:16]
    qdq = quantize_with_onnxruntime(float_model, sample_feeds(name, calib))
    onnx.save(qdq, tmp_path / "q.onnx")
    sess = ep_session(str(tmp_path / "q.onnx"))
    assert_all_on_npu(sess, qdq)
    test = x[70:78]
    assert_identical(sess, qdq, [{name: test[i:i + 1]} for i in range(len(test))])
