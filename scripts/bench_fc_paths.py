"""Time FullyConnected inside a compiled program on its paths, side by side, one process.

    python scripts/bench_fc_paths.py [--threads 1] [--repeat 40]

Each shape runs twice: with a 32-bit accumulator (the rows GEMM with the output channels in the
vector lanes, at least 16 outputs) and with a 64-bit one, which the program runs the way it ran
every FullyConnected before the rows GEMM existed on this CPU (the 16-pixel 1x1-convolution tile
above 8 rows, the dot-product tiles at 8 rows or fewer; the same integer sums, K is small enough
that no 64-bit block is needed). Prints the minimum of ``--repeat`` runs after a warm-up, and the
ratio (below 1: the rows GEMM is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.domain import DOMAIN, FullyConnected, make_node, native

#: (rows, k, n, batch): a classifier at batch 1, ViT-tiny token blocks, a ViT-S block
SHAPES = [(1, 1280, 1000, 1), (4, 192, 768, 1), (8, 192, 768, 1), (9, 192, 768, 1),
          (17, 192, 768, 1), (17, 768, 192, 1), (17, 192, 768, 32), (17, 768, 192, 32),
          (197, 384, 1536, 1)]


def session(rows: int, k: int, n: int, acc_bits: int, threads: int,
            rng: np.random.Generator) -> ortnpu.InferenceSession:
    inits = {"w": rng.integers(-127, 128, (n, k)).astype(np.int8),
             "b": rng.integers(-1000, 1000, n).astype(np.int64),
             "m": np.full(n, 1 << 30, np.int32), "s": np.full(n, -8, np.int32)}
    fc = make_node(FullyConnected, ["x", "w", "b", "m", "s"], "y", np.int8, "fc", x_zp=3,
                   y_zp=-2, act_min=-128, act_max=127, acc_bits=acc_bits)
    graph = helper.make_graph(
        [fc], "fc", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
        [numpy_helper.from_array(v, name) for name, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, 1)])
    return ortnpu.InferenceSession(model, intra_op_num_threads=threads)


def best_ms(sess: ortnpu.InferenceSession, x: np.ndarray, repeat: int) -> float:
    for _ in range(5):
        sess.run(None, {"x": x})
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    native.set_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{native.describe()}\n")
    print("| rows x k -> n | batch | rows GEMM ms | earlier path ms | ratio |")
    print("|---|---|---|---|---|")
    for rows, k, n, batch in SHAPES:
        x = rng.integers(-128, 128, (batch, rows, k)).astype(np.int8)
        new = best_ms(session(rows, k, n, 32, args.threads, rng), x, args.repeat)
        old = best_ms(session(rows, k, n, 64, args.threads, rng), x, args.repeat)
        print(f"| {rows} x {k} -> {n} | {batch} | {new:.3f} | {old:.3f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
