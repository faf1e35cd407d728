"""A fast fixed-seed subset of the fuzzer (the long run is ``scripts/fuzz.py``).

Cases run in worker subprocesses; any crash, hang, non-ortnpu exception or disagreement between
the C kernels, the numpy references and onnxruntime fails the test with the replay command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ortnpu.fuzz import run_fuzz
from ortnpu.fuzz.gen import OP_SEEDS, op_case, op_model
from ortnpu.fuzz.runner import IMPORT_MISMATCH
from ortnpu.fuzz.worker import EXTRA_KINDS, KINDS, Worker

SEED = 20261123
CASES = 240


def test_fuzz_subset_has_no_crash_hang_or_foreign_exception() -> None:
    summary = run_fuzz(CASES, seed=SEED, jobs=2, timeout=60.0, batch=60)
    assert summary.cases == CASES
    assert summary.bad == 0, summary.to_text()
    assert summary.classes["ok"] > CASES // 10 and summary.classes["ortnpu"] > CASES // 10
    assert set(summary.kinds) == {k for k, _ in KINDS} | {k for k, _, _ in EXTRA_KINDS}


def test_cases_are_reproducible_from_seed_and_index() -> None:
    w = Worker(SEED)
    assert [w.kind_of(i) for i in range(50)] == [Worker(SEED).kind_of(i) for i in range(50)]
    a = op_case(np.random.default_rng([SEED, 7]), direct=True)
    b = op_case(np.random.default_rng([SEED, 7]), direct=True)
    assert a.describe() == b.describe()
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays, strict=True))


@pytest.mark.parametrize("name", sorted(OP_SEEDS))
def test_every_op_seed_is_valid_before_mutation(name: str) -> None:
    """Unmutated seeds must pass validation, or the fuzzer would only test refusals."""
    from ortnpu.domain import kernels

    rng = np.random.default_rng(0)
    for _ in range(20):
        case = OP_SEEDS[name](rng)
        attrs = case.spec.full_attrs(case.attrs)
        y = kernels.run(case.spec, case.arrays, attrs, np.dtype(case.out_dtype))
        assert y.dtype == case.out_dtype
        assert op_model(case) is not None


@pytest.mark.parametrize("seed,index,kind,error", [
    (3, 4525, "file", "ModelError"),
    (8, 2216, "file", "ModelError"), (10, 2639, "op-direct", "KernelError"),
    (13, 4462, "file", "ModelError"), (1207, 2369, "model", "ModelError")])
def test_cases_the_long_run_found_stay_ortnpu_errors(seed: int, index: int, kind: str,
                                                      error: str) -> None:
    """Regressions from ``scripts/fuzz.py``: a flipped byte made an initializer's element type
    29 (the validator's message raised KeyError), a QuantizeLinear scale of element type 69
    (the compiler's read raised KeyError); an AveragePool of a zero-width input ran on the numpy
    path (dividing by a zero count) while the C path refused it; an initializer's byte count
    and a node's rounding text broke. All must be ortnpu errors on every path. (The byte
    offsets follow the tiny CNN's NPU graph: the two cases below that the long run found at
    other offsets are rebuilt directly.) Seed 1207 case 2369: a layer's multiplier rewired to
    its own output raised KeyError in the island compiler."""
    got_kind, cls, detail = Worker(seed).run(index)
    assert got_kind == kind
    assert cls == "ortnpu", detail
    assert error in detail


def test_pad_of_a_scalar_is_a_copy() -> None:
    """Seed 1212 case 3962: a Pad of a rank-0 input with its empty pads raised numpy's
    TypeError from the reference (``np.pad`` refuses empty widths); a scalar has no axis to
    pad, so the result is the value itself."""
    got_kind, cls, detail = Worker(1212).run(3962)
    assert got_kind == "op-direct" and cls in ("ok", "ortnpu"), detail
    from ortnpu.domain.ops_layout import Pad

    y = Pad.run_reference([np.array(-7, np.int16), np.zeros(0, np.int64)], {"value": 3},
                          np.int16)
    assert y.shape == () and y == -7


def test_nan_outputs_at_the_same_places_are_the_same_result() -> None:
    """Seed 1208 case 5847: an output scale of inf made both the EP session and the imported
    graph return NaN everywhere; the comparison called that a mismatch (NaN != NaN)."""
    got_kind, cls, detail = Worker(1208).run(5847)
    assert got_kind == "ep" and cls == "ok", detail


def test_a_weight_scale_of_inf_is_refused_not_an_internal_error() -> None:
    """Seed 1216 case 8291: a weight DequantizeLinear scale of inf on n2d2-int8 raised
    OverflowError inside the execution provider's GetCapability (an "internal error"); the
    import now refuses the scale and the provider leaves the node on the CPU."""
    got_kind, cls, detail = Worker(1216).run(8291)
    assert got_kind == "ep" and cls == "ok", detail


def test_stacked_qdq_mutations_keep_the_fuzzer_running() -> None:
    """Seed 1217 case 8907: one mutation rewired a QuantizeLinear's scale input to an
    activation, and the next one looked that scale up among the initializers: the fuzzer's own
    generator raised KeyError and the worker died. Mutations now pick scales and zero points
    that are initializers."""
    got_kind, cls, detail = Worker(1217).run(8907)
    assert got_kind == "ep" and cls in ("ok", "ortnpu"), detail


def test_corrupt_intermediate_type_and_input_dimension_are_model_errors() -> None:
    """Found by the long run as flipped bytes: an intermediate's element type 63 (fusion raised
    KeyError), an input's symbolic dimension that is not UTF-8 (the session raised
    UnicodeDecodeError), an initializer's element type 29."""
    import onnx

    import ortnpu
    from ortnpu.fuzz import gen

    npu = ortnpu.quantize(gen.tiny_cnn(), "tflite-int8", gen.images(np.random.default_rng(0), 4))
    typed = onnx.ModelProto()
    typed.CopyFrom(npu)
    typed.graph.value_info[0].type.tensor_type.elem_type = 63
    with pytest.raises(ortnpu.ModelError, match="63"):
        ortnpu.InferenceSession(typed)
    named = onnx.ModelProto()
    named.CopyFrom(npu)
    named.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "QQQQ"
    data = named.SerializeToString().replace(b"QQQQ", b"Q\xffQQ")
    with pytest.raises(ortnpu.ModelError, match="UTF-8"):
        ortnpu.InferenceSession(data)
    # seed 3 case 1822 of the long run (its byte offset moved when Softmax joined the NPU):
    # an initializer of element type 29 (the validator's message raised KeyError)
    init = onnx.ModelProto()
    init.CopyFrom(npu)
    init.graph.initializer[0].data_type = 29
    with pytest.raises(ortnpu.ModelError):
        ortnpu.InferenceSession(init.SerializeToString())


def test_unknown_element_types_have_names_not_key_errors() -> None:
    from ortnpu.onnx_types import np_dtype, type_name

    assert np_dtype(1) == np.float32 and type_name(3) == "INT8"
    assert np_dtype(29) is None and type_name(29) == "unknown element type 29"


def test_workers_import_the_runners_ortnpu_not_a_checkout_in_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source checkout (no C module) in the working directory used to shadow the installed
    package in the workers, so fuzz runs from the repository root tested numpy kernels only."""
    import ortnpu
    from ortnpu.domain import native
    from ortnpu.fuzz.runner import package_dir

    shutil.copytree(Path(ortnpu.__file__).parent, tmp_path / "ortnpu",
                    ignore=shutil.ignore_patterns("*.so", "_native_build.json", "__pycache__"))
    monkeypatch.chdir(tmp_path)
    summary = run_fuzz(6, seed=SEED, jobs=1, timeout=60.0, batch=6)
    assert summary.bad == 0, summary.to_text()
    assert summary.workers["ortnpu"] == package_dir()
    assert summary.workers["c"] == native.AVAILABLE
    assert f"ortnpu from {package_dir()}" in summary.to_text()


def test_worker_refuses_another_ortnpu(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ortnpu.fuzz.worker", "--start", "0", "--stop",
                           "1", "--package", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == IMPORT_MISMATCH, proc.stderr
    assert "imported ortnpu from" in proc.stderr


def test_missing_c_kernels_fail_the_run_when_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORTNPU_KERNELS-independent: workers that report no C while C is expected fail the run."""
    from ortnpu.fuzz import runner

    monkeypatch.setenv("ORTNPU_REQUIRE_C", "1")
    real = runner._run_all

    def numpy_workers(*args, **kwargs):  # type: ignore[no-untyped-def]
        s = real(*args, **kwargs)
        s.workers["c"] = False
        return s

    monkeypatch.setattr(runner, "_run_all", numpy_workers)
    summary = runner.run_fuzz(2, seed=SEED, jobs=1, batch=2)
    assert summary.bad == 1 and "C kernels are expected" in summary.to_text()


def test_c_kernels_present_when_expected() -> None:
    """Fails loudly (not a skip) when the build saw a compiler or CI requires C."""
    from conftest import c_kernels_or_skip

    c_kernels_or_skip()
