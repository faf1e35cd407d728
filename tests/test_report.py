"""Evaluation report: text, stable JSON, self-contained HTML (rendered in Chromium when slow)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.errors import ModelError
from ortnpu.report import SCHEMA, SCHEMA_VERSION

_SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
#: Folder of the PP-OCR ONNX files of the optional rapidocr-onnxruntime package.
OCR_DIR = (Path(next(iter(_SPEC.submodule_search_locations))) / "models"
           if _SPEC and _SPEC.submodule_search_locations else None)


def ocr_model(name: str) -> Path | None:
    """Path of a PP-OCR ONNX file of rapidocr-onnxruntime, or None when not installed."""
    if OCR_DIR is None:
        return None
    path = OCR_DIR / name
    return path if path.is_file() else None


def small_cnn() -> onnx.ModelProto:
    """Conv+BN+Relu, depthwise Conv, a Resize the default target does not run, Gemm, Softmax."""
    rng = np.random.default_rng(0)

    def t(name: str, *shape: int, pos: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(a) + 0.5 if pos else a, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "dw"], ["c2"], name="dw2", group=4, pads=[1] * 4),
        helper.make_node("Resize", ["c2", "", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("MaxPool", ["up"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], name="fc", transB=1),
        helper.make_node("Softmax", ["g"], ["y"], name="softmax"),
    ]
    inits = [t("w1", 4, 1, 3, 3), t("s", 4, pos=True), t("b", 4), t("m", 4), t("v", 4, pos=True),
             t("dw", 4, 1, 3, 3), t("fw", 10, 4 * 8 * 8), t("fb", 10),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    g = helper.make_graph(nodes, "small_cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


LAYER_KEYS = {"name", "op", "placement", "subgraph", "reason", "macs", "elementwise_ops",
              "weight_bytes", "input_bytes", "output_bytes", "sram_fit", "dram_bytes",
              "compute_cycles", "memory_cycles", "cycles", "bound", "time_us", "exact"}


@pytest.fixture(scope="module")
def report() -> object:
    return ortnpu.evaluate(small_cnn(), "tflite-int8", optimize=True,
                           input_shapes={"x": [1, 1, 8, 8]}, verify=True)


def test_dict_schema(report: object) -> None:
    d = report.to_dict()
    assert d["schema"] == SCHEMA and d["version"] == SCHEMA_VERSION
    assert set(d) == {"schema", "version", "model", "target", "summary", "layers", "partition",
                      "notes", "optimize", "verification"}
    assert d["model"]["inputs"][0] == {"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}
    assert d["target"]["name"] == "tflite-int8" and d["target"]["hardware"]["clock_mhz"] > 0
    assert {"npu_nodes", "cpu_nodes", "subgraphs", "macs", "latency_ms", "fps",
            "dram_bytes"} <= set(d["summary"])
    for row in d["layers"]:
        assert set(row) == LAYER_KEYS
    cpu = {c["name"]: c for c in d["partition"]["cpu_nodes"]}
    assert set(cpu) == {"up", "softmax"}
    assert all(c["reason"].startswith(f"{c['op']} '{c['name']}': ") for c in cpu.values())
    assert d["verification"]["ok"] and d["verification"]["max_relative_error"] <= 1e-4
    assert any(p["pass"] == "FoldBatchNorm" and p["changes"] for p in d["optimize"])
    json.loads(report.to_json())  # serialisable, no NaN/inf


def test_text(report: object) -> None:
    text = str(report)
    assert "NPU" in text and "latency" in text
    assert "ortnpu has no integer lowering for Resize yet" in text
    assert "ortnpu has no integer lowering for Softmax yet" in text


def test_html_self_contained(report: object, tmp_path: Path) -> None:
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>")
    assert 'aria-label="cycles per layer"' in html and 'aria-label="partition graph"' in html
    urls = set(re.findall(r"(?:src|href)=\"([^\"]+)\"", html))
    assert not urls, urls  # nothing to fetch
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")
    path = tmp_path / "r.html"
    report.write_html(path)
    report.write_json(tmp_path / "r.json")
    assert path.read_text(encoding="utf-8") == html


def test_evaluate_without_optimize_and_errors(tmp_path: Path) -> None:
    r = ortnpu.evaluate(small_cnn(), batch_one=False)
    # dynamic N makes every node fall back, each with a reason
    assert r.plan.npu_nodes == []
    assert all("dynamic shape" in r.plan.reasons[n] or "no integer lowering" in r.plan.reasons[n]
               for n in r.plan.cpu_nodes)
    batch1 = ortnpu.evaluate(small_cnn())
    # a BatchNormalization left unfolded has no integer lowering; optimize folds it
    assert "`ortnpu optimize` folds it" in batch1.plan.reasons["bn1"]
    assert "dynamic batch; evaluated with batch 1" in batch1.estimate.notes[0]
    fixed = ortnpu.evaluate(small_cnn(), input_shapes={"x": [2, 1, 8, 8]})
    assert fixed.model["inputs"][0]["shape"] == [2, 1, 8, 8]
    assert not any("dynamic batch" in n for n in fixed.estimate.notes)
    with pytest.raises(ModelError, match="no such model file"):
        ortnpu.evaluate(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        ortnpu.evaluate(bad)


@pytest.mark.slow
def test_html_renders_in_chromium(report: object, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from render_html_check import find_chromium, render

    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    path = tmp_path / "r.html"
    report.write_html(path)
    assert render(path, tmp_path / "r.png") == []
