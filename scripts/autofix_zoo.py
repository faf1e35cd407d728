"""autofix on a zoo model with the zoo's own data, as docs/autofix.md measures it.

    python scripts/autofix_zoo.py ppocr_det                          # tflite-int8, cosine
    python scripts/autofix_zoo.py ppocr_rec --objective min-cosine --target tflite-a16w8

Calibrates on the first ``--calib`` samples and scores on the last ``--eval`` ones (as
``python -m ortnpu.bench zoo`` does), goal ``--goal`` (default cosine 0.99). ``cosine`` is
autofix's default objective (the cosine of all evaluation outputs at once, worst output);
``min-cosine`` is the zoo table's stricter measure (the worst sample's cosine). Prints the
report and the seconds it took.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx

import ortnpu
from ortnpu.bench.zoo import ZOO, make_feeds


def min_cosine(float_outputs: dict[str, np.ndarray], npu_outputs: dict[str, np.ndarray]
               ) -> float:
    """The smallest per-sample cosine over every output."""
    worst = 1.0
    for name, ref in float_outputs.items():
        a = ref.reshape(len(ref), -1).astype(np.float64)
        b = npu_outputs[name].reshape(len(ref), -1).astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
        worst = min(worst, float(cos.min()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(ZOO))
    p.add_argument("--target", default="tflite-int8")
    p.add_argument("--objective", choices=("cosine", "min-cosine"), default="cosine")
    p.add_argument("--goal", type=float, default=0.99)
    p.add_argument("--calib", type=int, default=8)
    p.add_argument("--eval", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--search", default="auto", choices=("auto", "group", "greedy"))
    args = p.parse_args()
    entry = ZOO[args.model]
    path = entry.locate()
    if path is None:
        raise SystemExit(f"{entry.file} is not built: run `python models/build_all.py`")
    model = ortnpu.optimize(onnx.load(str(path)), input_shapes=entry.input_shapes,
                            freeze=entry.freeze)
    calib = make_feeds(model, entry, args.calib, 0)
    samples = make_feeds(model, entry, args.eval, 1, last=True)
    feed = {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}
    metric = "cosine" if args.objective == "cosine" else min_cosine
    start = time.perf_counter()
    _, report = ortnpu.autofix(model, args.target, calib, feed, metric, goal=args.goal,
                               max_steps=args.max_steps, search=args.search, progress=False)
    print(report.to_text(3))
    print(f"{args.model} {args.target} {args.objective}: {report.initial_score:.4f} -> "
          f"{report.final_score:.4f} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
