"""Calibration: data forms, streaming histograms and the four range methods."""

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
    assert mlo <= lo < 0 < hi <= mhi
    if method == "minmax":
        assert (lo, hi) == (mlo, mhi)
    elif method == "mse":
        assert hi < mhi         # trades the clipped outlier against a finer step
    else:
        assert hi < 0.5 * mhi   # the single outlier at 40 is clipped away


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
