"""The ortnpu plugin EP on a real model quantized by onnxruntime: identity and speed.

    python scripts/ep_bench.py                 # the bundled digits CNN
    python scripts/ep_bench.py mobilenet_v2    # from ~/.cache/ortnpu/models (models/build_all.py)

Quantizes the model with onnxruntime's ``quantize_static`` (QDQ, int8, per channel), then runs
it three ways on the same images: a plain ``onnxruntime.InferenceSession`` with the ortnpu EP,
``ortnpu.InferenceSession(ortnpu.import_qdq(model))`` (the reference: outputs must be identical)
and plain onnxruntime on its CPU EP (onnxruntime's own int8 kernels). Prints where the nodes
ran, whether the outputs are identical, session creation times and the median time per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import ortnpu
import ortnpu.ep
from ortnpu import models_cache
from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds


def _data(name: str) -> tuple[Path, np.ndarray, np.ndarray]:
    if name == "digits_cnn":
        data = models_cache.load_bundled_data()
        return models_cache.bundled_model_path(), data["calib_x"][:16], data["test_x"][:32]
    path = models_cache.cached_model(f"{name}.onnx")
    photos = models_cache.cached_model("imagenet_photos.npz")
    if path is None or photos is None:
        sys.exit(f"{name} is not built: python models/build_all.py")
    with np.load(photos) as f:
        x = f["x"]
    return path, x[:16], x[70:86]


def _median_ms(run: object, xs: np.ndarray, name: str, repeat: int) -> float:
    run(None, {name: xs[:1]})   # warm up
    times = []
    for i in range(repeat):
        x = xs[i % len(xs):i % len(xs) + 1]
        t = time.perf_counter()
        run(None, {name: x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="digits_cnn")
    ap.add_argument("--target", default="tflite-int8")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    path, calib, test = _data(args.model)
    float_model = ortnpu.optimize(onnx.load(path))
    name = float_model.graph.input[0].name

    qdq = quantize_with_onnxruntime(float_model, sample_feeds(name, calib))
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "q.onnx"
        onnx.save(qdq, dst)
        t = time.perf_counter()
        so = ort.SessionOptions()
        so.add_provider_for_devices(ortnpu.ep.register(), {"target": args.target})
        ep = ort.InferenceSession(str(dst), so)
        t_ep = time.perf_counter() - t
        plain = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    ref = ortnpu.InferenceSession(ortnpu.import_qdq(qdq, args.target))
    t_ref = time.perf_counter() - t
    report = ortnpu.ep.explain(ep)
    cpu = [r for r in report if r.device != "NPU"]
    same = all(np.array_equal(ep.run(None, {name: test[i:i + 1]})[0],
                              ref.run(None, {name: test[i:i + 1]})[0]) for i in range(len(test)))
    print(f"{args.model} ({len(qdq.graph.node)} QDQ nodes), target {args.target}")
    print(f"  EP graph: {len(report)} nodes, {len(report) - len(cpu)} on the NPU, "
          f"{len(cpu)} on the CPU")
    for r in cpu[:10]:
        print(f"    CPU {r.op_type} {r.node!r}: {r.reason}")
    print(f"  EP outputs identical to import_qdq on {len(test)} images: {same}")
    print(f"  session creation: EP {t_ep:.2f} s, ortnpu.InferenceSession(import_qdq) "
          f"{t_ref:.2f} s")
    for label, sess in (("EP session", ep), ("ortnpu.InferenceSession", ref),
                        ("plain onnxruntime CPU EP", plain)):
        print(f"  {label}: {_median_ms(sess.run, test, name, args.repeat):.2f} ms per image "
              "(median)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
