"""ortnpu against LiteRT's reference kernels on the ops of issue 14 (cases_tflite_ops.py).

Same comparison as test_litert_oracle.py: a single-op ``.tflite`` run with
``OpResolverType.BUILTIN_REF`` and its ONNX QDQ twin run by import_qdq → InferenceSession must
give the same integers. Needs the ``oracle`` extra; skipped without it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases_tflite_ops import GENERATORS, INT8_ONLY, make_case
from qdq_builder import mismatch

FAST_SEEDS = {"int8": range(20), "int16": range(10)}
SLOW_SEEDS = range(20, 220)

#: Where LiteRT computes something ortnpu does not reproduce (yet): strict xfails.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}


def _params() -> list:
    out = []
    for act in ("int8", "int16"):
        for op in sorted(GENERATORS):
            if act == "int16" and op in INT8_ONLY:
                continue
            marks = []
            why = KNOWN_DIFFERENCES.get((op, act))
            if why is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=why))
            out.append(pytest.param(op, act, id=f"{op}-{act}", marks=marks))
    return out


def _check(op: str, act: str, seeds: range) -> None:
    bad = [m for seed in seeds if (m := mismatch(make_case(op, act, seed))) is not None]
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


@pytest.mark.parametrize(("op", "act"), _params())
def test_op_equals_litert(op: str, act: str) -> None:
    _check(op, act, FAST_SEEDS[act])


@pytest.mark.slow
@pytest.mark.parametrize(("op", "act"), _params())
def test_op_equals_litert_many(op: str, act: str) -> None:
    _check(op, act, SLOW_SEEDS)
