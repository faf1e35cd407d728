"""ortnpu's per-layer cycle estimate against Arm's Vela compiler on Ethos-U (docs/measurements.md).

Each network is written as an int8 ``.tflite`` model that Vela 5.2 compiles
(``--verbose-performance``) and as the matching float ONNX model that ``ortnpu.estimate`` reads
on the preset modelled on the same Vela system config. Needs the ``vela`` extra
(``pip install ".[vela]"``); skipped without it. The MobileNetV2-like net runs by default; the
ResNet-like net and the real MobileNetV2 layer shapes are ``slow`` (Vela takes ~10 s on each).
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("tflite")
pytest.importorskip("flatbuffers")
pytest.importorskip("ethosu.vela")
if shutil.which("vela") is None:
    pytest.skip("the vela command is not on PATH", allow_module_level=True)

from vela_nets import compare


@pytest.mark.parametrize("preset", ["ethos-u55-128", "ethos-u65-256"])
@pytest.mark.parametrize("network", [
    "mobilenet_v2_like",
    pytest.param("resnet_like", marks=pytest.mark.slow),
    pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_cycles_within_vela(network: str, preset: str, tmp_path) -> None:
    rows = compare(network, preset, tmp_path)
    assert rows and all(r.vela > 0 for r in rows), "every layer must appear in Vela's CSV"
    within = sum(1 for r in rows if 0.8 <= r.ratio <= 1.2)
    total = sum(r.ortnpu for r in rows) / sum(r.vela for r in rows)
    misses = [f"{r.layer} {r.ratio:.2f}" for r in rows if not 0.8 <= r.ratio <= 1.2]
    assert within >= 0.9 * len(rows), f"{within}/{len(rows)} within 20 %; misses {misses}"
    assert 0.9 <= total <= 1.1, f"total {total:.2f}x Vela's"
