"""Time the C kernels against the numpy references and onnxruntime's float and int8 kernels.

    PYTHONPATH=. python ops/bench_native.py [--repeat 30] [--threads 1 2] [--no-numpy]

Prints a Markdown table (milliseconds per call, the minimum over ``--repeat`` calls after a
warm-up, so that other processes on a shared machine disturb the numbers as little as possible).
onnxruntime runs with ``intra_op_num_threads`` equal to the thread count and every graph
optimization enabled; its results are not compared (see docs/kernels.md: they are not exact).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ortnpu.domain import OPS_BY_NAME, native

OUT = np.dtype(np.int8)


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def ort_session(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                inits: list[onnx.TensorProto], out_type: int, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", out_type,
                                                                               None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def conv_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    def case(name: str, n: int, cin: int, cout: int, hw: int, k: int, group: int) -> dict[str, Any]:
        pad = k // 2
        x = rng.integers(-128, 128, (n, cin, hw, hw)).astype(np.int8)
        w = rng.integers(-127, 128, (cout, cin // group, k, k)).astype(np.int8)
        bias = rng.integers(-5000, 5000, cout).astype(np.int64)
        mult = rng.integers(1 << 30, (1 << 31) - 1, cout).astype(np.int32)
        shift = np.full(cout, -9, np.int32)
        attrs = OPS_BY_NAME["Conv"].full_attrs({
            "group": group, "pad_top": pad, "pad_left": pad, "pad_bottom": pad,
            "pad_right": pad, "x_zp": -3, "y_zp": 2})
        return {"name": name, "op": "Conv", "arrays": [x, w, bias, mult, shift], "attrs": attrs,
                "k": k, "group": group, "pad": pad}

    return [case("depthwise 3x3, 1x32x112x112", 1, 32, 32, 112, 3, 32),
            case("pointwise 32->64, 112x112", 1, 32, 64, 112, 1, 1),
            case("3x3 64->64, 56x56", 1, 64, 64, 56, 3, 1)]


def ort_conv_sessions(c: dict[str, Any], threads: int) -> dict[str, Callable[[], Any]]:
    x, w = c["arrays"][0], c["arrays"][1]
    k, g, pad = c["k"], c["group"], c["pad"]
    conv_attrs = {"group": g, "pads": [pad] * 4, "kernel_shape": [k, k]}
    out: dict[str, Callable[[], Any]] = {}
    xf = x.astype(np.float32)
    s = ort_session([helper.make_node("Conv", ["x", "w"], ["y"], **conv_attrs)],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                    [numpy_helper.from_array(w.astype(np.float32), "w")], TensorProto.FLOAT,
                    threads)
    out["ORT float Conv"] = lambda: s.run(None, {"x": xf})
    xu = (x.astype(np.int16) + 128).astype(np.uint8)
    sc = [numpy_helper.from_array(np.array(v, dtype=d), n) for n, v, d in
          (("xs", 0.05, np.float32), ("xz", 125, np.uint8), ("ws", 0.01, np.float32),
           ("wz", 0, np.int8), ("ys", 0.2, np.float32), ("yz", 128, np.uint8))]
    s2 = ort_session([helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys",
                                                      "yz"], ["y"], **conv_attrs)],
                     [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                     [numpy_helper.from_array(w, "w"), *sc], TensorProto.UINT8, threads)
    out["ORT QLinearConv u8s8"] = lambda: s2.run(None, {"x": xu})
    wu = (w.astype(np.int16) + 128).astype(np.uint8)
    s3 = ort_session([helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"],
                                       **conv_attrs)],
                     [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                     [numpy_helper.from_array(wu, "w"),
                      numpy_helper.from_array(np.array(125, np.uint8), "xz"),
                      numpy_helper.from_array(np.array(128, np.uint8), "wz")], TensorProto.INT32,
                     threads)
    out["ORT ConvInteger u8u8 (no rescale)"] = lambda: s3.run(None, {"x": xu})
    return out


def fc_case(rng: np.random.Generator) -> dict[str, Any]:
    x = rng.integers(-128, 128, (1, 1280)).astype(np.int8)
    w = rng.integers(-127, 128, (1000, 1280)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 1000).astype(np.int64)
    mult = rng.integers(1 << 30, (1 << 31) - 1, 1000).astype(np.int32)
    shift = np.full(1000, -10, np.int32)
    attrs = OPS_BY_NAME["FullyConnected"].full_attrs({"x_zp": -3, "y_zp": 2})
    return {"name": "FC 1280->1000, batch 1", "op": "FullyConnected",
            "arrays": [x, w, bias, mult, shift], "attrs": attrs}


def ort_fc_sessions(c: dict[str, Any], threads: int) -> dict[str, Callable[[], Any]]:
    x, w = c["arrays"][0], c["arrays"][1]
    xf = x.astype(np.float32)
    s = ort_session([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                    [numpy_helper.from_array(w.astype(np.float32), "w")], TensorProto.FLOAT,
                    threads)
    xu = (x.astype(np.int16) + 128).astype(np.uint8)
    sc = [numpy_helper.from_array(np.array(v, dtype=d), n) for n, v, d in
          (("xs", 0.05, np.float32), ("xz", 125, np.uint8), ("ws", 0.01, np.float32),
           ("wz", 0, np.int8), ("ys", 0.2, np.float32), ("yz", 128, np.uint8))]
    s2 = ort_session([helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys",
                                                        "yz"], ["y"])],
                     [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                     [numpy_helper.from_array(np.ascontiguousarray(w.T), "w"), *sc],
                     TensorProto.UINT8, threads)
    return {"ORT float Gemm": lambda: s.run(None, {"x": xf}),
            "ORT QLinearMatMul u8s8": lambda: s2.run(None, {"x": xu})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy references")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cases = [*conv_cases(rng), fc_case(rng)]
    print(f"ortnpu C kernels: {native.simd()}; onnxruntime {ort.__version__}")
    head = "| shape | implementation | " + " | ".join(f"{t} thr (ms)" for t in args.threads)
    print(head + " |")
    print("|---|---|" + "---|" * len(args.threads))
    for c in cases:
        spec = OPS_BY_NAME[c["op"]]
        rows: dict[str, list[str]] = {}
        if not args.no_numpy:
            t = best_ms(lambda c=c, spec=spec: spec.reference(c["arrays"], c["attrs"], OUT),
                        max(3, args.repeat // 10))
            rows["numpy reference"] = [f"{t:.2f}"] + ["" for _ in args.threads[1:]]
        for simd in ("avx512", "avx2", "scalar"):
            native.set_simd(simd)
            if native.simd() != simd:
                continue
            label = "ortnpu C (" + {"avx512": "AVX-512 VNNI", "avx2": "AVX2",
                                    "scalar": "portable"}[simd] + ")"
            for th in args.threads:
                native.set_threads(th)
                fn = native.KERNELS[c["op"]]
                t = best_ms(lambda c=c, fn=fn: fn(c["arrays"], c["attrs"], OUT), args.repeat)
                rows.setdefault(label, []).append(f"{t:.2f}")
        native.set_simd("auto")
        native.set_threads(None)
        for th in args.threads:
            sessions = (ort_conv_sessions(c, th) if c["op"] == "Conv"
                        else ort_fc_sessions(c, th))
            for label, fn in sessions.items():
                rows.setdefault(label, []).append(f"{best_ms(fn, args.repeat):.2f}")
        for label, vals in rows.items():
            print(f"| {c['name']} | {label} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
