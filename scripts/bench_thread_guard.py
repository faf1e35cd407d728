"""What the adaptive thread choice (ops/adaptive.h) keeps of n threads, side by side, one process.

    python scripts/bench_thread_guard.py [--model mobilenet_v2] [--batch 1] [--rounds 60]
                                         [--phases quiet,busy]

Three sessions of one quantized bench model run in turns, one run each per round (after an
untimed run): 1 thread, n threads with the choice off (``ORTNPU_ADAPTIVE=0`` when the session is
built: every layer on n threads), and n threads with the choice on. Prints each session's
median and, per round, its time over the 1-thread time (median of the per-round ratios: the
host's slow and fast phases cancel). Quiet, the guarded session should come close to the
forced one where n threads pay; in a busy phase (a busy loop in another process) it should stay
close to 1 thread where the forced one collapses. ``--phases`` runs the same sessions through
several phases in turn (``quiet,busy``: a session that learnt n threads on a quiet machine
must notice the competing process). The first rounds include the choice's warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
import onnx

import ortnpu
from ortnpu.bench import models as bench_models
from ortnpu.bench.speed import competing_process, fixed_batch, free_batch
from ortnpu.domain import native


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--phases", default="quiet",
                    help="comma-separated quiet/busy phases, each --rounds rounds")
    args = ap.parse_args()

    model = bench_models.load([args.model])[0]
    raw = onnx.load(str(model.path))
    if fixed_batch(raw) and args.batch != fixed_batch(raw):
        raw = free_batch(raw) or raw
    npu = ortnpu.quantize(raw, "tflite-int8", model.calib[:16])
    feed = {npu.graph.input[0].name: np.ascontiguousarray(model.test[:args.batch])}
    n = args.threads
    os.environ["ORTNPU_ADAPTIVE"] = "0"  # read when a program is built
    forced = ortnpu.InferenceSession(npu, intra_op_num_threads=n)
    del os.environ["ORTNPU_ADAPTIVE"]
    cases = [("1 thread", ortnpu.InferenceSession(npu, intra_op_num_threads=1), 1),
             (f"{n} threads, choice off", forced, n),
             (f"{n} threads, choice on", ortnpu.InferenceSession(npu, intra_op_num_threads=n), n)]
    try:
        for phase in args.phases.split(","):
            if phase not in ("quiet", "busy"):
                raise SystemExit(f"unknown phase {phase!r}: quiet or busy")
            times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            with competing_process() if phase == "busy" else contextlib.nullcontext():
                for _ in range(args.rounds):
                    for label, sess, threads in cases:
                        native.set_threads(threads)
                        sess.run(None, feed)
                        start = time.perf_counter()
                        sess.run(None, feed)
                        times[label].append(time.perf_counter() - start)
            one = np.array(times[cases[0][0]])
            print(f"{args.model}, batch {args.batch}, {phase}, {args.rounds} rounds")
            for label, t in times.items():
                ratio = statistics.median(np.array(t) / one)
                print(f"  {label:24s} median {1e3 * statistics.median(t):8.2f} ms   "
                      f"/ 1 thread per round {ratio:.3f}")
    finally:
        native.set_threads(None)


if __name__ == "__main__":
    main()
