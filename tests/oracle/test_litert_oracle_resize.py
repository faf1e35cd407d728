"""ortnpu's Resize against LiteRT's RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR reference
kernels (int8 and 16x8), cases in cases_resize.py. Each case must also run on the NPU: a resize
left on the CPU would compare onnxruntime's float Resize, not ortnpu's kernel."""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases_resize import make_case
from qdq_builder import Case, mismatch

OPS = ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")
FAST_SEEDS = {"int8": range(30), "int16": range(15)}
SLOW_SEEDS = range(30, 330)


def _on_npu(case: Case) -> bool:
    import ortnpu

    npu = ortnpu.import_qdq(case.onnx, case.target)
    return any(n.op_type.startswith("Resize_") and n.domain == "com.ortnpu"
               for n in npu.graph.node)


def _check(op: str, act: str, seeds: range) -> None:
    bad, cpu = [], []
    for seed in seeds:
        case = make_case(op, act, seed)
        if not _on_npu(case):
            cpu.append(case.name)
        elif (m := mismatch(case)) is not None:
            bad.append(m)
    assert not cpu, f"{len(cpu)} cases stayed on the CPU:\n" + "\n".join(cpu[:5])
    assert not bad, f"{len(bad)}/{len(seeds)} cases differ from LiteRT:\n" + "\n".join(bad[:5])


@pytest.mark.parametrize("act", ["int8", "int16"])
@pytest.mark.parametrize("op", OPS)
def test_resize_equals_litert(op: str, act: str) -> None:
    _check(op, act, FAST_SEEDS[act])


@pytest.mark.slow
@pytest.mark.parametrize("act", ["int8", "int16"])
@pytest.mark.parametrize("op", OPS)
def test_resize_equals_litert_many(op: str, act: str) -> None:
    _check(op, act, SLOW_SEEDS)
