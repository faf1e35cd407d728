"""Oracle cases of RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR (int8 and 16x8).

Each case is a TFLite resize in one mode (align_corners, half_pixel_centers, or neither) and
the ONNX Resize that states the same sampling (coordinate_transformation_mode and nearest_mode,
sizes or, for integer factors, scales); ortnpu must lower it to its NPU Resize and give LiteRT's
integers. Kept in a module of its own so the seeds of the other oracle modules stay as they are.
Sizes are biased to the edges: upscale by 2 and by odd factors, downscale, a 1xN input, an
output of size 1; inputs hold the type's extremes (saturation of the interpolation) and zero
points at -128 and 127.
"""

from __future__ import annotations

import numpy as np
from cases import _data, _quant
from qdq_builder import Case, QDQGraph
from tflite_builder import TFLiteGraph

TARGET = {"int8": "tflite-int8", "int16": "tflite-a16w8"}

#: TFLite (align_corners, half_pixel_centers) -> ONNX (coordinate_transformation_mode,
#: nearest_mode) stating the same sampling
ONNX_OF_MODE = {
    ("nearest", 0, 0): ("asymmetric", "floor"),
    ("nearest", 1, 0): ("align_corners", "round_prefer_ceil"),
    ("nearest", 0, 1): ("half_pixel", "round_prefer_ceil"),
    ("bilinear", 0, 0): ("asymmetric", None),
    ("bilinear", 1, 0): ("align_corners", None),
    ("bilinear", 0, 1): ("half_pixel", None),
}


def _size(rng: np.random.Generator, n: int) -> int:
    """An output size for an input of ``n``: 2x, an odd factor, a downscale, 1, or any."""
    kind = rng.choice(["2x", "odd", "down", "one", "any"], p=[0.3, 0.2, 0.2, 0.05, 0.25])
    if kind == "2x":
        return 2 * n
    if kind == "odd":
        return int(rng.choice([3, 5])) * n
    if kind == "down":
        return max(1, n // int(rng.integers(2, 4)))
    if kind == "one":
        return 1
    return int(rng.integers(1, 18))


def resize(rng: np.random.Generator, act: str, mode: str) -> Case:
    """One TFLite resize of ``mode`` and its ONNX twin."""
    ac, hpc = ((0, 0), (1, 0), (0, 1))[int(rng.integers(0, 3))]
    h = 1 if rng.random() < 0.15 else int(rng.integers(1, 9))   # 1xN inputs
    w = int(rng.integers(1, 9))
    oh, ow = _size(rng, h), _size(rng, w)
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    q = _quant(rng, act)
    x = _data(rng, (n, h, w, c), act)
    t = TFLiteGraph()
    tx = t.tensor("x", (n, h, w, c), act, scale=q.scale, zero_point=q.zero_point)
    ts = t.tensor("size", (2,), "int32", data=np.array([oh, ow]))
    ty = t.tensor("y", (n, oh, ow, c), act, scale=q.scale, zero_point=q.zero_point)
    op, table = (("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions") if mode == "nearest"
                 else ("RESIZE_BILINEAR", "ResizeBilinearOptions"))
    t.op(op, [tx, ts], [ty], (table, {"AlignCorners": bool(ac), "HalfPixelCenters": bool(hpc)}))
    transform, nearest = ONNX_OF_MODE[(mode, ac, hpc)]
    g = QDQGraph()
    xin = g.input("x", (n, c, h, w), q)
    attrs: dict[str, object] = {"mode": "nearest" if mode == "nearest" else "linear",
                                "coordinate_transformation_mode": transform}
    if nearest:
        attrs["nearest_mode"] = nearest
    integer = oh % h == 0 and ow % w == 0
    if integer and rng.random() < 0.5:   # scales: exact for integer factors
        scales = np.array([1, 1, oh // h, ow // w], np.float32)
        ins = [xin, "", g.value("scales", scales)]
    else:
        ins = [xin, "", "", g.value("sizes", np.array([n, c, oh, ow], np.int64))]
    g.output(g.node("Resize", ins, "resized", **attrs), q)
    name = (f"{op} {act} ac={ac} hpc={hpc} {h}x{w}->{oh}x{ow} n={n} c={c} zp {q.zero_point} "
            f"({transform}{', ' + nearest if nearest else ''})")
    return Case(name, op, TARGET[act], t.build([tx], [ty]), g.model(), [x],
                {"x": q.dequantize(x.transpose(0, 3, 1, 2))}, q,
                to_tflite=lambda y: y.transpose(0, 2, 3, 1))


def make_case(op: str, act: str, seed: int) -> Case:
    """The case of ``op`` (``RESIZE_NEAREST_NEIGHBOR``/``RESIZE_BILINEAR``) on ``act``."""
    mode = "nearest" if op == "RESIZE_NEAREST_NEIGHBOR" else "bilinear"
    rng = np.random.default_rng([seed, 2000 + (mode == "bilinear"), 16 if act == "int16" else 8])
    return resize(rng, act, mode)
