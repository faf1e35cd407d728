"""ortnpu's Softmax against LiteRT's reference SOFTMAX (cases_layernorm.py), int8 and int16.

Same comparison as test_litert_oracle.py. Needs the ``oracle`` extra; skipped without it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases_layernorm import GENERATORS, make_case
from qdq_builder import mismatch

FAST_SEEDS = {"int8": range(20), "int16": range(10)}
SLOW_SEEDS = range(20, 220)


def _check(op: str, act: str, seeds: range) -> None:
    bad = [m for seed in seeds if (m := mismatch(make_case(op, act, seed))) is not None]
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


_PARAMS = [pytest.param(op, act, id=f"{op}-{act}") for act in ("int8", "int16")
           for op in sorted(GENERATORS)]


@pytest.mark.parametrize(("op", "act"), _PARAMS)
def test_layernorm_op_equals_litert(op: str, act: str) -> None:
    _check(op, act, FAST_SEEDS[act])


@pytest.mark.slow
@pytest.mark.parametrize(("op", "act"), _PARAMS)
def test_layernorm_op_equals_litert_many(op: str, act: str) -> None:
    _check(op, act, SLOW_SEEDS)
