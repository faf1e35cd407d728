"""The conformance kit: generation, bit-exact runs through onnxruntime, failure detection, CLI."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest

from ortnpu import conformance
from ortnpu.cli import main
from ortnpu.conformance.case import DATA_SET, read_tensor, write_tensor
from ortnpu.conformance.edges import effective_factor, tie_accumulators
from ortnpu.domain import OPS, OPS_BY_NAME, kernels
from ortnpu.domain.arith import ROUNDING_RULES, rescale_bounds
from ortnpu.target import preset_names


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every suite, generated once for the module."""
    root = tmp_path_factory.mktemp("kit")
    conformance.generate(root)
    return root


def _copy_suite(kit: Path, suite: str, dest: Path, ops: tuple[str, ...] = ()) -> Path:
    """Copy part of the kit so a test may damage it."""
    for case in conformance.find_cases(kit / suite, ops or None):
        shutil.copytree(case, dest / case.name)
    return dest


def test_generation_covers_every_op_and_suite(kit: Path) -> None:
    cases = conformance.find_cases(kit)
    assert 300 <= len(cases) <= 1400   # 9 suites of presets (tosa-int8/int16 too), 5 rules
    suites = {p.parent.name for p in cases}
    assert suites == set(preset_names()) | {f"rule-{r}" for r in ROUNDING_RULES}
    for preset in preset_names():
        ops = {p.name.split("_")[1] for p in cases if p.parent.name == preset}
        assert ops == {op.name.lower() for op in OPS} | {"chain"}, preset


def test_layout_parameters_are_initializers(kit: Path) -> None:
    folder = kit / "tflite-int8" / "test_conv_depthwise"
    model = onnx.load(str(folder / "model.onnx"))
    inits = {i.name for i in model.graph.initializer}
    assert inits == {"w", "bias", "multiplier", "shift"}
    assert [i.name for i in model.graph.input] == ["x"]
    assert read_tensor(folder / DATA_SET / "input_0.pb").dtype == np.int8
    assert read_tensor(folder / DATA_SET / "output_0.pb").dtype == np.int8
    node = model.graph.node[0]
    assert (node.domain, node.op_type) == ("com.ortnpu", "Conv_i8")
    assert {a.name for a in node.attribute} == {a.name for a in OPS_BY_NAME["Conv"].all_attrs()}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = conformance.generate(tmp_path / "a", ["tflite-int8"], ["Conv", "Add"])
    b = conformance.generate(tmp_path / "b", ["tflite-int8"], ["Conv", "Add"])
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        for rel in ("model.onnx", f"{DATA_SET}/input_0.pb", f"{DATA_SET}/output_0.pb"):
            assert (pa / rel).read_bytes() == (pb / rel).read_bytes(), pa / rel


def test_target_arithmetic_is_used() -> None:
    by_suite = {s: conformance.build_suite(s) for s in preset_names()}
    for suite, cases in by_suite.items():
        arith = conformance.profile_of(__import__("ortnpu").load_target(suite))
        for c in cases:
            layers = c.layers if c.op == "chain" else [c]   # a chain's layers follow it too
            for layer in layers:
                if "rounding" in layer.attrs:
                    assert layer.attrs["rounding"] == arith.rounding, c.dirname
                if "acc_bits" in layer.attrs:
                    assert layer.attrs["acc_bits"] == arith.acc_bits, c.dirname
                if layer.op == "Add":
                    assert layer.attrs["left_shift"] == arith.add_left_shift
            if c.op in ("Conv", "FullyConnected") and not arith.per_channel:
                assert c.inputs[3].value.size == 1, c.dirname
    a16 = by_suite["tflite-a16w8"]
    assert {c.inputs[0].value.dtype for c in a16 if c.op == "Conv"} == {np.dtype(np.int16)}
    n2d2 = {c.dirname: c for c in by_suite["n2d2-int8"]}
    assert n2d2["test_conv_relu"].out_dtype == np.uint8


def test_shift_sweep_covers_every_shift() -> None:
    for rule in ROUNDING_RULES:
        cases = {c.dirname: c for c in conformance.build_suite(f"rule-{rule}")}
        sweep = cases["test_fullyconnected_sweep_int8_acc32"]
        shifts = set(sweep.inputs[4].value.tolist())
        lo, hi = rescale_bounds(rule)[1]
        assert shifts == set(range(lo, hi + 1)), rule
        mults = set(sweep.inputs[3].value.tolist())
        assert {(1 << 31) - 1, 1 << 30} <= mults or rule in ("half_up", "tosa_double")


@pytest.mark.parametrize("rule", ROUNDING_RULES)
def test_tie_accumulators_are_exact_ties(rule: str) -> None:
    hits = 0
    for m in (1 << 30, 3 << 29, (1 << 31) - 1, 1518500250, 3):
        for s in range(rescale_bounds(rule)[1][0], 1):
            p, e = effective_factor(rule, m, s)
            for acc in tie_accumulators(rule, m, s, -(1 << 31), (1 << 31) - 1):
                assert (Fraction(acc * p) * Fraction(2) ** e) % 1 == Fraction(1, 2)
                hits += 1
    assert hits > 50


def test_every_case_passes_through_onnxruntime(kit: Path) -> None:
    """Every op's onnxruntime kernel equals its numpy reference bit for bit on all cases."""
    report = conformance.run_cases(kit)
    assert report.failed == 0, "\n".join(report.lines())
    assert report.passed == len(conformance.find_cases(kit))


def test_corrupted_expected_output_fails(kit: Path, tmp_path: Path) -> None:
    root = _copy_suite(kit, "tflite-int8", tmp_path, ("conv", "averagepool"))
    target = root / "test_conv_ties" / DATA_SET / "output_0.pb"
    y = read_tensor(target).copy()
    y.reshape(-1)[7] ^= 1
    write_tensor(target, y, "y")
    wrong_type = root / "test_averagepool_2x2_s2" / DATA_SET / "output_0.pb"
    write_tensor(wrong_type, read_tensor(wrong_type).astype(np.int16), "y")
    report = conformance.run_cases(root)
    failed = {r.name: r.message for r in report.results if not r.passed}
    assert set(failed) == {"ties", "2x2_s2"}
    assert "1 of" in failed["ties"] and "dtype" in failed["2x2_s2"]
    assert report.lines()[-1] == f"{report.passed} passed, 2 failed"


def test_runner_is_pluggable_and_errors_are_failures(kit: Path) -> None:
    calls = []

    def broken(model_path: Path, inputs: dict) -> list:
        calls.append(model_path)
        raise RuntimeError("device not found")

    report = conformance.run_cases(kit / "tflite-int8", broken, ["Pad"])
    assert len(calls) == report.failed == 2
    assert "device not found" in report.results[0].message


def test_cli_exit_codes(kit: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["conformance", "--target", "n2d2-int8", "--op", "GlobalAveragePool"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "10 passed, 0 failed"
    out = tmp_path / "vectors"
    assert main(["conformance", "--target", "tflite-a16w8", "--export", str(out)]) == 0
    assert (out / "test_conv_3x3_pad1" / "model.onnx").is_file()
    capsys.readouterr()
    assert main(["conformance", str(out), "--op", "Lut"]) == 0
    y = out / "test_lut_to_int16" / DATA_SET / "output_0.pb"
    write_tensor(y, read_tensor(y) + np.int16(1), "y")
    assert main(["conformance", str(out), "--op", "Lut"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0 passed, 1 failed"
    assert main(["conformance", "--op", "NoSuchOp"]) == 2
    assert main(["conformance", str(tmp_path / "missing")]) == 2
    assert main(["conformance", str(out), "--runner", "nope"]) == 2


def test_cli_help_lists_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["conformance", "--help"])
    text = capsys.readouterr().out
    for option in ("--target", "--export", "--op", "--runner", "DIR", "passed"):
        assert option in text


@pytest.mark.usefixtures("require_c")
def test_c_and_numpy_kernels_agree_on_every_case(kit: Path) -> None:
    outputs: dict[str, dict[str, list]] = {}
    before = kernels.get_mode()   # ORTNPU_KERNELS=numpy runs of the suite keep their mode
    for mode in ("c", "numpy"):
        kernels.set_mode(mode)
        try:
            seen: dict[str, list] = {}

            def record(model_path: Path, inputs: dict, seen: dict = seen) -> list:
                result = conformance.ortnpu_runner(model_path, inputs)
                seen[str(model_path)] = result
                return result

            report = conformance.run_cases(kit, record)
            assert report.failed == 0, "\n".join(report.lines())
            outputs[mode] = seen
        finally:
            kernels.set_mode(before)
    assert outputs["c"].keys() == outputs["numpy"].keys()
    for key, got in outputs["c"].items():
        want = outputs["numpy"][key]
        assert all(a.dtype == b.dtype and np.array_equal(a, b)
                   for a, b in zip(got, want, strict=True)), key


@pytest.mark.usefixtures("require_c")
@pytest.mark.skipif(kernels.get_mode() == "numpy", reason="the numpy kernels are selected")
def test_chain_cases_reach_the_compiled_programs(kit: Path) -> None:
    """Single-op cases never fuse; the chains run through compiled C programs (fixed batches as
    one unit, symbolic batches sample by sample) and give the numpy references' bits."""
    import ortnpu

    chains = conformance.find_cases(kit, ["chain"])
    assert len(chains) == 4 * len(preset_names())
    for folder in chains:
        stored = conformance.read_case(folder)
        sess = ortnpu.InferenceSession(str(stored.model_path))
        assert sess.compile_reports and all(r.native for r in sess.compile_reports), folder
        got = sess.run(None, stored.inputs)
        assert conformance.compare(stored.expected, got) == "", folder
