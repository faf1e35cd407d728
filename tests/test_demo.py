"""The main job on the bundled real model: int8 within one point of float, on every preset."""

from __future__ import annotations

import pytest

from ortnpu.cli import main
from ortnpu.demo import run_demo


@pytest.mark.parametrize("target", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
def test_demo_accuracy_and_placement(target: str) -> None:
    lines: list[str] = []
    result = run_demo(target, echo=lines.append)
    assert result.samples >= 500
    assert result.float_accuracy > 0.97
    assert abs(result.npu_accuracy - result.float_accuracy) <= 0.01
    placement = {p.node: p for p in result.placements}
    on_cpu = {name for name, p in placement.items() if p.device == "CPU"}
    assert on_cpu == (set() if target.startswith("tflite") else {"softmax"})   # n2d2: none
    assert all(placement[name].reason for name in on_cpu)
    text = "\n".join(lines)
    for stage in ("[1/5] optimize", "[2/5] evaluate", "[3/5] quantize", "[4/5] simulate",
                  "[5/5] compare"):
        assert stage in text


def test_demo_cli_writes_artifacts(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "float accuracy" in out and "placement" in out
    for name in ("optimized.onnx", "npu.onnx", "report.html", "compare.html"):
        assert (tmp_path / name).stat().st_size > 0
