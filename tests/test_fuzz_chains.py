"""The differential fuzzer of the compiled programs, a bounded subset (the long run is
``python scripts/fuzz.py --chains``). Cases run in this process, on the installed package."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ortnpu.domain import kernels, native
from ortnpu.fuzz.chains import LAYERS, build_chain, run_case

SEED = 20261202
CASES = 150

needs_c = pytest.mark.skipif(not native.AVAILABLE or kernels.get_mode() == "numpy",
                             reason="C kernels not built or not in use (ORTNPU_KERNELS)")


@needs_c
def test_chain_subset_is_exact_on_every_path_and_reaches_the_compiled_programs() -> None:
    classes: Counter = Counter()
    paths: Counter = Counter()
    bad = []
    without_island = 0   # ok chains with no float island: the ones the evaluator must run
    for i in range(CASES):
        rec = run_case(SEED, i)
        classes[rec["class"]] += 1
        paths.update(rec["paths"])
        if rec["class"] == "ok" and not build_chain(np.random.default_rng([SEED, i, 7])
                                                    ).float_island:
            without_island += 1
        if rec["class"] not in ("ok", "ortnpu"):
            bad.append(f"case {i}: {rec['class']}: {rec['detail']}")
    assert not bad, "\n".join(bad[:10])
    assert classes["ok"] >= CASES * 0.95, classes
    # the report proves what ran: most cases through C programs, every layer type among them
    assert paths["compiled-program"] >= CASES // 2, paths
    assert {f"C:{op.lower()}" for op in LAYERS} <= set(paths), sorted(paths)
    for path in ("reference", "default", "per-node", "python", "plain", "export"):
        assert paths[path] >= CASES * 0.5, (path, paths)
    # onnx's evaluator cannot run onnxruntime's fused Q/DQ kernels: it runs every chain
    # without a float island (about half of them, by the draw of the islands)
    assert paths["evaluator"] == without_island >= CASES * 0.4, (without_island, paths)


def test_chains_are_reproducible_from_seed_and_index() -> None:
    a, b = (build_chain(np.random.default_rng([SEED, 5, 7])) for _ in range(2))
    assert a.describe() == b.describe()
    assert a.model.SerializeToString() == b.model.SerializeToString()


@needs_c
def test_a_chain_that_misses_the_compiled_path_fails_loudly() -> None:
    """With the C kernels expected but the numpy ones in use, an expected program stays on the
    Python path: the case is "missed", never "ok"."""
    index = next(i for i in range(50)
                 if build_chain(np.random.default_rng([SEED, i, 7])).expect_native)
    kernels.set_mode("numpy")
    try:
        rec = run_case(SEED, index)
    finally:
        kernels.set_mode("auto")
    assert rec["class"] == "missed", rec
    assert "compiled-program" not in rec["paths"]
