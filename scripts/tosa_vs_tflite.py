"""TFLite vs TOSA int8 rounding, measured (docs/tosa.md).

1. The rescale rules on their own: tflite_double vs tosa_double vs half_up (TOSA SINGLE_ROUND)
   on random int32 accumulators and multipliers, and on rounding ties.
2. The bundled model quantized for tflite-int8, tosa-int8 (DOUBLE_ROUND) and tosa-int8 with
   SINGLE_ROUND (rounding = "half_up"): every integer tensor compared element by element.

Run: ``python scripts/tosa_vs_tflite.py``
"""
import dataclasses

import numpy as np
import onnx
from onnx import helper

import ortnpu
from ortnpu import models_cache
from ortnpu.domain import DOMAIN
from ortnpu.domain.arith import rescale
from ortnpu.target import load_target

rng = np.random.default_rng(0)
acc = rng.integers(-(1 << 31), 1 << 31, size=2_000_000)
mult = rng.integers(1 << 30, 1 << 31, size=acc.size)
shift = rng.integers(-31, 1, size=acc.size)            # TFLite shift; TOSA right shift 31 - it
tfl = rescale(acc, mult, shift, "tflite_double")
dbl = rescale(acc, mult, shift - 31, "tosa_double")
sgl = rescale(acc, mult, shift - 31, "half_up")
print(f"random accumulators: tosa_double != tflite_double on {int((tfl != dbl).sum())}, "
      f"half_up != tflite_double on {int((tfl != sgl).sum())} of {acc.size}")
e = rng.integers(1, 20, size=1_000_000)
ties = (rng.integers(-1000, 1000, size=e.size) * 2 + 1) << e    # acc / 2^(e+1) ends in .5
tfl = rescale(ties, np.int64(1 << 30), -e, "tflite_double")
dbl = rescale(ties, np.int64(1 << 30), -e - 31, "tosa_double")
sgl = rescale(ties, np.int64(1 << 30), -e - 31, "half_up")
k = int(np.argmax(tfl != sgl))
print(f"ties: tosa_double != tflite_double on {int((tfl != dbl).sum())}, half_up != "
      f"tflite_double on {int((tfl != sgl).sum())} of {ties.size}; e.g. {int(ties[k])} * 2^-"
      f"{int(e[k]) + 1}: tflite {int(tfl[k])}, tosa double {int(dbl[k])}, single {int(sgl[k])}")

data = models_cache.load_bundled_data()
model = onnx.load(str(models_cache.bundled_model_path()))
calib, x = data["calib_x"][:64], data["test_x"]
tosa = load_target("tosa-int8")
single = dataclasses.replace(tosa, name="tosa-int8-single",
                             arithmetic=dataclasses.replace(tosa.arithmetic, rounding="half_up"))


def tensors(target):
    npu = ortnpu.quantize(model, target, calib)
    names = [n.output[0] for n in npu.graph.node if n.domain == DOMAIN]
    for t in names:
        npu.graph.output.append(helper.make_value_info(
            t, helper.make_empty_tensor_value_info(t).type))
    out = ortnpu.InferenceSession(npu).run(names, {"image": x})
    final = ortnpu.InferenceSession(npu).run(None, {"image": x})[0]
    return dict(zip(names, out, strict=True)), final


base, base_final = tensors("tflite-int8")
for t in (tosa, single):
    got, final = tensors(t)
    common = [n for n in base if n in got and got[n].shape == base[n].shape]
    diff = sum(int((got[n] != base[n]).sum()) for n in common)
    total = sum(base[n].size for n in common)
    print(f"{t.name}: {diff} of {total} integer values differ from tflite-int8 over "
          f"{len(common)} NPU tensors; class decisions differing "
          f"{int((final.argmax(-1) != base_final.argmax(-1)).sum())} of {len(x)}")
    for n in common:
        d = int((got[n] != base[n]).sum())
        if d:
            print(f"   {n}: {d} of {base[n].size}")
