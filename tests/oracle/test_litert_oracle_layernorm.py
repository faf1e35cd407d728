"""ortnpu against LiteRT's reference kernels of the ops a LayerNorm decomposes into
(cases_layernorm.py): MEAN over the last axis, MUL(x, x), RSQRT, SQRT (int8 and 16x8) and
SQUARED_DIFFERENCE (int8: LiteRT has no int16 kernel, test below).

Same comparison as test_litert_oracle.py. Needs the ``oracle`` extra; skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases_layernorm import GENERATORS, make_case
from qdq_builder import mismatch

FAST_SEEDS = {"int8": range(20), "int16": range(10)}
SLOW_SEEDS = range(20, 220)
#: ops LiteRT runs on int8 only
INT8_ONLY = ("SQUARED_DIFFERENCE",)
#: the ortnpu op each case must run as (a case left on the CPU would compare float onnxruntime)
NPU_OP = {"RSQRT": "Lut_", "SQRT": "Lut_", "SQUARED_DIFFERENCE": "SquaredDifference_",
          "SQUARE": "Mul_", "MEAN_LAST_AXIS": "FullyConnected_"}


def _check(op: str, act: str, seeds: range) -> None:
    bad = [m for seed in seeds if (m := mismatch(make_case(op, act, seed))) is not None]
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


_PARAMS = [pytest.param(op, act, id=f"{op}-{act}") for act in ("int8", "int16")
           for op in sorted(GENERATORS) if act == "int8" or op not in INT8_ONLY]


@pytest.mark.parametrize(("op", "act"), _PARAMS)
def test_layernorm_op_equals_litert(op: str, act: str) -> None:
    _check(op, act, FAST_SEEDS[act])


@pytest.mark.parametrize(("op", "act"), _PARAMS)
def test_layernorm_op_cases_run_on_the_npu(op: str, act: str) -> None:
    import ortnpu

    case = make_case(op, act, 0)
    npu = ortnpu.import_qdq(case.onnx, case.target)
    ops = [n.op_type for n in npu.graph.node if n.domain == "com.ortnpu"]
    assert len(ops) == 1 and ops[0].startswith(NPU_OP[op]), ops


def test_litert_has_no_int16_squared_difference() -> None:
    """Why SQUARED_DIFFERENCE is int8 only: LiteRT's kernel refuses int16 at run time (the
    int16 LayerNorm lowers the variance as SUB then MUL(d, d))."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_builder import TFLiteGraph

    t = TFLiteGraph()
    ta = t.tensor("a", (1, 4), "int16", scale=0.01, zero_point=0)
    tb = t.tensor("b", (1, 4), "int16", scale=0.01, zero_point=0)
    ty = t.tensor("y", (1, 4), "int16", scale=0.01, zero_point=0)
    t.op("SQUARED_DIFFERENCE", [ta, tb], [ty])
    it = Interpreter(model_content=t.build([ta, tb], [ty]),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros((1, 4), np.int16))
    with pytest.raises(RuntimeError, match="SquaredDifference only supports"):
        it.invoke()


@pytest.mark.slow
@pytest.mark.parametrize(("op", "act"), _PARAMS)
def test_layernorm_op_equals_litert_many(op: str, act: str) -> None:
    _check(op, act, SLOW_SEEDS)
