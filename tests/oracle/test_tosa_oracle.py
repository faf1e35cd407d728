"""import_tosa + InferenceSession against the TOSA reference model, bit for bit.

Skipped without tosa-tools (`pip install --no-deps tosa-tools flatbuffers`). Each case is a
seeded TOSA 1.0 graph (tosa_cases.py) run in the reference model (in a child process) and, after
``ortnpu.import_tosa``, in onnxruntime with ortnpu's kernels. The fast subset runs one seed per
op and type; the slow sweep twenty.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tosa_serializer")
pytest.importorskip("tosa_reference_model")

import tosa_cases as tc

import ortnpu
from ortnpu.errors import UnsupportedError

TYPES = {"int8": tc.I8, "int16": tc.I16}


def _check(name: str, dtype: str, seed: int, tmp_path) -> None:
    g = tc.CASES[name](np.random.default_rng(seed), TYPES[dtype])
    buf = g.ser.serialize()
    want = tc.reference(buf, g.feeds, str(tmp_path))
    model = ortnpu.import_tosa(buf)
    target = {p.key: p.value for p in model.metadata_props}["ortnpu.target"]
    assert target == ("tosa-int16" if any(f.dtype == np.int16 for f in g.feeds) else "tosa-int8")
    sess = ortnpu.InferenceSession(model.SerializeToString())
    got = sess.run(None, {i.name: f for i, f in zip(sess.get_inputs(), g.feeds, strict=True)})
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("name", tc.CASES)
def test_tosa_op_matches_reference_model(name: str, dtype: str, tmp_path) -> None:
    _check(name, dtype, 7, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("name", tc.CASES)
def test_tosa_sweep(name: str, dtype: str, seed: int, tmp_path) -> None:
    _check(name, dtype, 100 + seed, tmp_path)


def test_unsupported_op_is_named(tmp_path) -> None:
    g = tc.Graph(np.random.default_rng(0))
    x = g.inp([2, 3], tc.I8)
    a = tc.ts.TosaSerializerAttribute()
    a.ArgMaxAttribute(1, tc.ts.NanPropagationMode.PROPAGATE)
    g.op(tc.ts.Op.ARGMAX, [x], [2], tc.I32, a, output=True)
    with pytest.raises(UnsupportedError, match="TOSA op ARGMAX"):
        ortnpu.import_tosa(g.ser.serialize())


def test_int32_output_is_refused() -> None:
    g = tc.Graph(np.random.default_rng(0))
    x = g.inp([2, 3], tc.I8)
    g.rescale(x, [2, 3], tc.I8, tc.I32, [1 << 30], [30], 0, 0, output=True)
    with pytest.raises(UnsupportedError, match="int32"):
        ortnpu.import_tosa(g.ser.serialize())


def test_tosa_file_round_trip_and_cli(tmp_path) -> None:
    """A .tosa file on disk imports to the same graph as its bytes."""
    g = tc.case_conv2d(np.random.default_rng(3), tc.I8)
    path = tmp_path / "conv.tosa"
    path.write_bytes(g.ser.serialize())
    a = ortnpu.import_tosa(path)
    b = ortnpu.import_tosa(path.read_bytes())
    assert a.graph.SerializeToString() == b.graph.SerializeToString()


def test_cli_import_tosa_runs(tmp_path, capsys) -> None:
    from ortnpu.cli import main

    g = tc.case_add(np.random.default_rng(5), tc.I8)
    src = tmp_path / "add.tosa"
    src.write_bytes(g.ser.serialize())
    assert main(["import-tosa", str(src), "-o", str(tmp_path / "add.onnx")]) == 0
    assert "for tosa-int8" in capsys.readouterr().out
    want = tc.reference(src.read_bytes(), g.feeds, str(tmp_path))
    sess = ortnpu.InferenceSession(str(tmp_path / "add.onnx"))
    got = sess.run(None, {i.name: f for i, f in zip(sess.get_inputs(), g.feeds, strict=True)})
    np.testing.assert_array_equal(got[0], want[0])


def test_conv_clamp_is_fused_into_the_conv() -> None:
    g = tc.case_conv_clamp(np.random.default_rng(1), tc.I8)
    model = ortnpu.import_tosa(g.ser.serialize())
    convs = [n for n in model.graph.node if n.op_type.startswith("Conv")]
    assert len(convs) == 1 and not any(n.op_type.startswith("Lut") for n in model.graph.node)
    attrs = {a.name: a.i for a in convs[0].attribute if a.name in ("act_min", "act_max")}
    assert attrs == {"act_min": -10, "act_max": 60}


def test_padded_avg_pool_with_zero_points_is_refused() -> None:
    g = tc.Graph(np.random.default_rng(0))
    x = g.inp([1, 5, 5, 2], tc.I8)
    a = tc.ts.TosaSerializerAttribute()
    a.AvgPool2dAttribute([3, 3], [2, 2], [1, 1, 1, 1], tc.I32)
    zp = g.const(np.array([3], np.int8), tc.I8)
    g.op(tc.ts.Op.AVG_POOL2D, [x, zp, zp], [1, 3, 3, 2], tc.I8, a, output=True)
    with pytest.raises(UnsupportedError, match="AVG_POOL2D .* padding"):
        ortnpu.import_tosa(g.ser.serialize())


def _sub_with_ties() -> tc.Graph:
    """b's RESCALE by exactly 1/2 rounds ties: -round(b/2) != round(-b/2) for odd b."""
    g = tc.Graph(np.random.default_rng(0))
    a = g.inp([8], tc.I8, np.array([0, 10, -10, 0, 3, -3, 100, -50]))
    b = g.inp([8], tc.I8, np.array([-127, -5, -3, -1, 1, 3, 5, 127]))
    a32 = g.rescale(a, [8], tc.I8, tc.I32, [1 << 30], [30], 0, 0)
    b32 = g.rescale(b, [8], tc.I8, tc.I32, [1 << 30], [31], 0, 0)
    s = g.op(tc.ts.Op.SUB, [a32, b32], [8], tc.I32, tc._attr("SubAttribute"))
    g.rescale(s, [8], tc.I32, tc.I8, [1 << 30], [30], 0, 0, output=True)
    return g


def test_sub_with_rounding_ties_runs_with_tosa_order(tmp_path) -> None:
    """tosa-int8's sub_negate = 'result' subtracts the rounded b as TOSA does: bit-exact where
    negating b's multiplier (TFLite's order) rounds every odd b the other way."""
    g = _sub_with_ties()
    buf = g.ser.serialize()
    want = tc.reference(buf, g.feeds, str(tmp_path))[0]
    model = ortnpu.import_tosa(buf)
    sub = next(n for n in model.graph.node if n.op_type.startswith("Sub"))
    assert {a.name: a.s for a in sub.attribute}["negate"] == b"result"
    sess = ortnpu.InferenceSession(model.SerializeToString())
    feeds = {i.name: f for i, f in zip(sess.get_inputs(), g.feeds, strict=True)}
    np.testing.assert_array_equal(sess.run(None, feeds)[0], want)
    for a in sub.attribute:   # the same graph with TFLite's order: every value of b differs
        if a.name == "negate":
            a.s = b"multiplier"
    other = ortnpu.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert np.count_nonzero(other != want) == 8


def test_sub_with_rounding_ties_is_refused_for_tflite_order() -> None:
    with pytest.raises(UnsupportedError, match="SUB .* ties.*sub_negate"):
        ortnpu.import_tosa(_sub_with_ties().ser.serialize(), target="tflite-int8")
