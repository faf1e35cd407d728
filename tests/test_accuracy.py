"""evaluate_accuracy / ``ortnpu accuracy``: numbers checked against direct runs, identical with
workers, the datasets agree with each other, resume, bad input."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ortnpu
from ortnpu.accuracy import AccuracyResult, evaluate_accuracy
from ortnpu.cli import main
from ortnpu.datasets import ImageFolder, NpzShards
from ortnpu.errors import CalibrationError, ModelError

N = 180   # samples of the digits test set used (not a multiple of the batch: a short last one)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    model = str(files("ortnpu") / "data" / "digits_cnn.onnx")
    d = np.load(str(files("ortnpu") / "data" / "digits_data.npz"))
    tmp = tmp_path_factory.mktemp("acc")
    npu = ortnpu.quantize(onnx.load(model), "tflite-int8", d["calib_x"][:64])
    onnx.save(npu, str(tmp / "npu.onnx"))
    x, y = d["test_x"][:N], d["test_y"][:N]
    np.savez(tmp / "test.npz", test_x=x, test_y=y)
    np.savez(tmp / "a.npz", x=x[:100], labels=y[:100])
    np.savez(tmp / "b.npz", x=x[100:], labels=y[100:])
    return {"model": model, "npu": str(tmp / "npu.onnx"), "x": x, "y": y, "tmp": tmp}


@pytest.fixture(scope="module")
def local(digits: dict) -> AccuracyResult:
    return evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                             batch=32)


def test_numbers_match_direct_runs(digits: dict, local: AccuracyResult) -> None:
    ref = ort.InferenceSession(digits["model"]).run(None, {"image": digits["x"]})[0]
    got = ortnpu.InferenceSession(digits["npu"]).run(None, {"image": digits["x"]})[0]
    y = digits["y"]
    assert local.samples == N and local.batches == 6
    assert local.float_top1 == (ref.argmax(1) == y).sum() / N
    assert local.npu_top1 == (got.argmax(1) == y).sum() / N
    assert local.agreement == (ref.argmax(1) == got.argmax(1)).sum() / N
    top5 = np.argsort(-got, 1, kind="stable")[:, :5]
    assert local.npu_topk == (top5 == y[:, None]).any(1).sum() / N
    assert sum(c["samples"] for c in local.per_class) == N
    for c in local.per_class:
        sel = y == c["class"]
        assert c["npu"] == (got.argmax(1)[sel] == c["class"]).sum() / sel.sum()
    assert 0 < local.outputs["probs"].sqnr_db < 200 and local.outputs["probs"].count == ref.size
    assert "top-1: float" in local.to_text() and json.loads(local.to_json())["samples"] == N


def _one_value(f: dict, q: dict, labels: np.ndarray | None) -> dict:
    return {"m": 1.0}   # not one value per sample: refused by whichever worker scores it


def test_two_workers_identical_bit_for_bit(digits: dict, local: AccuracyResult) -> None:
    par = evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                            batch=32, workers=2)
    assert par.engine == "processes" and par.workers == 2
    assert par.numbers() == local.numbers()   # floats compared exactly
    # a generator: its batches travel with their tasks (the dataset object is not pickled)
    pairs = evaluate_accuracy(digits["model"], digits["npu"],
                              zip(digits["x"], digits["y"], strict=True), batch=32, workers=2)
    assert pairs.numbers() == local.numbers()
    with pytest.raises(CalibrationError, match="one value per sample"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          batch=32, workers=2, metric=_one_value)
    with pytest.raises(CalibrationError, match="picklable"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          batch=32, workers=2, metric=lambda f, q, y: {})


def test_npz_members_memory_mapped(tmp_path: Path) -> None:
    """Workers map a shard's uncompressed arrays and read only their rows; everything else is
    read whole, with the same values."""
    from ortnpu.cli.files import read_arrays
    from ortnpu.datasets import _mapped

    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = np.asfortranarray(np.arange(12).reshape(3, 4))
    np.savez(tmp_path / "s.npz", a=a, f=f, empty=np.zeros((0, 3)))
    np.savez_compressed(tmp_path / "c.npz", a=a)
    np.save(tmp_path / "p.npy", a)
    for name, key, mapped in (("s.npz", "a", True), ("s.npz", "f", True),
                              ("s.npz", "empty", False), ("c.npz", "a", False),
                              ("p.npy", "p", True)):
        path = str(tmp_path / name)
        got = _mapped(path, key, read_arrays(path))
        assert isinstance(got, np.memmap) == mapped, (name, key)
        want = read_arrays(path)[key]
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert got.flags.f_contiguous == want.flags.f_contiguous


def test_datasets_agree(digits: dict, local: AccuracyResult) -> None:
    shards = evaluate_accuracy(digits["model"], digits["npu"],
                               NpzShards([digits["tmp"] / "a.npz", digits["tmp"] / "b.npz"]),
                               batch=32)
    pairs = evaluate_accuracy(digits["model"], digits["npu"],
                              zip(digits["x"], digits["y"], strict=True), batch=32)
    assert pairs.numbers() == local.numbers()
    # other batch boundaries: the same counts (float sums may differ in the last bits)
    assert shards.samples == N and shards.float_top1 == local.float_top1
    assert shards.npu_top1 == local.npu_top1 and shards.per_class == local.per_class


def test_user_metric(digits: dict) -> None:
    def confidence(f: dict, q: dict, labels: np.ndarray | None) -> dict:
        return {"npu_conf": q["probs"].max(1), "correct": q["probs"].argmax(1) == labels}

    pairs = zip(digits["x"], digits["y"], strict=True)
    res = evaluate_accuracy(digits["model"], digits["npu"], pairs, batch=50, metric=confidence)
    got = ortnpu.InferenceSession(digits["npu"]).run(None, {"image": digits["x"]})[0]
    assert res.user["correct"] == res.npu_top1
    assert res.user["npu_conf"] == pytest.approx(float(got.max(1).astype(np.float64).mean()))
    with pytest.raises(CalibrationError, match="one value per sample"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          metric=lambda f, q, y: {"m": 1.0})


def test_resume_from_a_partial_file(digits: dict, local: AccuracyResult,
                                    tmp_path: Path) -> None:
    part = tmp_path / "run.partial"
    full = evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                             batch=32, checkpoint=part)
    lines = part.read_text().splitlines()
    assert len(lines) == 1 + 6 and full.numbers() == local.numbers()
    # interrupted after 2 batches, in the middle of writing the third
    part.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    res = evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                            batch=32, checkpoint=part)
    assert res.resumed == 2 and res.numbers() == local.numbers()
    with pytest.raises(CalibrationError, match="another evaluation.*batch"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          batch=16, checkpoint=part)


def test_image_folder_matches_npz(digits: dict, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    pixels = np.round(digits["x"][:40, 0] * 255).astype(np.uint8)
    labels = digits["y"][:40]
    order = []
    for i, (img, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    for label in sorted({f"class{v}" for v in labels}):
        order += [i for i in range(40) if f"class{labels[i]}" == label]
    np.savez(tmp_path / "same.npz", x=(pixels[order, None] / 255.0).astype(np.float32),
             y=labels[order])
    folder = evaluate_accuracy(digits["model"], digits["npu"], tmp_path / "images", batch=16)
    npz = evaluate_accuracy(digits["model"], digits["npu"], tmp_path / "same.npz", batch=16)
    assert folder.numbers() == npz.numbers()
    assert ImageFolder(tmp_path / "images").classes == sorted({f"class{v}" for v in labels})


def test_bad_input(digits: dict, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="labels 0..12 outside"):
        evaluate_accuracy(digits["model"], digits["npu"],
                          [(digits["x"][:4], np.array([0, 1, 2, 12]))])
    with pytest.raises(ModelError, match="no output 'nope'"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          output="nope")
    with pytest.raises(CalibrationError, match="not a folder|image folder"):
        evaluate_accuracy(digits["model"], digits["npu"], tmp_path / "missing.txt")
    with pytest.raises(CalibrationError, match="unknown engine"):
        evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                          engine="dask")


def test_cli(digits: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.json"
    assert main(["accuracy", digits["model"], digits["npu"], "--data",
                 str(digits["tmp"] / "test.npz"), "--batch", "32", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["samples"] == N
    assert not Path(str(out) + ".partial").exists()
    assert "top-1 agreement" in capsys.readouterr().out
    for bad in (["--metric", "nomodule"], ["--metric", "no_such_module_x:f"],
                ["--mean", "a,b"], ["--workers", "0"]):
        assert main(["accuracy", digits["model"], digits["npu"], "--data",
                     str(digits["tmp"] / "test.npz"), *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("ortnpu accuracy: error:") for line in err)


@pytest.mark.slow
def test_ray_identical(digits: dict, local: AccuracyResult, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.data")
    import ray

    # Ray's workers put the driver's working directory first on sys.path: outside the source
    # checkout, they import the installed ortnpu (evaluate_accuracy refuses another one)
    monkeypatch.chdir(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        res = evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                                batch=32, workers=2, engine="ray")
    finally:
        ray.shutdown()
    assert res.engine == "ray" and res.numbers() == local.numbers()


def test_workers_fork_from_a_preloaded_server() -> None:
    """Workers come from a fork server that imported onnxruntime once (not from this process,
    whose onnxruntime threads must never be forked), so a later evaluation's workers start
    without importing it again."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from ortnpu.accuracy import worker_context

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform: workers are spawned")
    ctx = worker_context()
    assert ctx.get_start_method() == "forkserver"
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        parent = pool.submit(os.getppid).result()
        preloaded = pool.submit(eval, "'onnxruntime' in __import__('sys').modules").result()
    assert parent != os.getpid()
    assert preloaded


def test_worker_refuses_another_ortnpu(digits: dict) -> None:
    """A worker that imported another ortnpu (a source checkout on its path) stops the run."""
    from ortnpu.accuracy import _Config, _Scorer
    from ortnpu.datasets import as_dataset

    model = onnx.load(digits["model"]).SerializeToString()
    config = _Config(model, model, as_dataset(digits["tmp"] / "test.npz"), "probs", 5, None,
                     "/somewhere/else/ortnpu")
    with pytest.raises(ModelError, match="imported ortnpu from .* but the run started from "
                                         "/somewhere/else/ortnpu"):
        _Scorer(config)


def test_html_page(digits: dict, local: AccuracyResult, tmp_path: Path,
                   capsys: pytest.CaptureFixture) -> None:
    page = local.to_html(class_names=[f"digit{i}" for i in range(10)])
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")   # self-contained
    assert f"{100 * local.npu_top1:.2f}%" in page and "<svg" in page
    worst = max(local.per_class, key=lambda c: (c["drop"], -c["class"]))
    assert f"{worst['class']} (digit{worst['class']})" in page
    assert page.count('<td class="n">') == 4 * len(local.per_class) + 5   # + one output
    assert "SQNR (dB)" in page and local.output in page
    # unlabelled: no per-class section, the outputs still
    bare = evaluate_accuracy(digits["model"], digits["npu"], [(x, None) for x in digits["x"][:8]],
                             progress=False)
    assert "Per class" not in bare.to_html() and "Outputs" in bare.to_html()
    html = tmp_path / "r.html"
    assert main(["accuracy", digits["model"], digits["npu"], "--data",
                 str(digits["tmp"] / "test.npz"), "--batch", "32", "--html", str(html)]) == 0
    assert f"wrote {html}" in capsys.readouterr().out
    assert "ortnpu accuracy: " in html.read_text()


def test_threads_and_onnxruntime_baseline(digits: dict, local: AccuracyResult) -> None:
    from ortnpu.domain import kernels

    native = kernels._native()
    before = native.get_threads() if native else None
    one = evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz",
                            batch=32, threads=1)
    assert one.numbers() == local.numbers()
    if native:   # the C kernels' process-wide thread count is the caller's again
        assert native.get_threads() == before
    # the float model scored against itself as plain onnxruntime runs it
    same = evaluate_accuracy(digits["model"], digits["model"], digits["tmp"] / "test.npz",
                             batch=32, npu_runtime="onnxruntime")
    assert same.agreement == 1.0 and same.float_top1 == same.npu_top1 == local.float_top1
    assert same.outputs["probs"].sqnr_db == float("inf")
    for bad in ({"threads": 0}, {"npu_runtime": "tflite"}):
        with pytest.raises(CalibrationError, match="threads|npu_runtime"):
            evaluate_accuracy(digits["model"], digits["npu"], digits["tmp"] / "test.npz", **bad)


def test_sums_do_not_depend_on_blas_threads(tmp_path: Path) -> None:
    """Ray actors run BLAS on one thread; the error sums must not follow BLAS's split of a dot
    product over threads (they did with np.dot: the Ray engine differed in the last bits)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from ortnpu.comparison import _Accumulator; "
            "rng = np.random.default_rng(0); a = rng.standard_normal(1 << 20); "
            "b = a + rng.standard_normal(1 << 20) * 1e-3; acc = _Accumulator('t'); "
            "acc.update(a, b); print(repr(acc.state()))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=tmp_path, env={**os.environ, "OPENBLAS_NUM_THREADS": n,
                                            "OMP_NUM_THREADS": n}).stdout for n in ("1", "2")}
    assert len(outs) == 1, outs
