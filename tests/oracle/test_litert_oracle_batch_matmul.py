"""ortnpu's ``MatMul`` of two activations against LiteRT's reference BATCH_MATMUL.

Same comparison as test_litert_oracle.py: a single-op ``.tflite`` run with
``OpResolverType.BUILTIN_REF`` and its ONNX QDQ twin run by import_qdq → InferenceSession must
give the same integers. Needs the ``oracle`` extra; skipped without it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases_batch_matmul import make_case
from qdq_builder import mismatch

FAST_SEEDS = {"int8": range(40), "int16": range(20)}
SLOW_SEEDS = range(40, 440)
#: 16x8 cases whose multiplier needs TFLite's float32 product of the input scales (a double
#: product moved the 16-bit multiplier of tflite_int64 and outputs by up to 2)
FLOAT32_PRODUCT_SEEDS = (191, 223, 386, 415)


def _check(act: str, seeds: range | tuple[int, ...]) -> None:
    bad = [m for seed in seeds if (m := mismatch(make_case(act, seed))) is not None]
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


@pytest.mark.parametrize("act", ["int8", "int16"])
def test_batch_matmul_equals_litert(act: str) -> None:
    _check(act, FAST_SEEDS[act])


@pytest.mark.slow
@pytest.mark.parametrize("act", ["int8", "int16"])
def test_batch_matmul_equals_litert_many(act: str) -> None:
    _check(act, SLOW_SEEDS)


def test_batch_matmul_multiplier_uses_the_float32_scale_product() -> None:
    _check("int16", FLOAT32_PRODUCT_SEEDS)
