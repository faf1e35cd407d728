"""TFLite vs TOSA int8 rounding, measured (docs/tosa.md).

1. The rescale rules on their own: tflite_double vs tosa_double vs half_up (TOSA SINGLE_ROUND)
   on random int32 accumulators and multipliers, and on rounding ties.
2. SUB's order (the targets' ``sub_negate``): TFLite negates b's multiplier, TOSA rescales b
   and subtracts the rounded value. 200 int16 SUBs with the parameters of the TOSA oracle's
   cases (a TFLite-to-TOSA legalization: left shift 15, 32-bit multipliers, DOUBLE_ROUND), run
   on every int16 b with ortnpu's Sub in both orders.
3. The bundled model quantized for tflite-int8, tosa-int8 (DOUBLE_ROUND) and tosa-int8 with
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
from ortnpu.domain.ops_elementwise import Sub
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



def tosa_scale(real: float) -> tuple[int, int]:
    """TOSA's (32-bit multiplier, right shift) of a real scale, as the oracle's cases draw it."""
    m, e = np.frexp(real)
    mult, right = round(float(m) * (1 << 31)), 31 - int(e)
    return (mult // 2, right - 1) if mult == 1 << 31 else (mult, right)


b16 = np.arange(-32768, 32768, dtype=np.int64)
draws_tied = draws_out = outputs = 0
example = None
for draw in range(200):
    r = np.random.default_rng(draw)
    sa, sb, sy = r.uniform(0.01, 0.1, 3)
    mx = 2 * max(sa, sb)
    (ma, ra), (mb, rb), (my, ry) = (tosa_scale(v) for v in (sa / mx * 2 ** 15,
                                                           sb / mx * 2 ** 15,
                                                           mx / (2 ** 15 * sy)))
    tied = rescale(b16, np.int64(-mb), np.int64(-rb), "tosa_double") != \
        -rescale(b16, np.int64(mb), np.int64(-rb), "tosa_double")
    a16 = r.integers(-32768, 32768, b16.size)
    attrs = {"a_zp": 0, "b_zp": 0, "y_zp": 0, "left_shift": 0, "a_multiplier": ma,
             "a_shift": -ra, "b_multiplier": mb, "b_shift": -rb, "y_multiplier": my,
             "y_shift": -ry, "act_min": -32768, "act_max": 32767, "rounding": "tosa_double"}
    ys = [Sub.reference([a16, b16], {**attrs, "negate": n}, np.dtype(np.int16))
          for n in ("multiplier", "result")]
    differ = ys[0] != ys[1]
    draws_tied += bool(tied.any())
    draws_out += bool(differ.any())
    outputs += int(differ.sum())
    if example is None and differ.any():
        k = int(np.argmax(differ))
        example = (draw, int(a16[k]), int(b16[k]), mb, rb, int(ys[0][k]), int(ys[1][k]))
print(f"int16 SUB as legalized, 200 parameter draws x 65536 b: b's rescale has ties in "
      f"{draws_tied} draws; the Sub output differs in {draws_out} draws, on {outputs} of "
      f"{200 * b16.size} values")
if example:
    d, a0, b0, mb, rb, y_tfl, y_tosa = example
    print(f"   e.g. draw {d}: a {a0}, b {b0}, b multiplier {mb} >> {rb}: TFLite order {y_tfl}, "
          f"TOSA order {y_tosa}")

# a SUB written for TOSA without TFLite's left shift: b's scale half of a's and of y's, so
# b' = b / 2 rounds a tie on every odd b and the sum goes straight to the output
a8, b8 = (v.reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
attrs = {"a_zp": 0, "b_zp": 0, "y_zp": 0, "left_shift": 0, "a_multiplier": 1 << 30,
         "a_shift": -30, "b_multiplier": 1 << 30, "b_shift": -31, "y_multiplier": 1 << 30,
         "y_shift": -30, "act_min": -128, "act_max": 127, "rounding": "tosa_double"}
ys = [Sub.reference([a8, b8], {**attrs, "negate": n}, np.dtype(np.int8))
      for n in ("multiplier", "result")]
differ = ys[0] != ys[1]
k = int(np.argmax(differ & (a8 == 0)))
print(f"int8 SUB y = a - b/2: the orders differ on {int(differ.sum())} of {a8.size} pairs; "
      f"e.g. a 0, b {int(b8[k])}: TFLite order {int(ys[0][k])}, TOSA order {int(ys[1][k])}")

data = models_cache.load_bundled_data()
model = onnx.load(str(models_cache.bundled_model_path()))
calib, x = data["calib_x"][:64], data["test_x"]
tosa = load_target("tosa-int8")
single = dataclasses.replace(tosa, name="tosa-int8-single",
                             arithmetic=dataclasses.replace(tosa.arithmetic, rounding="half_up"))


def tensors(target):
    # minmax ranges on every target: auto calibration chooses clipped or extreme ranges per
    # target by the output's SQNR, which would compare two range choices, not two roundings
    npu = ortnpu.quantize(model, target, calib, method="minmax")
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
