"""Targets: presets load, TOML is validated with errors naming file, key and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

import ortnpu
from ortnpu.target import parse_target, preset_names


def test_presets_load_with_their_arithmetic() -> None:
    assert set(preset_names()) >= {"tflite-int8", "tflite-a16w8", "n2d2-int8"}
    t = ortnpu.load_target()
    assert t.name == "tflite-int8"
    assert t.arithmetic.activation_range == (-128, 127)
    assert t.arithmetic.weight_range == (-127, 127)
    assert (t.arithmetic.rounding, t.arithmetic.accumulator_bits) == ("tflite_double", 32)
    a16 = ortnpu.load_target("tflite-a16w8").arithmetic
    assert (a16.activation_bits, a16.accumulator_bits, a16.rounding) == (16, 64, "tflite_int64")
    n2d2 = ortnpu.load_target("n2d2-int8").arithmetic
    assert n2d2.rescale == "single_shift" and n2d2.power_of_two_scales
    assert n2d2.activation_range == (-127, 127) and n2d2.unsigned_after_relu


def test_round_trip_through_toml(tmp_path: Path) -> None:
    for name in preset_names():
        t = ortnpu.load_target(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(t.to_toml())
        again = ortnpu.load_target(path)
        assert (again.arithmetic, again.support, again.hardware) == (
            t.arithmetic, t.support, t.hardware)


@pytest.mark.parametrize(("text", "fragment"), [
    ('name = "x"\n[arithmetic]\nrescale = "magic"', "rescale: 'magic' is not allowed; use one of"),
    ('name = "x"\n[arithmetic]\nactivation_bits = 12', "activation_bits: 12 is not allowed"),
    ('name = "x"\n[arithmetic]\nactivaton_bits = 8', "unknown key; known keys are"),
    ('name = "x"\n[hardware]\nclock_mhz = "fast"', "clock_mhz: expected a number"),
    ('name = "x"\n[hardware]\nclock_mhz = -1.0', "below the minimum"),
    ('name = "x"\nspeed = 3', "unknown key 'speed'"),
    ('[arithmetic]\nactivation_bits = 8', "key 'name' is required"),
    ('name = "x"\n[arithmetic\n', "not valid TOML"),
    ('name = "x"\n[arithmetic]\nactivation_bits = 16\naccumulator_bits = 32',
     "16-bit activations need a 64-bit accumulator"),
    ('name = "x"\n[arithmetic]\nrescale = "single_shift"', "shift rescale modes round with"),
])
def test_malformed_targets_name_file_key_and_allowed_values(text: str, fragment: str) -> None:
    with pytest.raises(ortnpu.TargetError) as info:
        parse_target(text, origin="my.toml")
    assert fragment in str(info.value)
    assert "my.toml" in str(info.value)


def test_unknown_preset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ortnpu.TargetError, match="unknown target 'nope'"):
        ortnpu.load_target("nope")
    with pytest.raises(ortnpu.TargetError, match="cannot read target file"):
        ortnpu.load_target(tmp_path / "missing.toml")
