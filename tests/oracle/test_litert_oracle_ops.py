"""ortnpu against LiteRT's reference kernels on the ops of issue 14 (cases_tflite_ops.py).

Same comparison as test_litert_oracle.py: a single-op ``.tflite`` run with
``OpResolverType.BUILTIN_REF`` and its ONNX QDQ twin run by import_qdq → InferenceSession must
give the same integers. Needs the ``oracle`` extra; skipped without it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

import numpy as np
import qdq_builder
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


#: Ops LiteRT's reference resolver does not register (ELU): they run on the builtin resolver,
#: whose int8 kernel is the same lookup table built in the op's Prepare (EluPrepare).
BUILTIN_ONLY = frozenset({"ELU"})


def _run_builtin(case: qdq_builder.Case) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=case.tflite, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.
                         BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), case.tflite_inputs, strict=True):
        interp.set_tensor(detail["index"], np.ascontiguousarray(value, detail["dtype"]))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.int64)


def _check(op: str, act: str, seeds: range) -> None:
    if op in BUILTIN_ONLY:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(qdq_builder, "run_litert", _run_builtin)
            bad = [m for seed in seeds if (m := mismatch(make_case(op, act, seed))) is not None]
    else:
        bad = [m for seed in seeds if (m := mismatch(make_case(op, act, seed))) is not None]
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


@pytest.mark.parametrize(("op", "act"), _params())
def test_op_equals_litert(op: str, act: str) -> None:
    _check(op, act, FAST_SEEDS[act])


@pytest.mark.slow
@pytest.mark.parametrize(("op", "act"), _params())
def test_op_equals_litert_many(op: str, act: str) -> None:
    _check(op, act, SLOW_SEEDS)


@pytest.mark.parametrize(("xq", "yq"), [
    ((0.0652347058057785, 67), (0.04348980262875557, 58)),
    ((0.033703599125146866, -59), (0.001644078060053289, -109))])
def test_elu_table_uses_the_float32_reciprocal(xq: tuple, yq: tuple) -> None:
    """Parameters where TFLite's ``f(x) * (1 / s_out)`` in float32 and a double division
    ``f(x) / s_out`` round some entries differently: ortnpu follows LiteRT."""
    from cases import _unary
    from qdq_builder import Quant

    rng = np.random.default_rng(0)
    case = _unary(rng, "int8", "ELU", "Elu", Quant(xq[0], xq[1]), Quant(yq[0], yq[1]),
                  shape=(16, 16))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qdq_builder, "run_litert", _run_builtin)
        assert mismatch(case) is None


@pytest.mark.parametrize("op", ["SQUEEZE", "EXPAND_DIMS"])
@pytest.mark.parametrize("act", ["int8", "int16"])
def test_squeeze_expand_dims_run_on_the_npu(op: str, act: str) -> None:
    """The copy ops' cases are NPU cases (a CPU fallback would equal LiteRT trivially)."""
    import ortnpu

    for seed in FAST_SEEDS[act]:
        case = make_case(op, act, seed)
        npu = ortnpu.import_qdq(case.onnx, case.target)
        assert [n.op_type for n in npu.graph.node if n.domain == "com.ortnpu"] == \
            [f"Reshape_{'i8' if act == 'int8' else 'i16'}"], case.name


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize(("x_scale", "y_scale"), [(2.0 ** -10, 2.0 ** -12), (3.7e-4, 1.9e-4),
                                                  (0.00123, 0.0005), (0.01, 0.02)])
def test_int16_gelu_every_input(approximate: bool, x_scale: float, y_scale: float) -> None:
    """Every int16 input through TFLite's interpolated GELU table (all 512 intervals, both
    ends of the range, the int16 wrap of the interpolation)."""
    from cases import _unary
    from qdq_builder import Quant
    from tflite_builder import TFLiteGraph

    xq = Quant(float(np.float32(x_scale)), 0, "int16")
    yq = Quant(float(np.float32(y_scale)), 0, "int16")
    case = _unary(np.random.default_rng(0), "int16", "GELU", "Gelu", xq, yq, shape=(256, 256),
                  approximate="tanh" if approximate else "none")
    x = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(256, 256)
    case.tflite_inputs, case.onnx_inputs = [x], {"x": xq.dequantize(x)}
    t = TFLiteGraph()   # _unary writes no options: the .tflite again, with GeluOptions
    tx = t.tensor("x", x.shape, "int16", scale=xq.scale, zero_point=0)
    ty = t.tensor("y", x.shape, "int16", scale=yq.scale, zero_point=0)
    t.op("GELU", [tx], [ty], ("GeluOptions", {"Approximate": approximate}))
    case.tflite = t.build([tx], [ty])
    assert mismatch(case) is None
