"""CLI: ortnpu optimize / evaluate / opt-and-eval, exit codes, help; real models when slow."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_report import ocr_model, small_cnn

from ortnpu.cli import EXIT_BAD_INPUT, EXIT_FAILURES, EXIT_OK, main


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.onnx"
    onnx.save(small_cnn(), path)
    return path


def test_optimize_command(model_file: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "opt.onnx"
    code = main(["optimize", str(model_file), "-o", str(out), "--input-shape", "x=1,1,8,8"])
    text = capsys.readouterr().out
    assert code == EXIT_OK, text
    assert "FoldBatchNorm: 1 change(s)" in text and "outputs unchanged" in text
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "BatchNormalization" not in ops


def test_evaluate_command(model_file: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    js, html = tmp_path / "r.json", tmp_path / "r.html"
    code = main(["evaluate", str(model_file), "--target", "tflite-int8", "--input-shape",
                 "x=1,1,8,8", "--json", str(js), "--html", str(html)])
    text = capsys.readouterr().out
    assert code == EXIT_OK, text
    d = json.loads(js.read_text())
    # cubic Resize has no integer lowering; the unfolded BatchNormalization neither (Softmax
    # runs on the NPU: TFLite's integer SOFTMAX)
    assert d["summary"]["cpu_nodes"] == 2
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert "Resize 'up'" in text
    code = main(["evaluate", str(model_file), "--input-shape", "x=1,1,8,8", "--require-npu",
                 "--quiet"])
    assert code == EXIT_FAILURES
    code = main(["evaluate", str(model_file), "--input-shape", "x=1,1,8,8", "--force-cpu",
                 "Conv", "--force-npu", "up,softmax", "--json", str(js)])
    d = json.loads(js.read_text())
    cpu = {c["name"]: c["reason"] for c in d["partition"]["cpu_nodes"]}
    assert code == EXIT_OK and {"conv1", "dw2"} <= set(cpu)
    assert "forced to the NPU by the user, but mode 'cubic' has no TFLite kernel" in cpu["up"]


def test_opt_and_eval_command(model_file: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    js = tmp_path / "r.json"
    code = main(["opt-and-eval", str(model_file), "--input-shape", "x=1,1,8,8", "-o",
                 str(tmp_path / "o.onnx"), "--json", str(js)])
    assert code == EXIT_OK, capsys.readouterr().out
    d = json.loads(js.read_text())
    assert d["verification"]["ok"] and d["optimize"]
    assert all(c["reason"] for c in d["partition"]["cpu_nodes"])


@pytest.mark.parametrize("argv", [
    ["evaluate", "missing.onnx"],
    ["evaluate", "{model}", "--target", "no-such-target"],
    ["evaluate", "{model}", "--force-cpu", "nope"],
    ["optimize", "{model}", "-o", "{tmp}/o.onnx", "--input-shape", "bad"],
    ["optimize", "{model}", "-o", "{tmp}/o.onnx", "--input-shape", "zz=1,2"],
    ["evaluate", "{model}", "--npu-outputs", "nope"],
])
def test_bad_input_exit_code(argv: list, model_file: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    argv = [a.format(model=model_file, tmp=tmp_path) for a in argv]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["optimize", "evaluate", "opt-and-eval"])
def test_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Exit codes" in text and "--input-shape" in text


def test_python_dash_m(model_file: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ortnpu", "evaluate", str(model_file),
                           "--input-shape", "x=1,1,8,8", "--quiet"], capture_output=True,
                          text=True, cwd=root, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "NPU" in proc.stdout


# --- real models (slow): the Done-when of the optimize/evaluate feature ----------------------

def _real_models() -> list:
    from ortnpu.models_cache import cached_model

    bundled = Path(__file__).resolve().parents[1] / "ortnpu" / "data" / "digits_cnn.onnx"
    cases = [
        ("digits_cnn", bundled if bundled.is_file() else None, None),
        ("ppocr-det", ocr_model("ch_PP-OCRv4_det_infer.onnx"), "x=1,3,320,320"),
        ("ppocr-rec", ocr_model("ch_PP-OCRv4_rec_infer.onnx"), "x=1,3,48,320"),
        ("ppocr-cls", ocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx"), "x=1,3,48,192"),
        ("mobilenet_v2", cached_model("mobilenet_v2.onnx"), None),
        ("fashion_resnet", cached_model("fashion_resnet.onnx"), None),
    ]
    return [pytest.param(path, shape, id=name) for name, path, shape in cases]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "shape"), _real_models())
def test_real_model_opt_and_eval(path: Path | None, shape: str | None, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    if path is None:
        pytest.skip("model not available (pip install rapidocr-onnxruntime, or build models/)")
    argv = ["opt-and-eval", str(path), "-o", str(tmp_path / "o.onnx"), "--json",
            str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")]
    if shape:
        argv += ["--input-shape", shape]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["verification"]["ok"], d["verification"]
    assert d["summary"]["npu_nodes"] > 0
    assert all(c["reason"] for c in d["partition"]["cpu_nodes"])
    assert np.isfinite(d["summary"]["latency_ms"])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from render_html_check import find_chromium, render

    if find_chromium() is not None:
        assert render(tmp_path / "r.html") == []
