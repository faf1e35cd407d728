"""optimize's output check: bounded memory, and a way forward when it cannot run as asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ortnpu.cli import main
from ortnpu.errors import ModelError
from ortnpu.passes.verify import MAX_CHECK_TENSOR_BYTES, compare_models, random_inputs


def _relu(dims: list) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", 1, dims)],
                          [helper.make_tensor_value_info("y", 1, dims)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _expand() -> onnx.ModelProto:
    """A 1x1 input expanded to [20000, 20000] (1.5 GiB) inside the graph."""
    shape = numpy_helper.from_array(np.array([20000, 20000], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["e"]),
                           helper.make_node("ReduceSum", ["e"], ["y"], keepdims=0)], "g",
                          [helper.make_tensor_value_info("x", 1, [1, 1])],
                          [helper.make_tensor_value_info("y", 1, [])], [shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _reflect_pad() -> onnx.ModelProto:
    """Valid for any sequence length >= 3; the check's default length 1 cannot be padded."""
    pads = numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 2], np.int64), "pads")
    g = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], "g",
                          [helper.make_tensor_value_info("x", 1, ["N", 4, "T"])],
                          [helper.make_tensor_value_info("y", 1, None)], [pads])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("dims", [[12000, 12000], [1 << 20, 1 << 20]])
def test_huge_declared_inputs_are_refused_before_allocating(dims: list) -> None:
    model = _relu(dims)
    with pytest.raises(ModelError, match=r"input 'x' of shape .* --input-shape .* --no-verify"):
        random_inputs(model)
    with pytest.raises(ModelError, match="input 'x'"):
        compare_models(model, model)


def test_huge_intermediate_is_refused() -> None:
    from ortnpu.passes import optimize

    model = _expand()
    with pytest.raises(ModelError, match=r"tensor 'e' of shape \[20000, 20000\].*--no-verify"):
        compare_models(model, optimize(model))


def test_ordinary_inputs_still_run() -> None:
    side = int((MAX_CHECK_TENSOR_BYTES // 4) ** 0.5) // 64  # far below the limit
    model = _relu([side, side])
    assert compare_models(model, model, samples=1)["ok"]


def test_optimize_cli_stays_small_and_says_what_to_do(tmp_path: Path) -> None:
    """The 73-byte model of the report took 8.6 GB; now the CLI refuses in bounded memory."""
    onnx.save(_relu([12000, 12000]), tmp_path / "big.onnx")
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({3 << 30}, {3 << 30}))
        from ortnpu.cli import main
        sys.exit(main(["optimize", {str(tmp_path / 'big.onnx')!r}, "-o",
                       {str(tmp_path / 'o.onnx')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--no-verify" in err[0] and "'x'" in err[0], err


def test_dynamic_shape_failure_suggests_input_shape(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    onnx.save(_reflect_pad(), tmp_path / "pad.onnx")
    assert main(["optimize", str(tmp_path / "pad.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "x=1,4,1" in err[0] and "--input-shape" in err[0] and "--no-verify" in err[0]
    assert main(["optimize", str(tmp_path / "pad.onnx"), "-o", str(tmp_path / "o.onnx"),
                 "--input-shape", "x=1,4,8"]) == 0
