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
                 "--method", "percentile", "--int16", "c3", "--force-cpu", "softmax"]) == 0
    text = capsys.readouterr().out
    assert "nodes on the NPU" in text and "CPU nodes (1) by reason and op type" in text
    assert "Softmax 'softmax': forced to the CPU by the user" in text
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


def test_unknown_int16_and_force_cpu_names_are_refused(model_file: Path, tmp_path: Path,
                                                       capsys) -> None:
    """A typo in --int16 / --force-cpu used to be ignored silently."""
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=images(8))
    out = tmp_path / "npu.onnx"
    for option, typo, close in (("--int16", "c33", "'c3'"), ("--force-cpu", "Sofmax", "'Softmax'")):
        assert main(["quantize", str(model_file), "--calib", str(calib), "-o", str(out),
                     option, typo]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{option} {typo!r} is not" in err[0], err
        assert f"did you mean {close}" in err[0], err
        assert not out.exists()
    assert main(["quantize", str(model_file), "--calib", str(calib), "-o", str(out),
                 "--force-cpu", "Softmax", "--int16", "c3"]) == 0


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
    assert "goal reached" in capsys.readouterr().out


def _vad_npz(path: Path, n: int = 5, rate: bool = True) -> None:
    rng = np.random.default_rng(2)
    arrays = {"x": rng.standard_normal((n, 16)).astype(np.float32),
              "h": rng.standard_normal((2, n, 4)).astype(np.float32)}   # batch on axis 1
    if rate:
        arrays["sr"] = np.array(16000, np.int64)
    np.savez(path, **arrays)


def test_quantize_freezes_an_integer_input_and_folds_its_if(tmp_path: Path, capsys) -> None:
    from graphs import vad_with_if

    import ortnpu

    model = tmp_path / "vad.onnx"
    onnx.save(vad_with_if(), str(model))
    calib = tmp_path / "calib.npz"
    _vad_npz(calib, rate=False)
    out = tmp_path / "npu.onnx"
    assert main(["quantize", str(model), "--calib", str(calib), "-o", str(out),
                 "--freeze", "sr=16000", "--input-shape", "x=1,16",
                 "--input-shape", "h=2,1,4"]) == 0
    npu = onnx.load(str(out))
    assert [i.name for i in npu.graph.input] == ["x", "h"]
    assert not any(n.op_type == "If" for n in npu.graph.node)
    assert npu.graph.input[1].type.tensor_type.shape.dim[1].dim_value == 1
    capsys.readouterr()
    assert main(["compare", str(model), str(out), "--data", str(calib)]) == 2
    assert "'sr'" in capsys.readouterr().err
    from ortnpu.comparison import compare

    with pytest.raises(ortnpu.ModelError, match=r"freeze \['sr'\] here too"):
        compare(str(model), str(out), dict(np.load(calib)))
    assert main(["compare", str(model), str(out), "--data", str(calib),
                 "--freeze", "sr=16000"]) == 0
    assert "output y: SQNR" in capsys.readouterr().out


@pytest.mark.parametrize("batch", ["batch", 1])
def test_calibration_cuts_each_input_on_its_own_batch_axis(tmp_path: Path, batch) -> None:
    """h is [2, batch, 4]: found from the batch symbol, or for a fixed batch of 1 from the
    one axis of size 1 where the array is longer; sr (int64 scalar) is the same for every
    sample. Before: every array was cast to float32 and cut on axis 0."""
    from graphs import vad_like

    from ortnpu.cli.cmd_quantize import load_calibration

    model = vad_like(batch)
    calib = tmp_path / "calib.npz"
    _vad_npz(calib)
    data = load_calibration(str(calib), ["x", "sr", "h"], model=model)
    assert len(data) == 5
    assert [data[0][k].shape for k in ("x", "sr", "h")] == [(1, 16), (), (2, 1, 4)]
    assert data[0]["sr"].dtype == np.int64
    rng_h = np.load(calib)["h"]
    assert np.array_equal(data[3]["h"][:, 0], rng_h[:, 3])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "npu.onnx"
    assert main(["quantize", str(path), "--calib", str(calib), "-o", str(out)]) == 0
    # an explicit axis wins; a wrong one is a one-line error naming the input
    assert main(["quantize", str(path), "--calib", str(calib), "-o", str(out),
                 "--batch-axis", "h=1", "--batch-axis", "sr=none"]) == 0
    assert main(["quantize", str(path), "--calib", str(calib), "-o", str(out),
                 "--batch-axis", "h=7"]) == 2
    assert main(["quantize", str(path), "--calib", str(calib), "-o", str(out),
                 "--batch-axis", "state=1"]) == 2


def test_run_and_compare_feed_a_fixed_batch_model_sample_by_sample(tmp_path: Path,
                                                                    capsys) -> None:
    """A batch-1 model with an int64 scalar and a state whose batch axis is 1: run joins the
    per-sample outputs, compare loops over the samples (before: compare refused the scalar,
    run fed 5 samples to a batch-1 model)."""
    from graphs import vad_like

    import ortnpu

    model = vad_like(1)
    path, npu_path = tmp_path / "m.onnx", tmp_path / "npu.onnx"
    onnx.save(model, str(path))
    data = tmp_path / "data.npz"
    _vad_npz(data)
    assert main(["quantize", str(path), "--calib", str(data), "-o", str(npu_path)]) == 0
    out = tmp_path / "out.npz"
    assert main(["run", str(npu_path), "--inputs", str(data), "-o", str(out)]) == 0
    got = np.load(out)["y"]
    arrays = np.load(data)
    sess = ortnpu.InferenceSession(str(npu_path))
    want = np.concatenate([sess.run(None, {"x": arrays["x"][i:i + 1], "sr": arrays["sr"],
                                           "h": arrays["h"][:, i:i + 1]})[0]
                           for i in range(5)])
    assert got.shape == (5, 4) and np.array_equal(got, want)
    capsys.readouterr()
    assert main(["compare", str(path), str(npu_path), "--data", str(data)]) == 0
    assert "5 sample" in capsys.readouterr().out
