"""Cases of the pooling and layout ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from ortnpu.conformance.build import case, clamp_bounds, param, tensor
from ortnpu.conformance.case import Case
from ortnpu.conformance.edges import seeded_rng, with_extremes
from ortnpu.conformance.profile import Profile


def _window(k: tuple[int, int], s: tuple[int, int], pads: tuple[int, int, int, int] = (0,) * 4,
            dil: tuple[int, int] | None = None) -> dict[str, int]:
    attrs = {"kernel_h": k[0], "kernel_w": k[1], "stride_h": s[0], "stride_w": s[1],
             "pad_top": pads[0], "pad_left": pads[1], "pad_bottom": pads[2],
             "pad_right": pads[3]}
    if dil:
        attrs.update(dilation_h=dil[0], dilation_w=dil[1])
    return attrs


#: name, x shape, window attributes (without dilation for AveragePool).
_POOLS: tuple[tuple[str, tuple[int, ...], dict[str, int]], ...] = (
    ("2x2_s2", (1, 3, 8, 8), _window((2, 2), (2, 2))),
    ("3x3_s1_pad1", (2, 2, 5, 7), _window((3, 3), (1, 1), (1, 1, 1, 1))),
    ("3x2_s2x1_odd", (1, 4, 7, 5), _window((3, 2), (2, 1), (0, 1, 1, 0))),
    ("1x2_pairs", (1, 2, 4, 6), _window((1, 2), (1, 1))),
)


def _pool_dtypes(p: Profile) -> list[np.dtype]:
    return list(dict.fromkeys((p.act, p.relu_out)))


def _act(p: Profile, rng: np.random.Generator, shape: tuple[int, ...],
         dtype: np.dtype) -> np.ndarray:
    if dtype == p.act:
        return with_extremes(rng, shape, *p.act_range, dtype)
    info = np.iinfo(dtype)
    return with_extremes(rng, shape, int(info.min), int(info.max), dtype)


def pool_cases(p: Profile) -> list[Case]:
    """MaxPool, AveragePool (rounding ties of 2- and 4-element windows, padding not counted),
    GlobalAveragePool (odd areas, extreme sums)."""
    cases = []
    for dtype in _pool_dtypes(p):
        suffix = "" if dtype == p.act else f"_{dtype.name}"
        for name, shape, attrs in _POOLS:
            rng = seeded_rng(p.suite, "pool", name, suffix)
            x = _act(p, rng, shape, dtype)
            clamp = clamp_bounds(p, dtype)
            cases.append(case(p, "MaxPool", name + suffix, [tensor("x", x)],
                              {**attrs, **clamp}, dtype, "max over the in-bounds window"))
            cases.append(case(p, "AveragePool", name + suffix, [tensor("x", x)],
                              {**attrs, **clamp}, dtype,
                              "in-bounds sum / in-bounds count, rounding half away from zero"))
        rng = seeded_rng(p.suite, "maxpool_dilated", suffix)
        x = _act(p, rng, (1, 2, 9, 9), dtype)
        lo, hi = clamp_bounds(p, dtype).values()
        cases.append(case(p, "MaxPool", "dilated_clamped" + suffix, [tensor("x", x)],
                          {**_window((3, 3), (2, 2), (1, 1, 1, 1), (2, 2)),
                           "act_min": lo + 40, "act_max": hi - 30}, dtype,
                          "dilated window and a clamp narrower than the type"))
        for name, shape in (("odd_15", (2, 3, 3, 5)), ("pairs", (1, 4, 1, 2)),
                            ("quads", (1, 3, 2, 2)), ("1x1", (1, 2, 1, 1))):
            rng = seeded_rng(p.suite, "gap", name, suffix)
            x = _act(p, rng, shape, dtype)
            cases.append(case(p, "GlobalAveragePool", name + suffix, [tensor("x", x)],
                              clamp_bounds(p, dtype), dtype,
                              "global average with ties (2 and 4 elements) and odd areas"))
        rng = seeded_rng(p.suite, "gap_extremes", suffix)
        ext = np.empty((1, 2, 16, 16), dtype)
        lo, hi = clamp_bounds(p, dtype).values()
        ext[0, 0], ext[0, 1] = hi, lo
        cases.append(case(p, "GlobalAveragePool", "extremes" + suffix, [tensor("x", ext)],
                          clamp_bounds(p, dtype), dtype, "all-max and all-min planes"))
    return cases


def layout_cases(p: Profile) -> list[Case]:
    """Concat (2, 3 and 8 inputs, several axes), Reshape, Flatten, Transpose, Pad, Slice."""
    rng = seeded_rng(p.suite, "layout")
    lo, hi = p.act_range
    d = p.act

    def act(*shape: int) -> np.ndarray:
        return with_extremes(rng, shape, lo, hi, d)

    cases = [
        case(p, "Concat", "2_axis1", [tensor("x0", act(1, 2, 3, 3)), tensor("x1", act(1, 5, 3, 3))],
             {"axis": 1}, d, "channel concatenation"),
        case(p, "Concat", "3_axis_neg1", [tensor(f"x{k}", act(2, 3, k + 1)) for k in range(3)],
             {"axis": -1}, d, "negative axis"),
        case(p, "Concat", "8_axis0", [tensor(f"x{k}", act(1, 4)) for k in range(8)],
             {"axis": 0}, d, "the largest input count"),
    ]
    x = act(2, 3, 4, 5)
    reshapes: list[tuple[str, list[int]]] = [("keep0_infer", [0, -1, 5]), ("flat", [-1]),
                                             ("rank6", [1, 2, 1, 3, 20, 1])]
    for name, shape in reshapes:
        cases.append(case(p, "Reshape", name, [tensor("x", x), param("shape", shape, np.int64)],
                          {}, d, "ONNX reshape rules (0 copies, -1 infers)"))
    for axis in (0, 1, 3, -1):
        cases.append(case(p, "Flatten", f"axis{axis}".replace("-", "neg"), [tensor("x", x)],
                          {"axis": axis}, d, "ONNX flatten"))
    for perm in ((0, 2, 3, 1), (3, 1, 0, 2)):
        cases.append(case(p, "Transpose", "perm" + "".join(map(str, perm)),
                          [tensor("x", x), param("perm", list(perm), np.int64)], {}, d,
                          "axis permutation"))
    pad_attrs: dict[str, Any] = {"value": lo if not p.symmetric else 0}
    cases.append(case(p, "Pad", "spatial", [tensor("x", x),
                                            param("pads", [0, 0, 1, 2, 0, 0, 3, 0], np.int64)],
                      pad_attrs, d, "spatial padding with the zero point"))
    cases.append(case(p, "Pad", "all_axes_max", [tensor("x", act(2, 3)),
                                                 param("pads", [1, 0, 2, 1], np.int64)],
                      {"value": hi}, d, "pad value at the type maximum"))
    big = np.iinfo(np.int64).max
    slices: list[tuple[str, list[list[int]], str]] = [
        ("channels", [[1], [3], [1], [1]], "one axis, step 1 (a Split output)"),
        ("strided_neg_axes", [[0, 1], [big, -1], [-1, -2], [2, 2]],
         "steps of 2, negative axes and end, INT64_MAX for 'to the end'"),
        ("reversed", [[-1, big], [-big, 0], [3, 1], [-1, -2]],
         "negative steps: start clamped to dim-1, end to -1 (whole axis reversed)"),
        ("clamped", [[-100, 3], [100, 100], [2, 3], [1, 1]],
         "starts and ends beyond the axis, clamped to it"),
    ]
    for name, (starts, ends, axes, steps), why in slices:
        cases.append(case(p, "Slice", name, [tensor("x", x), param("starts", starts, np.int64),
                                             param("ends", ends, np.int64),
                                             param("axes", axes, np.int64),
                                             param("steps", steps, np.int64)], {}, d, why))
    return cases


#: name, input H x W, output H x W, mode, align_corners, half_pixel_centers, what it exercises
_RESIZES: tuple[tuple[str, tuple[int, int], tuple[int, int], str, int, int, str], ...] = (
    ("nearest_2x", (4, 5), (8, 10), "nearest", 0, 0, "floor(o * in/out): each pixel twice"),
    ("nearest_3x_odd_hpc", (3, 5), (9, 7), "nearest", 0, 1,
     "half_pixel_centers, odd factors: floor((o + 0.5) * scale) clamped"),
    ("nearest_down_ac", (7, 9), (3, 4), "nearest", 1, 0,
     "align_corners: round half away of o * (in-1)/(out-1)"),
    ("nearest_1xN_both", (1, 6), (1, 13), "nearest", 1, 1, "a 1xN input, both flags"),
    ("bilinear_2x", (3, 4), (6, 8), "bilinear", 0, 0,
     "10-bit weights 0 and 512: exact .5 ties rounded half away from zero"),
    ("bilinear_3x_hpc", (3, 3), (9, 9), "bilinear", 0, 1,
     "half_pixel_centers: negative coordinates at the border (weights beyond 1024)"),
    ("bilinear_odd_ac", (5, 4), (7, 11), "bilinear", 1, 0,
     "align_corners with rounded 10-bit scales (1024·(in-1)/(out-1) not an integer)"),
    ("bilinear_down_hpc", (9, 10), (4, 3), "bilinear", 0, 1, "downscale by non-integer factors"),
    ("bilinear_1xN", (1, 5), (3, 9), "bilinear", 0, 0, "a single input row"),
)


def resize_cases(p: Profile) -> list[Case]:
    """Resize: TFLite's nearest index rounding and 10-bit bilinear in each mode, up- and
    downscaling by odd factors, a single row, inputs holding the type's extremes (the
    interpolation of the two ends of the range, where the rounding of ties shows)."""
    cases = []
    lo, hi = p.act_range
    for name, (h, w), (oh, ow), mode, ac, hpc, why in _RESIZES:
        rng = seeded_rng(p.suite, "resize", name)
        x = with_extremes(rng, (1, 2, h, w), lo, hi, p.act)
        x[0, 1, ::2, ::2] = lo   # a checkerboard of the extremes: large exact ties
        x[0, 1, 1::2, 1::2] = hi
        attrs = {"mode": mode, "align_corners": ac, "half_pixel_centers": hpc, "out_h": oh,
                 "out_w": ow}
        cases.append(case(p, "Resize", name, [tensor("x", x)], attrs, p.act, why))
    return cases
