"""CLI: quantize from an .npz or a folder, run, autofix; errors are one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import images, small_cnn

from ortnpu.cli import main


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "float.onnx"
    onnx.save(small_cnn(), str(path))
    return path


def test_quantize_from_npz_then_run(model_file: Path, tmp_path: Path, capsys) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=images(16))
    out = tmp_path / "npu.onnx"
    assert main(["quantize", str(model_file), "--calib", str(calib), "-o", str(out),
                 "--method", "percentile", "--int16", "c3"]) == 0
    text = capsys.readouterr().out
    assert "nodes on the NPU" in text and "CPU nodes (1) by reason and op type" in text
    assert "Softmax 'softmax': ortnpu has no integer lowering for Softmax" in text
    npu = onnx.load(str(out))
    assert any(n.op_type == "Conv_i16" for n in npu.graph.node)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=images(3))
    result = tmp_path / "out.npz"
    assert main(["run", str(out), "--inputs", str(inputs), "-o", str(result)]) == 0
    assert np.load(result)["probs"].shape == (3, 5)


def test_quantize_from_a_folder_of_npy_samples(model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for k, x in enumerate(images(6)):
        np.save(folder / f"{k}.npy", x)
    assert main(["quantize", str(model_file), "--calib", str(folder), "-o",
                 str(tmp_path / "npu.onnx")]) == 0


def test_bad_input_is_one_line_and_exit_2(model_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["quantize", str(tmp_path / "missing.onnx"), "--calib", "x.npz", "-o",
                 str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load the model" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", str(model_file), "--calib", str(empty), "-o",
                 str(tmp_path / "o.onnx")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["quantize", str(model_file), "--calib", str(model_file), "-o",
                 str(tmp_path / "o.onnx")]) == 2
    assert main(["quantize", str(model_file), "--target", "nope", "--calib", str(model_file),
                 "-o", str(tmp_path / "o.onnx")]) == 2


def test_autofix_cli(model_file: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    x = images(64, seed=3)
    labels = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0].argmax(1)
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, labels=labels)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=images(16))
    code = main(["autofix", str(model_file), "--calib", str(calib), "--eval", str(data),
                 "--budget", "0.02", "-o", str(tmp_path / "npu.onnx")])
    assert code == 0
    assert "within budget" in capsys.readouterr().out
