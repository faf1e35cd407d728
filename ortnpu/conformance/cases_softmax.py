"""Cases of Softmax: TFLite's 8-bit fixed-point and int16 table algorithms on their edges."""

from __future__ import annotations

import numpy as np

from ortnpu.conformance.build import case, tensor
from ortnpu.conformance.case import Case
from ortnpu.conformance.edges import seeded_rng
from ortnpu.conformance.profile import Profile
from ortnpu.domain.ops_softmax import MAX_DEPTH, softmax_params


def softmax_cases(p: Profile) -> list[Case]:
    """Softmax on the suite's activation type: random rows of odd lengths, rows all at their
    maximum, large logits (most of a row below ``diff_min``), the longest row, tiny scales."""
    rng = seeded_rng(p.suite, "Softmax")
    info = np.iinfo(p.act)
    lo, hi = int(info.min), int(info.max)
    longest = MAX_DEPTH[p.act.itemsize]
    cases = []

    def add(name: str, x: np.ndarray, scale: float, doc: str) -> None:
        params = softmax_params(scale, p.act)
        assert not isinstance(params, str), params
        cases.append(case(p, "Softmax", name, [tensor("x", x.astype(p.act))], params, p.act,
                          doc))

    add("rows", rng.integers(lo, hi, size=(4, 3, 7), endpoint=True), 0.05,
        "random values, rows of 7")
    add("equal_rows", np.repeat(rng.integers(lo, hi, size=(5, 1), endpoint=True), 9, axis=1),
        0.1, "every value of a row at its maximum")
    big = rng.integers(lo, hi, size=(3, 33), endpoint=True)
    big[:, ::5] = hi
    add("large_logits", big, 2.0 if p.act.itemsize == 1 else 0.01,
        "large scale: most differences fall below diff_min / exp(-10)")
    add("longest_row", np.full((1, min(longest, 4096)), hi), 0.02,
        f"the longest row ({min(longest, 4096)} values) all at the maximum")
    add("tiny_scale", rng.integers(lo, hi, size=(2, 11), endpoint=True), 1e-5,
        "a tiny input scale: outputs near uniform")
    add("one_value", rng.integers(lo, hi, size=(6, 1), endpoint=True), 0.3,
        "rows of one value (probability one)")
    return cases
