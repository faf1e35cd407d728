"""compare: per-layer metrics, the ranking finds a deliberately broken layer, bad input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import checked_model, images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.comparison import ComparisonReport, compare
from ortnpu.errors import CalibrationError, ModelError


@pytest.fixture(scope="module")
def models() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    model = small_cnn()   # with a CPU layer (the Softmax, which the NPU could run)
    return model, ortnpu.quantize(model, "tflite-int8", images(64), force_cpu=["softmax"])


@pytest.fixture(scope="module")
def healthy(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> ComparisonReport:
    return compare(*models, images(32, seed=5))


def _halve_multiplier(npu: onnx.ModelProto, node: str) -> onnx.ModelProto:
    """The NPU graph with one layer's rescale multiplier halved: its output is off by ×0.5."""
    bad = onnx.ModelProto()
    bad.CopyFrom(npu)
    for init in bad.graph.initializer:
        if init.name == f"{node}_multiplier":
            value = numpy_helper.to_array(init).astype(np.int64) // 2
            init.CopyFrom(numpy_helper.from_array(value.astype(np.int32), init.name))
            return bad
    raise AssertionError(f"no multiplier for {node}")


def test_metrics_of_a_healthy_model(healthy: ComparisonReport) -> None:
    names = {x.name for x in healthy.layers}
    assert names == {"conv1", "pool1", "dwconv", "pwconv", "add1", "sigmoid1", "swish", "gap",
                     "flatten", "fc", "softmax"}
    rows = {x.name: x for x in healthy.layers}
    assert rows["conv1"].op_type == "Conv+Relu" and rows["dwconv"].op_type == "Conv+Clip"
    assert rows["softmax"].device == "CPU" and rows["softmax"].isolated is None
    for x in healthy.layers:
        assert x.in_graph.sqnr_db > 25 and x.in_graph.cosine > 0.99
        if x.device == "NPU":
            assert x.scale and x.isolated is not None and x.isolated.sqnr_db > 25
    assert not healthy.suspects(), healthy.to_text()
    keys = [x.isolated_sqnr_db for x in healthy.layers]
    assert keys == sorted(keys)
    (probs,) = healthy.outputs
    assert probs.name == "probs" and probs.top1_agreement == 1.0 and probs.metrics.sqnr_db > 30
    assert healthy.samples == 32


def test_healthy_16x8_model_has_no_suspect(models: tuple[onnx.ModelProto,
                                                         onnx.ModelProto]) -> None:
    """Weight layers (8-bit weights) add far more error than 16-bit pools, yet none is broken."""
    model = models[0]
    report = compare(model, ortnpu.quantize(model, "tflite-a16w8", images(64),
                                            force_cpu=["softmax"]), images(16, seed=5))
    assert {x.name for x in report.worst(4)} == {"conv1", "dwconv", "pwconv", "fc"}
    assert not report.suspects(), report.to_text()


@pytest.mark.parametrize("broken", ["conv1", "dwconv", "pwconv", "fc"])
def test_a_broken_rescale_is_ranked_worst(models: tuple[onnx.ModelProto, onnx.ModelProto],
                                          broken: str) -> None:
    model, npu = models
    report = compare(model, _halve_multiplier(npu, broken), images(16, seed=5))
    worst = report.worst(1)[0]
    assert worst.name == broken, report.to_text()
    assert abs(worst.isolated.sqnr_db - 6.0) < 1.0  # y/2: SQNR = 10·log10(1/0.25)
    assert worst.sqnr_drop_db > 20
    assert [x.name for x in report.suspects()] == [broken]
    assert report.worst(2)[1].isolated.sqnr_db > 30  # the layers after it are not blamed
    assert f"stands out: {broken}" in str(report)


def test_an_absurd_output_range_is_ranked_worst(models: tuple[onnx.ModelProto,
                                                              onnx.ModelProto]) -> None:
    from ortnpu.quant import QuantPreset
    from ortnpu.quant.params import QuantParams

    model = models[0]
    npu = ortnpu.quantize(model, "tflite-int8", images(64),
                          preset=QuantPreset(params={"c3": QuantParams(2e-4, 0, "int8")}))
    report = compare(model, npu, images(16, seed=5))
    assert report.worst(1)[0].name == "pwconv", report.to_text()
    assert [x.name for x in report.suspects()] == ["pwconv"]  # not add1, which reads c3


def test_renderings(healthy: ComparisonReport) -> None:
    d = json.loads(json.dumps(healthy.to_dict()))
    assert d["schema"] == "ortnpu.compare/1" and d["samples"] == 32
    assert [x["name"] for x in d["layers"]] == [x.name for x in healthy.layers]
    layer = d["layers"][0]
    assert set(layer) >= {"name", "op_type", "device", "output", "scale", "in_graph",
                          "isolated", "sqnr_drop_db", "input_sqnr_db", "isolated_input_sqnr_db"}
    assert set(layer["in_graph"]) == {"sqnr_db", "cosine", "max_abs_error", "mean_abs_error",
                                      "count"}
    assert d["outputs"][0]["top1_agreement"] == 1.0
    page = healthy.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "http://" not in \
        page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert all(x.name in page for x in healthy.layers)
    text = healthy.to_text(top=3)
    assert "8 more layers" in text and healthy.layers[0].name in text


def test_data_forms_and_streaming(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    model, npu = models
    x = images(20, seed=2)
    whole = compare(model, npu, x)
    as_dict = compare(model, npu, {"x": x.astype(np.float64)}, max_samples=20)
    batches = compare(model, npu, ({"x": x[k:k + 8]} for k in range(0, 20, 8)))
    for other in (as_dict, batches):
        assert other.samples == 20
        for a, b in zip(whole.layers, other.layers, strict=True):
            assert a.name == b.name
            assert math.isclose(a.in_graph.sqnr_db, b.in_graph.sqnr_db, rel_tol=1e-6)
    assert compare(model, npu, ({"x": x[k:k + 8]} for k in range(0, 20, 8)),
                   max_samples=5).samples == 5


def test_exact_metrics() -> None:
    from ortnpu.comparison import _Accumulator, _num

    acc = _Accumulator("t")
    acc.update(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    m = acc.result()
    assert m.sqnr_db == math.inf and m.cosine == pytest.approx(1.0) and m.max_abs_error == 0
    acc = _Accumulator("t")
    acc.update(np.array([3.0, 4.0]), np.array([3.0, 3.0]))
    m = acc.result()
    assert m.sqnr_db == pytest.approx(10 * math.log10(25.0)) and m.mean_abs_error == 0.5
    assert json.dumps(ComparisonReport([], [], 1).to_dict())
    assert _num(math.inf) == "inf" and _num(-math.inf) == "-inf" and _num(None) is None


def test_bad_input(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    model, npu = models
    with pytest.raises(ModelError, match="not an NPU graph"):
        compare(model, model, images(4))
    other = small_cnn()
    other.graph.input[0].name = "image"
    for node in other.graph.node:
        node.input[:] = ["image" if i == "x" else i for i in node.input]
    with pytest.raises(ModelError, match="inputs"):
        compare(other, npu, images(4))
    with pytest.raises(CalibrationError, match="no samples"):
        compare(model, npu, images(0))
    with pytest.raises(CalibrationError, match="needs data"):
        compare(model, npu, None)
    bad = images(4)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        compare(model, npu, bad)
    with pytest.raises(CalibrationError, match="'x'"):
        compare(model, npu, {"image": images(4)})
    with pytest.raises(ModelError, match="cannot load"):
        compare("/nonexistent/float.onnx", npu, images(4))


def _renamed(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    return copy


def test_mismatched_models(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    model, npu = models
    partial = compare(_renamed(model, {"c3": "c3_other"}), npu, images(4))
    assert "c3" in partial.skipped and "pwconv" in partial.skipped
    assert "add1" in partial.skipped  # its input c3 has no float value: not run alone
    rows = {x.name: x for x in partial.layers}
    assert "pwconv" not in rows and rows["add1"].isolated is None
    assert rows["fc"].isolated is not None
    inner = {o for n in model.graph.node for o in n.output} - {"probs"}
    with pytest.raises(ModelError, match="none of the quantized tensors"):
        compare(_renamed(model, {t: f"{t}_other" for t in inner}), npu, images(4))


def test_public_name(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    import ortnpu.comparison as module  # the implementation module has its own name

    assert isinstance(ortnpu.compare(*models, images(4)), ComparisonReport)
    assert module.compare is compare and ortnpu.compare is compare


def test_cli(models: tuple[onnx.ModelProto, onnx.ModelProto], tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    from ortnpu.cli import main

    model, npu = models
    onnx.save(model, tmp_path / "f.onnx")
    onnx.save(_halve_multiplier(npu, "pwconv"), tmp_path / "n.onnx")
    np.savez(tmp_path / "d.npz", test_x=images(16, seed=4), other=images(2))
    code = main(["compare", str(tmp_path / "f.onnx"), str(tmp_path / "n.onnx"), "--data",
                 str(tmp_path / "d.npz"), "--top", "2", "--json", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert code == 0
    first = next(line for line in out.splitlines() if line.strip().startswith("1 "))
    assert "pwconv" in first and "9 more layers" in out
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["layers"][0]["name"] == "pwconv" and d["samples"] == 16
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["compare", str(tmp_path / "n.onnx"), str(tmp_path / "f.onnx"), "--data",
                 str(tmp_path / "d.npz")]) == 2
    assert "not an NPU graph" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "f.onnx"), str(tmp_path / "n.onnx"), "--data",
                 str(tmp_path / "d.npz"), "--key", "nope"]) == 2
    assert "has no array 'nope'" in capsys.readouterr().err


def test_long_names_with_a_common_prefix_stay_distinct(healthy: ComparisonReport) -> None:
    """ViT-style names: 12 blocks share the start and the end; the table must tell them apart."""
    import dataclasses

    from ortnpu.comparison import NAME_WIDTH, short_names

    names = [f"/backbone/encoder/layer.{i}/attention/attention/{p}/MatMul"
             for i in range(12) for p in ("query", "key", "value")]
    names += [f"/backbone/encoder/layer.{i}/mlp/fc1/MatMul" for i in range(12)]
    short = short_names(names)
    assert len(set(short.values())) == len(names)
    assert all(len(v) <= NAME_WIDTH for v in short.values()), short
    assert all(v.endswith("MatMul") and v.startswith("/backbone") for v in short.values())
    assert short_names(["a", "b"]) == {"a": "a", "b": "b"}
    # labels widen rather than collide when names differ only in the middle
    tight = short_names([f"{'x' * 30}{i:03d}{'y' * 30}" for i in range(5)], 12)
    assert len(set(tight.values())) == 5

    rows = [dataclasses.replace(x, name=n) for x, n in zip(healthy.layers, names, strict=False)]
    report = dataclasses.replace(healthy, layers=rows)
    table = [line.split()[1] for line in report.to_text().splitlines()
             if line[:3].strip().isdigit()]
    assert len(table) == len(rows) and len(set(table)) == len(rows)
    import re

    labels = re.findall(r'text-anchor="end" font-size="11">([^<]*)</text>', report.to_html())
    assert len(labels) == len(rows) and len(set(labels)) == len(rows)


def test_a_tensor_the_npu_graph_never_computes_is_skipped_with_its_reason() -> None:
    """Sqrt → Div lowers to a 1/sqrt table and a Mul: the Sqrt's own integer tensor is
    declared but no node writes it. compare skips it instead of failing (it raised a KeyError
    on PP-OCRv4 rec, which stopped autofix's ranking)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["x", "mu"], ["d"], name="sub"),
             helper.make_node("Mul", ["d", "d"], ["d2"], name="sq"),
             helper.make_node("ReduceMean", ["d2"], ["var"], name="var", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="addeps"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["d", "sd"], ["y"], name="div")]
    g = helper.make_graph(
        nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])],
        [numpy_helper.from_array(np.array(1e-5, np.float32), "eps")])
    model = checked_model(g)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 4, 16)).astype(np.float32)
    npu = ortnpu.quantize(model, "tflite-int8", [{"x": s} for s in x], optimize=False)
    assert "sd_q" not in {o for n in npu.graph.node for o in n.output}
    report = ortnpu.compare(model, npu, x, progress=False)
    assert "its integer tensor 'sd_q' is not computed" in report.skipped["sd"]
    assert {layer.name for layer in report.layers} >= {"sub", "div"}
