"""Robustness at the edges: bad model files, NPU graphs, run-time inputs, targets, calibration
data; sessions of different targets side by side and from several threads; registration once.

Every failure must be an ``ortnpu.OrtNpuError`` naming what is wrong; risky paths run in a
subprocess so that an abort or a segfault fails the test instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.cli import main
from ortnpu.domain import Conv, make_node
from ortnpu.fuzz.gen import images, tiny_cnn
from ortnpu.validate import load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def npu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return ortnpu.quantize(tiny_cnn(), "tflite-int8", images(rng, 16))


@pytest.fixture(scope="module")
def npu_n2d2() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return ortnpu.quantize(tiny_cnn(), "n2d2-int8", images(rng, 16))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# ------------------------------------------------------------------------- model files
@pytest.mark.parametrize(("content", "fragment"), [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"PK\x03\x04rest", "zip archive"),
    (b"\x89HDF\r\n", "HDF5"),
    (b"hello, not a model", "not a readable ONNX model"),
    (b"ir_version: 8\ngraph {}", "ONNX text format"),
])
def test_unusable_files_name_the_file(tmp_path: Path, content: bytes | None,
                                      fragment: str) -> None:
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ortnpu.ModelError, match=fragment) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_file_is_a_model_error(tmp_path: Path, npu: onnx.ModelProto) -> None:
    data = npu.SerializeToString()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(ortnpu.ModelError):
            load_model(path)
        with pytest.raises(ortnpu.ModelError):
            ortnpu.InferenceSession(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ortnpu.ModelError, match="is a directory"):
        load_model(tmp_path)


def _mutated(model: onnx.ModelProto, change) -> onnx.ModelProto:
    out = _copy(model)
    change(out)
    return out


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda m: setattr(m, "ir_version", 99), "IR version 99 is newer"),
    (lambda m: setattr(m, "ir_version", 0), "no IR version"),
    (lambda m: setattr(m.opset_import[0], "version", 99), "opset 99 is newer"),
    (lambda m: setattr(m.opset_import[0], "version", 5), "opset 5 is too old"),
    (lambda m: m.graph.initializer.remove(m.graph.initializer[0]), "reads tensor 'w1'"),
    (lambda m: m.graph.node[0].input.__setitem__(0, "ghost"), "reads tensor 'ghost'"),
    (lambda m: m.graph.node.remove(m.graph.node[-1]), "graph output 'y' is not produced"),
    (lambda m: m.graph.node[1].output.__setitem__(0, "c1"), "'c1' is produced twice"),
    (lambda m: setattr(m.graph.initializer[0], "raw_data", m.graph.initializer[0].raw_data[:-4]),
     "initializer 'w1' holds"),
    (lambda m: m.graph.node[0].__setattr__("domain", "com.nowhere"), "does not import"),
])
def test_broken_float_models_name_node_or_tensor(change, fragment: str) -> None:
    with pytest.raises(ortnpu.ModelError, match=fragment):
        load_model(_mutated(tiny_cnn(), change))


def test_dynamic_shapes_are_refused_where_fixed_are_needed() -> None:
    with pytest.raises(ortnpu.ModelError, match=r"input 'x' dimension 0 is dynamic \('N'\)"):
        load_model(tiny_cnn(), need_static_shapes=True)
    load_model(tiny_cnn(batch=1), need_static_shapes=True)


def test_external_data_missing_names_tensor_and_file(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(tiny_cnn(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert load_model(path).graph.initializer[0].raw_data
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ortnpu.ModelError, match="external file 'weights.bin'"):
        load_model(path)


# -------------------------------------------------------------------------- NPU graphs
def _conv_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type.startswith("Conv_"))


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    old = next(a for a in node.attribute if a.name == name)
    node.attribute.remove(old)
    node.attribute.append(helper.make_attribute(name, value))


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("stride_h", -1, "stride_h' = -1 is outside"),
    ("stride_h", 1 << 40, "is outside"),
    ("pad_top", -5, "pad_top' = -5 is outside"),
    ("rounding", "banker", "not one of"),
    ("acc_bits", 16, "not one of"),
    ("act_min", 1.5, "must be a scalar int"),
    ("bogus", 3, "unknown attribute 'bogus'"),
])
def test_npu_attributes_out_of_range_are_model_errors(npu: onnx.ModelProto, name: str, value,
                                                      fragment: str) -> None:
    model = _copy(npu)
    node = _conv_node(model)
    if name == "bogus":
        node.attribute.append(helper.make_attribute(name, value))
    else:
        _set_attr(node, name, value)
    with pytest.raises(ortnpu.ModelError, match=fragment) as info:
        ortnpu.InferenceSession(model)
    assert node.name in str(info.value)


def test_npu_missing_attribute_and_unknown_op_type(npu: onnx.ModelProto) -> None:
    model = _copy(npu)
    node = _conv_node(model)
    node.attribute.remove(next(a for a in node.attribute if a.name == "group"))
    with pytest.raises(ortnpu.ModelError, match=r"attribute\(s\) \['group'\] are missing"):
        ortnpu.InferenceSession(model)
    model = _copy(npu)
    _conv_node(model).op_type = "Conv_i32"
    with pytest.raises(ortnpu.ModelError, match="not an op type"):
        ortnpu.InferenceSession(model)


def _replace_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value, name))


@pytest.mark.parametrize(("which", "make", "fragment"), [
    (3, lambda a: a[:-1], "multiplier must be a 1-D tensor of length 1 or 6"),
    (4, lambda a: np.full_like(a, 40), "shift values must lie in"),
    (4, lambda a: np.full_like(a, -100), "shift values must lie in"),
    (3, lambda a: np.full_like(a, -5), "multiplier values must lie in"),
    (2, lambda a: a[:3], "bias must have shape"),
    (3, lambda a: a.astype(np.int64), "the op needs int32"),
])
def test_npu_parameter_tensors_are_checked_before_the_kernel(npu: onnx.ModelProto, which: int,
                                                             make, fragment: str) -> None:
    model = _copy(npu)
    node = _conv_node(model)
    name = node.input[which]
    arr = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
    _replace_init(model, name, make(arr))
    x = images(np.random.default_rng(1), 2)
    with pytest.raises(ortnpu.OrtNpuError, match=fragment) as info:
        ortnpu.InferenceSession(model).run(None, {"x": x})
    assert node.name in str(info.value)


def test_lut_table_of_the_wrong_length(npu: onnx.ModelProto) -> None:
    model = _copy(npu)
    node = next(n for n in model.graph.node if n.op_type.startswith("Lut_"))
    table = numpy_helper.to_array(next(t for t in model.graph.initializer
                                       if t.name == node.input[1]))
    _replace_init(model, node.input[1], table[:255])
    with pytest.raises(ortnpu.KernelError, match="needs a table of 256 entries"):
        ortnpu.InferenceSession(model).run(None, {"x": images(np.random.default_rng(1), 1)})


# ------------------------------------------------------------------------ run-time inputs
@pytest.mark.parametrize(("value", "fragment"), [
    (np.zeros((1, 3, 8, 8), np.float64), "dtype float64, the model expects float32"),
    (np.zeros((3, 8, 8), np.float32), "rank 3"),
    (np.zeros((1, 3, 8, 9), np.float32), "dimension 3 is 9"),
    ([[1.0, 2.0], [3.0]], "not an array"),
    (np.array(["a"]), "dtype <U1"),
])
def test_bad_feeds_are_model_errors(npu: onnx.ModelProto, value, fragment: str) -> None:
    with pytest.raises(ortnpu.ModelError, match=fragment):
        ortnpu.InferenceSession(npu).run(None, {"x": value})


def test_empty_batch_gives_empty_outputs(npu: onnx.ModelProto) -> None:
    out = ortnpu.InferenceSession(npu).run(None, {"x": np.zeros((0, 3, 8, 8), np.float32)})[0]
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_non_contiguous_input_equals_contiguous(npu: onnx.ModelProto) -> None:
    sess = ortnpu.InferenceSession(npu)
    x = images(np.random.default_rng(2), 3)
    strided = np.asfortranarray(x)
    assert np.array_equal(sess.run(None, {"x": x})[0], sess.run(None, {"x": strided})[0])


def test_nan_is_refused_by_default_with_its_position(npu: onnx.ModelProto) -> None:
    x = images(np.random.default_rng(3), 2)
    x[1, 2, 3, 4] = np.nan
    with pytest.raises(ortnpu.ModelError, match=r"1 NaN value\(s\), the first at index "
                                                r"\[1, 2, 3, 4\]"):
        ortnpu.InferenceSession(npu).run(None, {"x": x})


def test_nan_policy_zero_is_deterministic_and_equals_zero(npu: onnx.ModelProto) -> None:
    x = images(np.random.default_rng(4), 2)
    zeroed = x.copy()
    x[0, 0, 0, :3] = np.nan
    zeroed[0, 0, 0, :3] = 0.0
    sess = ortnpu.InferenceSession(npu, nan_policy="zero")
    a, b = sess.run(None, {"x": x})[0], sess.run(None, {"x": x})[0]
    assert np.array_equal(a, b)
    assert np.array_equal(a, ortnpu.InferenceSession(npu).run(None, {"x": zeroed})[0])
    assert np.all(np.isfinite(a))
    with pytest.raises(ortnpu.ModelError, match="nan_policy must be one of"):
        ortnpu.InferenceSession(npu, nan_policy="ignore")


def test_nan_policy_allow_runs(npu: onnx.ModelProto) -> None:
    x = images(np.random.default_rng(5), 1)
    x[0, 0, 0, 0] = np.nan
    out = ortnpu.InferenceSession(npu, nan_policy="allow").run(None, {"x": x})[0]
    assert out.shape == (1, 4)


def test_infinity_saturates_like_a_huge_value(npu: onnx.ModelProto) -> None:
    x = images(np.random.default_rng(6), 2)
    big = x.copy()
    x[0, 1, 2, 3], x[1, 0, 0, 0] = np.inf, -np.inf
    big[0, 1, 2, 3], big[1, 0, 0, 0] = 3e38, -3e38
    sess = ortnpu.InferenceSession(npu)
    out = sess.run(None, {"x": x})[0]
    assert np.all(np.isfinite(out))
    assert np.array_equal(out, sess.run(None, {"x": big})[0])


# -------------------------------------------------------------------------------- CLI
def test_cli_bad_model_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 3)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((1, 3, 8, 8), np.float32))
    for argv in (["run", str(bad), "--inputs", str(inputs)],
                 ["export", str(bad), "-o", str(tmp_path / "o.onnx")],
                 ["optimize", str(bad), "-o", str(tmp_path / "o.onnx")],
                 ["evaluate", str(bad)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bad.onnx" in err[0], (argv, err)


def test_cli_truncated_model_in_a_subprocess(tmp_path: Path, npu: onnx.ModelProto) -> None:
    path = tmp_path / "npu.onnx"
    path.write_bytes(npu.SerializeToString()[:500])
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=images(np.random.default_rng(0), 1))
    proc = subprocess.run([sys.executable, "-m", "ortnpu", "run", str(path), "--inputs",
                           str(inputs)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)  # outside the checkout: the installed ortnpu
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "npu.onnx" in proc.stderr


# ---------------------------------------------------------------------------- targets
@pytest.mark.parametrize(("text", "fragment"), [
    ('name = "t"\n[arithmetic]\nactivation_bits = 7\n', "not allowed"),
    ('name = "t"\n[arithmetic]\nactivation_bits = 99999999999999999999\n', "not allowed"),
    ('name = "t"\n[hardware]\nclock_mhz = nan\n', "clock_mhz: nan is not a finite number"),
    ('name = "t"\n[hardware]\ndram_gbps = inf\n', "dram_gbps: inf is not a finite number"),
    ('name = "t"\n[hardware]\nclock_mhz = -1.0\n', "below the minimum"),
    ('name = "t"\n[support]\nop_types = ["Conv", 3]\n', "expected a list of strings"),
    ('name = "t"\narithmetic = 3\n', r"\[arithmetic\] must be a table"),
    ('name = "t"\n[arithmetic]\nrounding = "x"\nrounding = "y"\n', "not valid TOML"),
    ('name = "t"\n[arithmetic]\nweight_bitz = 8\n', "unknown key"),
    ('name = "t"\n[arithmetic]\nactivation_bits = 16\naccumulator_bits = 32\n',
     "need a 64-bit accumulator"),
    ("name = \"t\"\n[arithmetic\n", "not valid TOML"),
])
def test_bad_targets_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "npu.toml"
    path.write_text(text)
    with pytest.raises(ortnpu.TargetError, match=fragment) as info:
        ortnpu.load_target(str(path))
    assert "npu.toml" in str(info.value)


def test_undecodable_target_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ortnpu.TargetError, match="bin.toml"):
        ortnpu.load_target(str(path))


# ------------------------------------------------------------------------ calibration
@pytest.mark.parametrize(("data", "fragment"), [
    (np.zeros((0, 3, 8, 8), np.float32), "empty"),
    ([], "empty"),
    ([{"x": np.zeros((0, 3, 8, 8), np.float32)}], "is empty"),
    ([{"image": np.zeros((1, 3, 8, 8), np.float32)}], "lacks input"),
    ([{"x": np.zeros((1, 3, 8, 8), np.float32), "label": np.zeros(1)}],
     r"has input\(s\) \['label'\] the model does not have"),
    ([{"x": [["a"]]}], "numeric arrays"),
    ([np.zeros((1, 3, 8, 8), np.float32)], "must be dicts"),
])
def test_bad_calibration_data(data, fragment: str) -> None:
    with pytest.raises(ortnpu.CalibrationError, match=fragment):
        ortnpu.quantize(tiny_cnn(), "tflite-int8", data)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_calibration_refuses_nan_and_inf(special: float) -> None:
    x = images(np.random.default_rng(0), 4)
    x[2, 1, 0, 0] = special
    with pytest.raises(ortnpu.CalibrationError, match="NaN or infinity"):
        ortnpu.quantize(tiny_cnn(), "tflite-int8", x)


@pytest.mark.parametrize("preset", ["tflite-int8", "tflite-a16w8", "n2d2-int8"])
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_calibration_gives_finite_scales(preset: str, value: float) -> None:
    npu = ortnpu.quantize(tiny_cnn(), preset, np.full((4, 3, 8, 8), value, np.float32))
    for t in npu.graph.initializer:
        if "scale" in t.name:
            s = numpy_helper.to_array(t)
            assert np.all(np.isfinite(s)) and np.all(s > 0), t.name
    out = ortnpu.InferenceSession(npu).run(None, {"x": images(np.random.default_rng(1), 2)})[0]
    assert np.all(np.isfinite(out))


# -------------------------------------------------------------------------- concurrency
def test_two_targets_in_one_process_do_not_interfere(npu: onnx.ModelProto,
                                                     npu_n2d2: onnx.ModelProto) -> None:
    x = images(np.random.default_rng(7), 4)
    a, b = ortnpu.InferenceSession(npu), ortnpu.InferenceSession(npu_n2d2)
    alone_a, alone_b = a.run(None, {"x": x})[0], b.run(None, {"x": x})[0]
    assert not np.array_equal(alone_a, alone_b)  # the targets really differ
    for _ in range(3):  # interleaved
        assert np.array_equal(b.run(None, {"x": x})[0], alone_b)
        assert np.array_equal(a.run(None, {"x": x})[0], alone_a)
    results: dict[tuple[str, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(tag: str, sess: ortnpu.InferenceSession, k: int) -> None:
        try:
            for _ in range(5):
                results[(tag, k)] = sess.run(None, {"x": x})[0]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tag, s, k))
               for k in range(2) for tag, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (tag, _), out in results.items():
        assert np.array_equal(out, alone_a if tag == "a" else alone_b)


def test_one_session_from_four_threads_equals_serial(npu: onnx.ModelProto) -> None:
    sess = ortnpu.InferenceSession(npu)
    rng = np.random.default_rng(8)
    xs = [images(rng, 1 + k % 3) for k in range(16)]
    serial = [sess.run(None, {"x": x})[0] for x in xs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for k in range(t, 16, 4):
                results[k] = sess.run(None, {"x": xs[k]})[0]
            bad = xs[t].copy()
            bad[0, 0, 0, 0] = np.nan  # an error in one thread leaves the others alone
            with contextlib.suppress(ortnpu.ModelError):
                sess.run(None, {"x": bad})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(results[k], serial[k]) for k in range(16))


def test_kernel_errors_stay_in_their_thread(npu: onnx.ModelProto) -> None:
    bad = _copy(npu)
    node = _conv_node(bad)
    name = node.input[4]
    arr = numpy_helper.to_array(next(t for t in bad.graph.initializer if t.name == name))
    _replace_init(bad, name, np.full_like(arr, 40))
    good_sess, bad_sess = ortnpu.InferenceSession(npu), ortnpu.InferenceSession(bad)
    x = images(np.random.default_rng(9), 2)
    want = good_sess.run(None, {"x": x})[0]
    outcome: dict[str, object] = {}

    def good() -> None:
        outcome["good"] = [np.array_equal(good_sess.run(None, {"x": x})[0], want)
                           for _ in range(10)]

    def failing() -> None:
        caught = 0
        for _ in range(10):
            try:
                bad_sess.run(None, {"x": x})
            except ortnpu.KernelError:
                caught += 1
        outcome["bad"] = caught

    threads = [threading.Thread(target=good), threading.Thread(target=failing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome["good"] == [True] * 10 and outcome["bad"] == 10


# ------------------------------------------------------------------------ registration
REGISTRATION_SCRIPT = textwrap.dedent("""
    import numpy as np, onnxruntime as ort, ortnpu
    from ortnpu.domain import registry
    from ortnpu.fuzz.gen import images, tiny_cnn
    npu = ortnpu.quantize(tiny_cnn(), "tflite-int8", images(np.random.default_rng(0), 8))
    x = images(np.random.default_rng(1), 2)
    first = ortnpu.InferenceSession(npu).run(None, {"x": x})[0]
    count = len(registry._ours)
    for _ in range(5):
        registry.ensure_registered()
        ortnpu.session_options()
        assert np.array_equal(ortnpu.InferenceSession(npu).run(None, {"x": x})[0], first)
    import onnxruntime_extensions  # a later import must not replace our hook
    plain = ort.InferenceSession(npu.SerializeToString(), ortnpu.session_options(),
                                 providers=["CPUExecutionProvider"])
    assert np.array_equal(plain.run(None, {"x": x})[0], first)
    assert len(registry._ours) == count, (len(registry._ours), count)
    print("registered once", count)
""")


def test_domain_registers_once_per_process(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", REGISTRATION_SCRIPT], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # the installed ortnpu
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered once" in proc.stdout


# --------------------------------------------------------- risky kernel inputs, isolated
RISKY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import ortnpu
    from ortnpu.domain import OPS_BY_NAME, kernels
    from ortnpu.domain import native
    mode, package = sys.argv[1], sys.argv[2]
    assert ortnpu.__file__ == package, (ortnpu.__file__, package)
    if mode == "c" and kernels._native() is None:
        if native.expected():
            sys.exit(f"C kernels expected ({native.expected()}) but missing")
        print("no C kernels"); sys.exit(0)
    kernels.set_mode(mode)
    conv = OPS_BY_NAME["Conv"]
    x = np.zeros((1, 2, 5, 5), np.int8)
    w = np.zeros((2, 2, 3, 3), np.int8)
    b = np.zeros(2, np.int64)
    m = np.full(2, 1 << 30, np.int32)
    s = np.zeros(2, np.int32)
    cases = [
        ([x, w, b, m, s], dict(stride_h=1 << 16)),
        ([x, w, b, m, s], dict(pad_top=1 << 16, pad_bottom=1 << 16)),
        ([x, w, b, m, s], dict(dilation_h=1 << 16)),
        ([x, w, b, m[:1], s], {}),
        ([x, w, b, m, np.full(2, 31, np.int32)], dict(rounding="tflite_int64")),
        ([x, np.zeros((2, 1, 3, 3), np.int8), b, m, s], dict(group=2)),
        ([x, np.zeros((2, 2, 9, 9), np.int8), b, m, s], {}),
        ([x, np.zeros((2, 2, 0, 3), np.int8), b, m, s], {}),  # empty kernel (fuzz find)
        ([x[:, :, ::2], w, b, m, s], {}),
    ]
    for arrays, attrs in cases:
        try:
            full = conv.full_attrs(attrs)
            kernels.run(conv, arrays, full, np.dtype(np.int8))
        except ortnpu.OrtNpuError:
            pass
    lut = OPS_BY_NAME["Lut"]
    for table in (np.zeros(255, np.int8), np.zeros(65536, np.int8), np.zeros((16, 16), np.int8)):
        try:
            kernels.run(lut, [np.zeros(4, np.int8), table], lut.full_attrs({}), np.dtype(np.int8))
        except ortnpu.OrtNpuError:
            pass
    print("alive")
""")


@pytest.mark.parametrize("mode", ["numpy", "c"])
def test_risky_kernel_inputs_never_crash(mode: str, tmp_path: Path) -> None:
    # outside the checkout, so the subprocess imports this (installed) ortnpu, checked
    proc = subprocess.run([sys.executable, "-c", RISKY_SCRIPT, mode, ortnpu.__file__],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alive" in proc.stdout or "no C kernels" in proc.stdout


def test_public_api_type_errors_are_ortnpu_errors() -> None:
    with pytest.raises(ortnpu.ModelError):
        ortnpu.InferenceSession(12345)  # type: ignore[arg-type]
    with pytest.raises(ortnpu.ModelError):
        load_model(3.5)  # type: ignore[arg-type]
    with pytest.raises(ortnpu.KernelError):
        make_node(Conv, ["x"], "y", np.int8, "c", stride_h=0)
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                          None)])
    with pytest.raises(ortnpu.ModelError, match="graph output 'y' is not produced"):
        load_model(helper.make_model(graph))
