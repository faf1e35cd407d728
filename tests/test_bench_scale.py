"""The benchmarks that score through evaluate_accuracy: the accuracy table (same numbers as the
direct computation it replaced) and ``python -m ortnpu.bench scale`` (table, checks, estimate)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import images, small_cnn

import ortnpu
from ortnpu.bench import accuracy, scale
from ortnpu.bench.models import BenchModel


def _direct(bench: BenchModel, npu: onnx.ModelProto) -> tuple[float, float, float, int]:
    """score, agreement, confident agreement and confident count as the table computed them
    before it used the evaluator (whole arrays, one pass)."""
    optimized = ortnpu.optimize(onnx.load(str(bench.path)))
    ref = ort.InferenceSession(optimized.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": bench.test})[0]
    out = ortnpu.InferenceSession(npu).run(None, {"x": bench.test})[0]
    if bench.labels is not None:
        score = float((out.argmax(1) == bench.labels).mean())
    else:
        top5 = np.argsort(out, axis=1)[:, -5:]
        score = float(np.mean([ref.argmax(1)[i] in top5[i] for i in range(len(ref))]))
    agree = out.argmax(1) == ref.argmax(1)
    sure = accuracy.confident_mask(ref)
    return score, float(agree.mean()), float(agree[sure].mean()), int(sure.sum())


@pytest.mark.parametrize("labelled", [True, False])
def test_accuracy_table_numbers_unchanged(tmp_path: Path, labelled: bool) -> None:
    path = tmp_path / "small.onnx"
    onnx.save(small_cnn(), str(path))
    test = images(300, seed=5) * 8   # more than one evaluator batch, 3/4 of it confident
    labels = np.arange(300) % 5 if labelled else None
    bench = BenchModel("small", path, images(64) * 8, test, labels, "synthetic")
    rows = accuracy.measure(bench, methods=("minmax",), onnxruntime=False)
    npu = ortnpu.quantize(ortnpu.optimize(onnx.load(str(path))), "tflite-int8", bench.calib,
                          method="minmax", optimize=False)
    got = rows[1]
    assert (got.score, got.agreement, got.confident, got.confident_n) == _direct(bench, npu)
    assert 0 < got.confident_n < 300
    assert rows[0].agreement == 1.0 and rows[0].samples == got.samples == 300


def test_accuracy_onnxruntime_row_is_the_shared_baseline(tmp_path: Path) -> None:
    """The bench's onnxruntime row is ``quantize_with_onnxruntime`` on the same calibration
    samples (one baseline for bench, speed, QDQ import and fuzzer), scored the same way."""
    from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds

    path = tmp_path / "small.onnx"
    onnx.save(small_cnn(), str(path))
    bench = BenchModel("small", path, images(16) * 8, images(40, seed=3) * 8,
                       np.arange(40) % 5, "synthetic")
    rows = accuracy.measure(bench, methods=(), onnxruntime=True)
    optimized = ortnpu.optimize(onnx.load(str(path)))
    qdq = quantize_with_onnxruntime(optimized, sample_feeds("x", bench.calib))
    out = ort.InferenceSession(qdq.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": bench.test})[0]
    got = rows[-1]
    assert got.quantizer.startswith("onnxruntime quantize_static")
    assert got.score == float((out.argmax(1) == bench.labels).mean())
    assert len(rows) == 2 and got.samples == 40


def test_accuracy_rounding_rows_say_which_rounding(tmp_path: Path) -> None:
    """``--rounding auto,nearest --adaround both --adaround-iterations N``: one row per
    rounding, the default named with what it resolved to, AdaRound with its steps."""
    path = tmp_path / "small.onnx"
    onnx.save(small_cnn(), str(path))
    bench = BenchModel("small", path, images(16) * 8, images(20, seed=3) * 8, None, "synthetic")
    rows = accuracy.measure(bench, methods=("minmax",), onnxruntime=False,
                            roundings=("auto", "nearest", "adaround"), adaround_iterations=5)
    assert [r.quantizer for r in rows[1:]] == [
        "ortnpu tflite-int8 (minmax, gptq rounding (default))",
        "ortnpu tflite-int8 (minmax, nearest rounding)",
        "ortnpu tflite-int8 (minmax, adaround 5)"]


def test_scale_measures_checks_and_prints(tmp_path: Path) -> None:
    model = Path(str(files("ortnpu") / "data" / "digits_cnn.onnx"))
    d = np.load(str(files("ortnpu") / "data" / "digits_data.npz"))
    npu = tmp_path / "npu.onnx"
    onnx.save(ortnpu.quantize(onnx.load(str(model)), "tflite-int8", d["calib_x"][:32]), str(npu))
    shards = scale._shards(tmp_path, "digits", d["test_x"][:90], d["test_y"][:90], 50)
    case = scale.Case("digits_cnn", model, npu, shards, 20, "digits")
    setups = (("1 process, 1 thread", "local", 1, 1), ("1 process, all threads", "local", 1, None))
    m = scale.measure([case], setups, progress=False, burn=200_000)
    assert [r.setup for r in m.runs] == [s[0] for s in setups] and not m.notes
    assert len(m.machine) == 2 and all(v > 0 for v in m.machine)
    assert all(r.identical and r.samples == 90 for r in m.runs)
    assert m.runs[0].speedup == 1.0 and m.runs[1].speedup is not None
    table = scale.table(m).splitlines()
    assert len(table) == 4 and table[2].startswith("| digits_cnn | 90 | 1 process, 1 thread |")
    assert table[3].count("| yes |") == 1
    top1 = m.runs[0].numbers["npu_top1"]
    assert f"{100 * top1:.2f} %" in table[2]
    est = scale.estimate(m, 50_000, "digits_cnn")
    assert f"{50_000 / m.runs[0].rate / 60:.1f} min" in est and "/ N" in est
    m.runs[1].identical = False
    assert "| NO |" in scale.table(m)
