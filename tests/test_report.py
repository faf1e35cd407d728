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
    """Conv+BN+Relu, depthwise Conv, a cubic Resize (TFLite has no cubic kernel), Gemm, Softmax."""
    rng = np.random.default_rng(0)

    def t(name: str, *shape: int, pos: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(a) + 0.5 if pos else a, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "dw"], ["c2"], name="dw2", group=4, pads=[1] * 4),
        helper.make_node("Resize", ["c2", "", "scales"], ["up"], name="up", mode="cubic"),
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
              "compute_cycles", "output_cycles", "sram_cycles", "memory_cycles", "cycles",
              "bound", "time_us", "exact"}


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
    assert set(cpu) == {"up"}   # the Softmax runs on the NPU (TFLite's integer SOFTMAX)
    assert all(c["reason"].startswith(f"{c['op']} '{c['name']}': ") for c in cpu.values())
    assert d["verification"]["ok"] and d["verification"]["max_relative_error"] <= 1e-4
    assert any(p["pass"] == "FoldBatchNorm" and p["changes"] for p in d["optimize"])
    json.loads(report.to_json())  # serialisable, no NaN/inf


def test_text(report: object) -> None:
    text = str(report)
    assert "NPU" in text and "latency" in text
    assert "Resize 'up': mode 'cubic' has no TFLite kernel" in text


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
    assert all(any(why in r.plan.reasons[n] for why in ("dynamic shape", "no integer lowering",
                                                        "has no TFLite kernel"))
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


def _constant_weights_only() -> object:
    """tflite-int8 without BATCH_MATMUL: the attention products stay on the CPU, one reason
    group of their own (the grouping tests count on it)."""
    import dataclasses

    target = ortnpu.load_target("tflite-int8")
    return dataclasses.replace(target, support=dataclasses.replace(
        target.support, matmul_two_activations=False))


@pytest.fixture(scope="module")
def deep_report() -> object:
    from graphs import transformer

    return ortnpu.evaluate(transformer(40, gelu=False), _constant_weights_only())


def test_text_scales_to_1000_nodes(deep_report: object) -> None:
    plan = deep_report.plan
    assert len(plan.order) == 960 and len(plan.cpu_nodes) == 120
    text = str(deep_report)
    assert len(text.splitlines()) < 40  # a screenful, not one line per node
    assert re.search(r"^\s+80\s+MatMul\s+both operands are computed at run time", text, re.M)
    assert re.search(r"^\s+40\s+Erf\s+ortnpu has no integer lowering for Erf", text, re.M)
    assert "b17/gelu_erf" not in text
    verbose = deep_report.to_text(verbose=True)
    assert all(plan.reasons[n] in verbose for n in plan.cpu_nodes)
    assert all(f"  {sg.name}: " in verbose for sg in plan.subgraphs)


def test_json_keeps_every_node_and_the_groups(deep_report: object) -> None:
    part = deep_report.to_dict()["partition"]
    assert len(part["cpu_nodes"]) == 120 and all(c["reason"] for c in part["cpu_nodes"])
    groups = part["cpu_groups"]
    assert sum(g["count"] for g in groups) == 120 and len(groups) == 2
    assert {g["op"] for g in groups} == {"MatMul", "Erf"}
    islands = [n for i in part["cpu_islands"] for n in i]
    assert sorted(islands) == sorted(c["name"] for c in part["cpu_nodes"])


def test_html_groups_and_draws_the_partition_compactly(deep_report: object) -> None:
    plan = deep_report.plan
    html = deep_report.to_html()
    section = html[html.index('id="cpu"'):html.index('id="subgraphs"')]
    assert section.count("<details>") == 2  # one unfoldable row per (reason, op type)
    assert all(f"{n}, " in section or f"{n}</p>" in section for n in plan.cpu_nodes)
    assert section.count("<li>") == 0  # same reason for the whole group: names only
    assert "<td class=\"n\">80</td><td>MatMul</td>" in section
    svg = re.search(r'<svg[^>]*aria-label="partition graph".*?</svg>', html, re.S).group(0)
    boxes = len(plan.subgraphs) + len(plan.cpu_islands)
    assert svg.count("<rect") == boxes
    height = float(re.search(r'height="([\d.]+)"', svg).group(1))
    assert height < 1500  # wraps into columns instead of one 40000-pixel strip
    assert 'aria-label="partition strip"' in html
    assert 'aria-label="node graph"' not in html  # left out above 300 nodes


def test_partition_overview_is_acyclic_and_convex(deep_report: object) -> None:
    """Subgraphs and CPU islands are convex, so the contracted picture has no cycle."""
    from graphs import transformer

    from ortnpu.partition import is_convex

    model = transformer(40, gelu=False)
    for island in deep_report.plan.cpu_islands[:40]:
        assert is_convex(model, island)


def test_cpu_group_lists_own_reasons_when_they_differ(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Reasons that differ only by tensor names and dynamic dims form one group, which unfolds
    to each node's own reason; the CLI prints the group, -v every node."""
    from graphs import transformer

    from ortnpu.cli import main

    model = transformer(3, gelu=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "T"  # a dynamic sequence length: every NPU-able node has a shape reason
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "T"
    report = ortnpu.evaluate(model, _constant_weights_only())
    groups = {(op, len(nodes)): cause for cause, op, nodes in report.plan.cpu_groups()}
    assert groups[("MatMul", 12)].startswith("input '…' has a dynamic shape [1, T, 16];")
    html = report.to_html()
    section = html[html.index('id="cpu"'):html.index('<h2 id="chart"')]
    assert "<li><b>b2/q_proj</b>: input &#x27;b1/out&#x27; has a dynamic shape" in section
    path = tmp_path / "t.onnx"
    onnx.save(model, path)
    toml = tmp_path / "t.toml"
    toml.write_text(_constant_weights_only().to_toml())
    assert main(["evaluate", str(path), "--target", str(toml)]) == 0
    short = capsys.readouterr().out
    assert main(["evaluate", str(path), "-v", "--target", str(toml)]) == 0
    verbose = capsys.readouterr().out
    assert re.search(r"^\s+12\s+MatMul\s+input '…' has a dynamic shape", short, re.M)
    assert "MatMul 'b2/q_proj'" not in short and "MatMul 'b2/q_proj': input 'b1/out'" in verbose
    assert "b1/gelu_erf" not in short and "Erf 'b1/gelu_erf': ortnpu has no" in verbose


def test_cycles_chart_names_the_limiting_bound() -> None:
    """On an Ethos-U preset each bar is coloured and titled by the bound that limits it, and the
    legend lists every bound present (compute, output writes, SRAM, external memory)."""
    import re

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from ortnpu import evaluate
    from ortnpu.report.svg import COLORS, cycles_chart

    dw = np.ones((24, 1, 3, 3), np.float32)
    ex = np.ones((24, 16, 1, 1), np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "ex"], ["e"], name="expand"),
         helper.make_node("Conv", ["e", "dw"], ["d"], name="dw", group=24, pads=[1] * 4),
         helper.make_node("Add", ["d", "e"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(dw, "dw"), numpy_helper.from_array(ex, "ex")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    svg = cycles_chart(evaluate(model, "ethos-u55-128"))
    bars = {name: fill for fill, name in re.findall(r'fill="(#[0-9a-f]+)"><title>(\w+) ', svg)}
    assert bars == {"expand": COLORS["output"], "dw": COLORS["compute"], "add": COLORS["output"]}
    assert "output writes bound" in svg and "compute bound" in svg
    assert re.search(r"<title>dw \(Conv\) NPU: \d+ cycles, compute bound \(compute \d+", svg)
