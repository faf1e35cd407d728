"""Calibration: data forms, streaming histograms and the range methods."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import images, small_cnn

import ortnpu
from ortnpu.quant import HistogramCalibrator, MinMaxCalibrator, calibrate
from ortnpu.quant.calibrate import METHODS, iter_batches


def gaussian_stream(calibrator, batches: int = 20, outlier: float = 40.0) -> None:
    rng = np.random.default_rng(0)
    for k in range(batches):
        calibrator.collect("t", rng.standard_normal(5000) * (1 + 0.05 * k))
    calibrator.collect("t", np.array([outlier]))


def test_histogram_memory_does_not_grow_with_samples() -> None:
    c = HistogramCalibrator(method="percentile", bins=1024)
    gaussian_stream(c, batches=5)
    size = c.hists["t"].counts.nbytes
    gaussian_stream(c, batches=50, outlier=400.0)   # the range doubles several times
    assert c.hists["t"].counts.nbytes == size
    assert c.hists["t"].counts.sum() == 5 * 5000 + 50 * 5000 + 2
    assert c.hists["t"].limit >= 400.0


@pytest.mark.parametrize("method", METHODS)
def test_methods_give_ranges_inside_the_extremes(method: str) -> None:
    c = HistogramCalibrator(method=method)
    gaussian_stream(c)
    lo, hi = c.range_of("t")
    exact = MinMaxCalibrator()
    gaussian_stream(exact)
    mlo, mhi = exact.range_of("t")
    if method == "headroom":   # beyond the extremes by design: for unseen samples
        assert lo <= mlo < 0 < mhi <= hi
        return
    assert mlo <= lo < 0 < hi <= mhi
    if method == "minmax":
        assert (lo, hi) == (mlo, mhi)
    elif method in ("mse", "auto"):
        assert hi < mhi         # trades the clipped outlier against a finer step
    else:
        assert hi < 0.5 * mhi   # the single outlier at 40 is clipped away


def _sample_extremes(rows: np.ndarray) -> tuple[float, float]:
    """What ``headroom`` should give for samples ``rows`` [samples, values], by hand."""
    from ortnpu.quant.calibrate import HEADROOM_Z

    lows, highs = rows.min(axis=1), rows.max(axis=1)
    return (min(rows.min(), lows.mean() - HEADROOM_Z * lows.std(ddof=1)),
            max(rows.max(), highs.mean() + HEADROOM_Z * highs.std(ddof=1)))


def test_headroom_widens_to_the_fitted_sample_extremes() -> None:
    """Each side goes to mean ∓ 2.326 std of the samples' extremes (the one-sided 99 % point
    of a normal fit) when that is beyond the extremes seen; batch rows are samples, so one
    batch of 40 rows gives what 40 batches of one row give."""
    rng = np.random.default_rng(5)
    rows = rng.uniform(-1.0, 1.0, (40, 64)) * rng.uniform(2.0, 6.0, (40, 1))
    want = _sample_extremes(rows)
    assert want[0] < rows.min() and want[1] > rows.max()   # short tails: both sides widen
    one_by_one, at_once = HistogramCalibrator(method="headroom"), \
        HistogramCalibrator(method="headroom")
    for row in rows:
        one_by_one.collect("t", row[None, :])
    at_once.collect("t", rows)
    for c in (one_by_one, at_once):
        assert np.allclose(c.range_of("t"), want, rtol=1e-12, atol=0)
        assert c.observed_range("t") == (rows.min(), rows.max())
    # an outlier sample past the fitted point keeps the observed extreme on its side
    rows[7, 3] = 100.0
    c = HistogramCalibrator(method="headroom")
    c.collect("t", rows)
    assert c.range_of("t")[1] == 100.0 and np.isclose(c.range_of("t")[0],
                                                      _sample_extremes(rows)[0])


def test_headroom_keeps_sign_and_needs_two_samples() -> None:
    """A non-negative tensor (a ReLU's) keeps its lower end at or above zero; a rank-1 tensor
    is one sample (its axis 0 is no batch), and one sample or identical ones widen nothing."""
    rng = np.random.default_rng(6)
    relu = rng.uniform(0.0, 1.0, (30, 50)) * rng.uniform(1.0, 3.0, (30, 1)) + \
        rng.uniform(0.0, 1.0, (30, 1))
    c = HistogramCalibrator(method="headroom")
    c.collect("r", relu)
    lo, hi = c.range_of("r")
    assert relu.min() > 0 and _sample_extremes(relu)[0] < 0
    assert lo == 0.0 and np.isclose(hi, _sample_extremes(relu)[1], rtol=1e-12, atol=0)
    assert hi > relu.max()
    single = HistogramCalibrator(method="headroom")
    single.collect("v", np.linspace(-2.0, 3.0, 100))          # rank 1: one sample
    assert single.range_of("v") == (-2.0, 3.0)
    same = HistogramCalibrator(method="headroom")
    for _ in range(5):
        same.collect("v", np.linspace(-2.0, 3.0, 100)[None, :])
    assert same.range_of("v") == (-2.0, 3.0)


def _relu6_like(n: int = 40000, seed: int = 0) -> np.ndarray:
    """Half exact zeros (a ReLU's), the rest a long tail saturating at 6 (ReLU6)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.zeros(n), np.minimum(rng.exponential(1.0, n), 6.0)]).astype(
        np.float32)


def test_entropy_does_not_clip_a_relu_output_for_its_zeros() -> None:
    """The KL search smeared the spike of exact zeros over a level and so always chose its
    smallest candidate: every ReLU6 output of MobileNetV2 was clipped at 2 (agreement 0.16)."""
    c = HistogramCalibrator(method="entropy")
    for part in np.array_split(_relu6_like(), 4):
        c.collect("t", part)
    assert c.hists["t"].zeros == 40000
    lo, hi = c.range_of("t")
    assert lo == 0.0 and hi > 5.0


def _quantization_mse(x: np.ndarray, lo: float, hi: float) -> float:
    from ortnpu.quant.params import activation_params
    from ortnpu.target import load_target

    p = activation_params(lo, hi, load_target("tflite-int8").arithmetic)
    return float(np.mean((p.dequantize(p.quantize(x)) - x) ** 2))


@pytest.mark.parametrize("kind", ["relu", "laplace", "outlier", "skewed"])
def test_auto_range_has_the_least_real_error(kind: str) -> None:
    """``auto`` scores ranges by a model of the error; measured on the real int8 grid it is
    never worse than any other method's range (within 1 %)."""
    rng = np.random.default_rng(3)
    x = {"relu": np.maximum(rng.normal(0.5, 2, 80000), 0),
         "laplace": rng.laplace(0, 1, 80000),
         "outlier": np.append(rng.normal(0, 1, 80000), 40.0),
         "skewed": np.concatenate([rng.normal(0, 0.3, 60000), rng.exponential(3, 20000)]),
         }[kind].astype(np.float32)
    errors = {}
    for method in METHODS:
        c = HistogramCalibrator(method=method)
        c.collect("t", x)
        errors[method] = _quantization_mse(x, *c.range_of("t"))
    assert errors["auto"] <= 1.01 * min(errors.values())


def test_auto_follows_the_target_grid() -> None:
    """A 16-bit grid makes rounding 256 times finer: clipping no longer pays."""
    x = np.append(np.random.default_rng(2).normal(0, 1, 80000), 12.0).astype(np.float32)
    eight, sixteen = HistogramCalibrator(), HistogramCalibrator(levels=65536, symmetric=True)
    for c in (eight, sixteen):
        c.collect("t", x)
    assert eight.range_of("t")[1] < 11.0
    assert sixteen.range_of("t")[1] == pytest.approx(12.0)


def test_unknown_method_and_unseen_tensor() -> None:
    with pytest.raises(ortnpu.CalibrationError, match="unknown calibration method"):
        HistogramCalibrator(method="magic")
    with pytest.raises(ortnpu.CalibrationError, match="never seen"):
        MinMaxCalibrator().range_of("x")


def test_data_forms_array_dicts_and_reader() -> None:
    x = images(10)
    assert sum(len(b["x"]) for b in iter_batches(x, ["x"])) == 10

    class Reader:  # the CalibrationDataReader protocol of onnxruntime.quantization
        def __init__(self) -> None:
            self.items = iter([{"x": x[i:i + 2]} for i in range(0, 10, 2)])

        def get_next(self):
            return next(self.items, None)

    model = small_cnn()
    a = calibrate(model, x).range_of("c1")
    b = calibrate(model, [{"x": x[i:i + 1]} for i in range(10)]).range_of("c1")
    c = calibrate(model, Reader()).range_of("c1")
    assert a == pytest.approx(b) and a == pytest.approx(c)
    with pytest.raises(ortnpu.CalibrationError, match="lacks input"):
        calibrate(model, [{"y": x}])
    with pytest.raises(ortnpu.CalibrationError, match="single-input"):
        list(iter_batches(x, ["a", "b"]))


@pytest.mark.parametrize("method", METHODS)
def test_quantize_with_each_method_stays_close_to_float(method: str) -> None:
    import onnxruntime as ort

    model = small_cnn()
    test = images(16, seed=9)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    npu = ortnpu.quantize(model, "tflite-int8", images(64), method=method, optimize=False)
    out = ortnpu.InferenceSession(npu).run(None, {"x": test})[0]
    # entropy clips the tails by design, which costs a little on smooth synthetic data
    assert np.abs(out - ref).max() < (0.04 if method == "entropy" else 0.02)


def _vad_samples(n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [{"x": rng.standard_normal((1, 16)).astype(np.float32) * 8000,
             "sr": np.array(16000, np.int64),
             "h": rng.standard_normal((2, 1, 4)).astype(np.float32)} for _ in range(n)]


def test_integer_input_is_fed_in_its_own_type() -> None:
    """An int64 sample rate was cast to float32: onnxruntime refused it without naming it."""
    from graphs import vad_like

    model = vad_like()
    calib = calibrate(model, _vad_samples())
    lo, hi = calib.range_of("x")
    assert lo < 0 < hi
    with pytest.raises(ortnpu.CalibrationError):
        calib.range_of("sr")   # no quantization range for an integer input
    npu = ortnpu.quantize(model, "tflite-int8", _vad_samples())
    feed = _vad_samples(1)[0]
    ref = ortnpu.InferenceSession(npu, fuse=False, native=False).run(None, feed)[0]
    assert np.array_equal(ortnpu.InferenceSession(npu).run(None, feed)[0], ref)
    # an int stored as whole floats is accepted; a value that is not one names the input
    as_float = [{**s, "sr": np.array(16000.0)} for s in _vad_samples(2)]
    calibrate(model, as_float)
    bad = [{**s, "sr": np.array(16000.5)} for s in _vad_samples(2)]
    with pytest.raises(ortnpu.CalibrationError, match=r"input 'sr' is INT64; got non-integer"):
        calibrate(model, bad)
    text = [{**s, "sr": np.array("16k")} for s in _vad_samples(2)]
    with pytest.raises(ortnpu.CalibrationError, match=r"input 'sr' \(INT64\) got an array"):
        calibrate(model, text)


@pytest.mark.slow
def test_no_method_collapses_mobilenet_v2() -> None:
    """On a real network (MobileNetV2, ImageNet weights), calibrated on scikit-image photos and
    scored on wallpaper crops: the old entropy agreed with float on 13 % of 300 crops."""
    import onnx
    import onnxruntime as ort

    from ortnpu import models_cache
    from ortnpu.bench import images as sources

    path = models_cache.cached_model("mobilenet_v2.onnx")
    photos = models_cache.cached_model("imagenet_photos.npz")
    if path is None or photos is None:
        pytest.skip("MobileNetV2 not built: python models/mobilenet_v2.py")
    try:
        crops = sources.wallpaper_crops(1000, models_cache.cache_dir() / "wallpaper_crops.npz")
    except sources.MissingSourceError as exc:
        pytest.skip(str(exc))
    with np.load(photos) as f:
        calib = f["x"][np.linspace(0, len(f["x"]) - 1, 64).round().astype(int)]
    test = sources.normalise(crops[np.linspace(0, len(crops) - 1, 100).round().astype(int)])
    model = ortnpu.optimize(onnx.load(str(path)))
    fsess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.concatenate([fsess.run(None, {"image": x[None]})[0] for x in test]).argmax(1)
    for method, floor in (("entropy", 0.45), ("auto", 0.6)):
        sess = ortnpu.InferenceSession(ortnpu.quantize(model, "tflite-int8", calib,
                                                       method=method, optimize=False))
        out = np.concatenate([sess.run(None, {"image": x[None]})[0] for x in test]).argmax(1)
        assert np.mean(out == ref) >= floor, method


def test_accuracy_bench_reports_bias_correction_side_by_side(tmp_path) -> None:
    """``python -m ortnpu.bench accuracy --bias-correction both``: one labelled row per choice."""
    import onnx

    from ortnpu.bench import accuracy
    from ortnpu.bench.models import BenchModel

    path = tmp_path / "small.onnx"
    onnx.save(small_cnn(), str(path))
    bench = BenchModel("small", path, images(64), images(32, seed=5), None, "synthetic")
    rows = accuracy.measure(bench, methods=("minmax",), onnxruntime=False,
                            bias_correction=(False, True), roundings=("nearest",))
    assert [r.quantizer for r in rows] == [
        "float (onnxruntime)", "ortnpu tflite-int8 (minmax, nearest rounding)",
        "ortnpu tflite-int8 (minmax, bias correction, nearest rounding)"]
    assert all(r.samples == 32 for r in rows)


def test_cli_method_choices_are_the_calibrator_methods() -> None:
    """``ortnpu quantize --method`` spells the methods out (the CLI does not import the
    calibrator, which loads onnxruntime); they must stay the calibrator's own list."""
    from ortnpu.cli import build_parser

    quantize = build_parser()._subparsers._group_actions[0].choices["quantize"]
    method = next(a for a in quantize._actions if "--method" in a.option_strings)
    assert tuple(method.choices) == METHODS
