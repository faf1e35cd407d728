"""Export to standard ONNX: integer exactness in plain onnxruntime, fake-quant/qdq deviation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortnpu import conformance
from ortnpu.cli import main
from ortnpu.conformance.case import read_case
from ortnpu.domain import OPS_BY_NAME, make_node
from ortnpu.domain.arith import INT32_MAX, INT32_MIN, ROUNDING_RULES, rescale, rescale_bounds
from ortnpu.errors import UnsupportedError
from ortnpu.exporters import export
from ortnpu.exporters.builder import I64, Builder
from ortnpu.exporters.rescale import lower_rescale

#: Runs every case of a folder with onnxruntime only: ortnpu is never imported there.
_PLAIN_RUNNER = r"""
import json, sys
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
def tensor(p):
    t = onnx.TensorProto(); t.ParseFromString(p.read_bytes()); return numpy_helper.to_array(t)
passed, failed = 0, []
for model in sorted(Path(sys.argv[1]).rglob("model.onnx")):
    m = onnx.load(str(model))
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    data = model.parent / "test_data_set_0"
    feed = {n: tensor(data / f"input_{k}.pb") for k, n in enumerate(names)}
    want = tensor(data / "output_0.pb")
    so = ort.SessionOptions(); so.log_severity_level = 3
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)[0]
    if got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want):
        passed += 1
    else:
        failed.append(str(model.parent))
assert "ortnpu" not in sys.modules
print(json.dumps({"passed": passed, "failed": failed}))
"""


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kit")
    conformance.generate(root)
    return root


def _export_tree(kit: Path, dest: Path, **options: object) -> int:
    """Export every case's model into a copy of the kit; return the case count."""
    cases = conformance.find_cases(kit)
    for case in cases:
        out = dest / case.relative_to(kit)
        shutil.copytree(case / "test_data_set_0", out / "test_data_set_0")
        exported = export(onnx.load(str(case / "model.onnx")), **options)  # type: ignore[arg-type]
        onnx.save(exported, out / "model.onnx")
    return len(cases)


def _run_plain(folder: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PLAIN_RUNNER, str(folder)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_integer_export_is_exact_on_every_conformance_case(kit: Path, tmp_path: Path) -> None:
    """Plain onnxruntime, no ortnpu in the process, equals the numpy references bit for bit."""
    count = _export_tree(kit, tmp_path / "integer")
    result = _run_plain(tmp_path / "integer")
    assert result["failed"] == [] and result["passed"] == count > 300


def test_implicit_casting_is_exact_and_drops_casts(kit: Path, tmp_path: Path) -> None:
    count = _export_tree(kit / "tflite-int8", tmp_path / "implicit", implicit_casting=True)
    result = _run_plain(tmp_path / "implicit")
    assert result["failed"] == [] and result["passed"] == count


def _chain_model() -> onnx.ModelProto:
    """Conv → MaxPool → Requantize(i8→u8) → Add: four NPU nodes chained."""
    rng = np.random.default_rng(5)
    nodes = [
        make_node(OPS_BY_NAME["Conv"], ["x", "w", "bias", "m", "s"], "c", "int8", "conv",
                  x_zp=-3, y_zp=4, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1),
        make_node(OPS_BY_NAME["MaxPool"], ["c"], "p", "int8", "pool", kernel_h=2, kernel_w=2,
                  stride_h=2, stride_w=2),
        make_node(OPS_BY_NAME["Requantize"], ["p", "m2", "s2"], "r", "uint8", "requant",
                  x_zp=4, act_min=0, act_max=255),
        make_node(OPS_BY_NAME["Add"], ["r", "r"], "y", "uint8", "add", a_multiplier=1 << 30,
                  b_multiplier=1 << 30, y_multiplier=1 << 30, y_shift=-18, act_min=0,
                  act_max=255),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("w", rng.integers(-127, 127, (4, 3, 3, 3), endpoint=True).astype(np.int8)),
        ("bias", rng.integers(-500, 500, 4).astype(np.int64)),
        ("m", np.full(4, 1 << 30, np.int32) + np.arange(4, dtype=np.int32) * 12345),
        ("s", np.array([-8, -9, -7, -8], np.int32)), ("m2", np.array([1 << 30], np.int32)),
        ("s2", np.array([1], np.int32)))]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.ortnpu", 1)],
                             ir_version=9)


@pytest.mark.parametrize("implicit", [False, True])
def test_multi_node_graph_matches_simulator(implicit: bool) -> None:
    import ortnpu

    model = _chain_model()
    x = np.random.default_rng(0).integers(-128, 127, (2, 3, 8, 8), endpoint=True).astype(np.int8)
    want = ortnpu.InferenceSession(model).run(None, {"x": x})[0]
    exported = export(model, implicit_casting=implicit)
    onnx.checker.check_model(exported, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in exported.graph.node)
    got = ort.InferenceSession(exported.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == want.dtype and np.array_equal(got, want)
    casts = sum(n.op_type == "Cast" for n in exported.graph.node)
    if implicit:
        assert casts < sum(n.op_type == "Cast" for n in export(model).graph.node)


def _rescale_graph(m: np.ndarray, s: np.ndarray, rule: str) -> onnx.ModelProto:
    b = Builder(types={"x": I64})
    y = lower_rescale(b, "x", m, s, rule)
    b.emit("Identity", [y], I64, "y")
    graph = helper.make_graph(b.nodes, "rescale",
                              [helper.make_tensor_value_info("x", I64, None)],
                              [helper.make_tensor_value_info("y", I64, None)], b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("rule", ROUNDING_RULES)
def test_rescale_lowering_equals_arith_on_every_shift(rule: str) -> None:
    (mlo, mhi), (slo, shi) = rescale_bounds(rule)
    rng = np.random.default_rng(7)
    shifts = np.arange(slo, shi + 1, dtype=np.int64)
    mults = [mhi, 1 << 30, 3 << 29, 1518500250, 1, mlo]
    if rule == "tflite_double":
        mults.append(INT32_MIN)   # outside the domain's range: the SRDHM saturation branch
    m = np.repeat(np.array(mults, np.int64), shifts.size)
    s = np.tile(shifts, len(mults))
    # 32-bit values, then 64-bit accumulators: every rule is defined (and exported) on int64
    x = np.concatenate([rng.integers(-(1 << 31), 1 << 31, (30, 1)),
                        rng.integers(-(1 << 62), 1 << 62, (10, 1)),
                        rng.integers(-(1 << 40), 1 << 40, (10, 1)),
                        np.array([[INT32_MIN], [INT32_MAX], [0], [1], [-1], [1 << 30],
                                  [-(1 << 30)], [(1 << 30) + 1], [1 << 62], [-(1 << 62)],
                                  [(1 << 63) - 1], [-(1 << 63)], [1 << 47], [-(1 << 47) - 1]])
                        ]).astype(np.int64)
    want = rescale(x, m[None], s[None], rule)
    sess = ort.InferenceSession(_rescale_graph(m[None], s[None], rule).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    assert np.array_equal(np.broadcast_to(got, want.shape), want)


def test_fake_quant_exact_where_claimed_and_deviation_measured(kit: Path) -> None:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    worst: dict[str, int] = {}
    exact_cases = 0
    for folder in conformance.find_cases(kit):
        case = read_case(folder, kit)
        model = export(onnx.load(str(case.model_path)), style="fake-quant")
        props = {p.key: p.value for p in model.metadata_props}
        got = ort.InferenceSession(model.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"]).run(None, case.inputs)[0]
        want = case.expected[0]
        assert got.dtype == want.dtype
        dev = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
        if props["ortnpu.export.exact"] == "true":
            assert dev == 0, folder
            exact_cases += 1
        suite = case.suite.split("/")[0]
        worst[suite] = max(worst.get(suite, 0), dev)
    print("fake-quant largest deviation per suite:", worst)
    assert exact_cases > 100
    assert worst["n2d2-int8"] <= 255 and max(worst.values()) > 0


def test_qdq_export_loads_and_states_its_differences(kit: Path) -> None:
    case = read_case(kit / "tflite-int8" / "test_conv_3x3_pad1", kit)
    model = export(onnx.load(str(case.model_path)), style="qdq")
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ortnpu.export.exact"] == "false" and "half to even" in props[
        "ortnpu.export.notes"]
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                disabled_optimizers=["QDQSelectorActionTransformer"])
    got = sess.run(None, case.inputs)[0]
    dev = int(np.abs(got.astype(np.int64) - case.expected[0].astype(np.int64)).max())
    print("qdq largest deviation on test_conv_3x3_pad1:", dev)
    assert dev <= 2


def test_public_api_name_is_callable_after_import() -> None:
    import ortnpu
    import ortnpu.exporters as package  # the implementation package has its own name

    assert ortnpu.export is package.export
    assert ortnpu.export(_chain_model()).graph.node


def test_bad_input_raises_ortnpu_errors() -> None:
    model = _chain_model()
    with pytest.raises(UnsupportedError, match="style"):
        export(model, style="nope")
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(model)
    w = next(i for i in dynamic.graph.initializer if i.name == "w")
    dynamic.graph.initializer.remove(w)
    dynamic.graph.input.append(helper.make_tensor_value_info("w", TensorProto.INT8, None))
    with pytest.raises(UnsupportedError, match="'conv'.*'w'"):
        export(dynamic)


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "npu.onnx"
    onnx.save(_chain_model(), src)
    for style in ("integer", "fake-quant", "qdq"):
        out = tmp_path / f"{style}.onnx"
        assert main(["export", str(src), "--style", style, "-o", str(out)]) == 0
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert "exact: true" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx")]) == 2


@pytest.mark.parametrize("target", ["tflite-a16w8", "tflite-int8", "tosa-int8", "tosa-int16"])
def test_export_of_attention_equals_the_simulator_on_stock_onnxruntime(target: str) -> None:
    """Float attention MatMuls on the CPU read boundary dequantizations; in the export those are
    Cast/Sub/Mul, and stock onnxruntime (default level) folds a Mul by a scalar into a following
    MatMul (FusedMatMul: other rounding) and turns DQ -> op -> Q into its int8 kernels; the
    export must give the simulator's numbers anyway (zoo ViT and PP-OCR rec on 16x8, issue 13)."""
    from graphs import transformer

    import ortnpu

    rng = np.random.default_rng(3)
    model = transformer(blocks=2, tokens=16, width=32)
    npu = ortnpu.quantize(model, target,
                          (rng.standard_normal((16, 16, 32)) * 2).astype(np.float32))
    x = (rng.standard_normal((1, 16, 32)) * 2).astype(np.float32)
    want = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, {"x": x})[0]
    exported = ort.InferenceSession(ortnpu.export(npu).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    assert np.array_equal(exported.run(None, {"x": x})[0], want)
    assert np.array_equal(ortnpu.InferenceSession(npu).run(None, {"x": x})[0], want)


def test_a_model_without_npu_nodes_is_refused(tmp_path: Path, capsys) -> None:
    """A float model used to "export" as itself with success: the user forgot to quantize."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "float_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(UnsupportedError, match="no NPU node to export; quantize the model first"):
        export(model)
    onnx.save(model, tmp_path / "float.onnx")
    out = tmp_path / "out.onnx"
    assert main(["export", str(tmp_path / "float.onnx"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no NPU node to export" in err[0] and not out.exists()
