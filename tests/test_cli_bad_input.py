"""Bad input to any CLI command: exit code 2 and one clear line, never exit 3 (internal error).

Each row builds a bad file (data archive, output path, target file, NPU graph, conformance
folder, external-data model) and names the command line that must refuse it. Rows came from an
attack on the installed package (issue 12) and from probing every sub-command with the same
kinds of bad input.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import images, small_cnn
from onnx import TensorProto, helper, numpy_helper

import ortnpu
from ortnpu.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float model, its NPU graph, good data and a target file, shared by every row."""
    d = tmp_path_factory.mktemp("cli-bad")
    model = small_cnn(batch=1)
    onnx.save(model, d / "m.onnx")
    x = images(1)
    np.savez(d / "good.npz", x=x, labels=np.zeros(1, np.int64))
    onnx.save(ortnpu.quantize(model, "tflite-int8", images(8)), d / "npu.onnx")
    (d / "t.toml").write_text(ortnpu.load_target("tflite-int8").to_toml())
    (d / "afile").write_text("not a folder")
    return d


# ------------------------------------------------------------------------- bad files
def _obj(d: Path) -> str:
    np.savez(d / "obj.npz", x=np.array([1, "a", None], dtype=object))
    return "obj.npz"


def _trunc(d: Path) -> str:
    (d / "trunc.npz").write_bytes((d / "good.npz").read_bytes()[:300])
    return "trunc.npz"


def _empty(d: Path) -> str:
    np.savez(d / "empty.npz")
    return "empty.npz"


def _strings(d: Path) -> str:
    np.savez(d / "str.npz", x=np.array(["a", "b"]))
    return "str.npz"


def _pickled(d: Path) -> str:
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return "pickled.npy"


def _not_an_array(d: Path) -> str:
    import zipfile

    with zipfile.ZipFile(d / "text.npz", "w") as zf:
        zf.writestr("notes.txt", "hello")
    return "text.npz"


def _short_member(d: Path) -> str:
    """A good ``x`` next to an array whose data is cut short (its header is fine)."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.zeros(1000, np.float32))
    with zipfile.ZipFile(d / "short.npz", "w") as zf:
        x = io.BytesIO()
        np.save(x, images(1))
        zf.writestr("x.npy", x.getvalue())
        zf.writestr("junk.npy", buf.getvalue()[:200])
    return "short.npz"


def _target(key: str, value: str) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        lines = [f"{key} = {value}" if ln.startswith(f"{key} = ") else ln
                 for ln in (d / "t.toml").read_text().splitlines()]
        assert f"{key} = {value}" in lines
        name = f"t_{key}_{abs(hash(value))}.toml"
        (d / name).write_text("\n".join(lines) + "\n")
        return name
    return make


def _two_multipliers(d: Path) -> str:
    """A per-channel multiplier/shift of 2 elements on a Conv with more output channels."""
    m = onnx.load(d / "npu.onnx")
    conv = next(n for n in m.graph.node if n.op_type.startswith("Conv"))
    for t in m.graph.initializer:
        if t.name in (conv.input[3], conv.input[4]):
            a = numpy_helper.to_array(t)
            assert a.size > 2
            t.CopyFrom(numpy_helper.from_array(a[:2].copy(), t.name))
    onnx.save(m, d / "mult2.onnx")
    return "mult2.onnx"


def _shift40(d: Path) -> str:
    """A shift the kernels refuse (a session fails at run); the exporters must refuse it too."""
    m = onnx.load(d / "npu.onnx")
    conv = next(n for n in m.graph.node if n.op_type.startswith("Conv"))
    for t in m.graph.initializer:
        if t.name == conv.input[4]:
            t.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(t), 40),
                                               t.name))
    onnx.save(m, d / "shift40.onnx")
    return "shift40.onnx"


def _stray_output(d: Path) -> str:
    if not (d / "conf").exists():
        from ortnpu import conformance

        conformance.generate(d / "conf", ["tflite-int8"], ["Add"])
    case = sorted((d / "conf").rglob("test_data_set_0"))[0]
    shutil.copy(case / "output_0.pb", case / "output_x.pb")
    return "conf"


def _external(entries: list[tuple[str, str]]) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        sub = d / "ext"
        sub.mkdir(exist_ok=True)
        (d / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
        w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in entries:
            e = w.external_data.add()
            e.key, e.value = k, v
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        name = f"ext/m_{abs(hash(str(entries)))}.onnx"
        (d / name).write_bytes(m.SerializeToString())
        return name
    return make


def _none(d: Path) -> str:
    return ""


NPZ_BAD = [("obj", _obj), ("truncated", _trunc), ("empty", _empty), ("strings", _strings),
           ("pickled-npy", _pickled)]
HUGE = "9223372036854775807"

CASES: list[tuple[str, Callable[[Path], str], str]] = [
    *[(f"run-{n}", f, "run npu.onnx --inputs {f}") for n, f in NPZ_BAD],
    *[(f"quantize-{n}", f, "quantize m.onnx --calib {f} -o q.onnx") for n, f in NPZ_BAD],
    *[(f"compare-{n}", f, "compare m.onnx npu.onnx --data {f}") for n, f in NPZ_BAD],
    *[(f"autofix-{n}", f, "autofix m.onnx --calib good.npz --eval {f} -o a.onnx")
      for n, f in NPZ_BAD],
    ("run-dir-inputs", _none, "run npu.onnx --inputs ext_none_dir"),
    ("run-npz-member-not-an-array", _not_an_array, "run npu.onnx --inputs {f}"),
    ("compare-short-member-used", _short_member, "compare m.onnx npu.onnx --data {f} --key junk"),
    # outputs whose folder cannot exist (its parent is a file) or that would overwrite an input
    ("optimize-out-under-file", _none, "optimize m.onnx -o afile/o.onnx"),
    ("export-out-under-file", _none, "export npu.onnx -o afile/o.onnx"),
    ("run-out-under-file", _none, "run npu.onnx --inputs good.npz -o afile/o.npz"),
    ("evaluate-json-under-file", _none, "evaluate m.onnx --json afile/r.json"),
    ("evaluate-html-under-file", _none, "evaluate m.onnx --html afile/r.html"),
    ("quantize-out-under-file", _none, "quantize m.onnx --calib good.npz -o afile/q.onnx"),
    ("compare-json-under-file", _none, "compare m.onnx npu.onnx --data good.npz --json afile/c"),
    ("import-qdq-out-under-file", _none, "import-qdq npu.onnx -o afile/i.onnx"),
    ("opt-and-eval-out-under-file", _none, "opt-and-eval m.onnx -o afile/o.onnx"),
    ("evaluate-json-over-model", _none, "evaluate m.onnx --json m.onnx"),
    ("evaluate-html-over-target", _none, "evaluate m.onnx --target t.toml --html t.toml"),
    ("optimize-over-model", _none, "optimize m.onnx -o m.onnx"),
    ("export-over-model", _none, "export npu.onnx -o npu.onnx"),
    ("run-out-over-inputs", _none, "run npu.onnx --inputs good.npz -o good.npz"),
    ("run-out-over-inputs-no-suffix", _none, "run npu.onnx --inputs good.npz -o good"),
    ("quantize-over-calib", _none, "quantize m.onnx --calib good.npz -o good.npz"),
    ("compare-json-over-data", _none, "compare m.onnx npu.onnx --data good.npz --json good.npz"),
    ("optimize-out-is-dir", _none, "optimize m.onnx -o ext_none_dir"),
    # absurd hardware numbers
    *[(f"target-{k}-{v}", _target(k, v), "evaluate m.onnx --target {f}") for k, v in [
        ("clock_mhz", "1e308"), ("clock_mhz", "inf"), ("clock_mhz", "nan"),
        ("clock_mhz", "-1.0"), ("dram_gbps", "1e308"), ("cpu_gmacs", "1e308"),
        ("subgraph_overhead_us", "1e308"), ("macs_per_cycle", HUGE),
        ("macs_per_cycle_16bit", HUGE), ("elementwise_per_cycle", HUGE), ("sram_kib", HUGE),
        ("sram_kib", "-1")]],
    # a model validation accepted but the exporters could not lower
    *[(f"export-{s}-two-multipliers", _two_multipliers, f"export {{f}} --style {s} -o e.onnx")
      for s in ("integer", "fake-quant", "qdq")],
    ("run-two-multipliers", _two_multipliers, "run {f} --inputs good.npz"),
    *[(f"export-{s}-shift-out-of-range", _shift40, f"export {{f}} --style {s} -o e.onnx")
      for s in ("integer", "fake-quant", "qdq")],
    ("conformance-stray-output", _stray_output, "conformance {f}"),
    ("conformance-export-to-file", _none, "conformance --export m.onnx --op Add -t tflite-int8"),
    # numbers the options silently accepted
    ("run-threads-0", _none, "run npu.onnx --inputs good.npz --threads 0"),
    ("quantize-limit-negative", _none, "quantize m.onnx --calib good.npz -o q.onnx --limit -1"),
    ("quantize-percentile-200", _none,
     "quantize m.onnx --calib good.npz -o q.onnx --method percentile --percentile 200"),
    ("quantize-percentile-nan", _none,
     "quantize m.onnx --calib good.npz -o q.onnx --method percentile --percentile nan"),
    # external data that escapes the model's folder or has unusable fields
    *[(f"external-{n}", _external(e), "evaluate {f}") for n, e in [
        ("parent", [("location", "../secret.bin")]),
        ("absolute", [("location", "/etc/passwd")]),
        ("long-name", [("location", "a" * 5000)]),
        ("negative-offset", [("location", "../secret.bin"), ("offset", "-5")]),
        ("offset-not-a-number", [("location", "../secret.bin"), ("offset", "abc")])]],
    ("external-compare", _external([("location", "../secret.bin")]),
     "compare {f} npu.onnx --data good.npz"),
]


@pytest.mark.parametrize(("name", "make", "argv"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_exit_2_with_one_line(name: str, make: Callable[[Path], str], argv: str,
                                           ws: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ws)
    (ws / "ext_none_dir").mkdir(exist_ok=True)
    args = argv.format(f=make(ws)).split()
    before = {p: p.stat().st_mtime_ns for p in ws.iterdir() if p.is_file()}
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{argv}: exit {code}: {err}"
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ortnpu {args[0]}: error: "), err
    assert len(err) < 600, err
    for p, mtime in before.items():  # no input was overwritten
        assert p.stat().st_mtime_ns == mtime, p


def test_run_prints_the_file_it_wrote(ws: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(ws / "npu.onnx"), "--inputs", str(ws / "good.npz"),
                 "-o", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out.npz'}" in text
    assert (tmp_path / "out.npz").is_file() and not (tmp_path / "out").exists()


def test_outputs_go_into_new_folders(ws: Path, tmp_path: Path) -> None:
    """A missing output folder is created (as quantize always did), for every command."""
    out = tmp_path / "a" / "b"
    assert main(["optimize", str(ws / "m.onnx"), "-o", str(out / "o.onnx")]) == 0
    assert main(["evaluate", str(ws / "m.onnx"), "--json", str(out / "r.json")]) == 0
    assert main(["export", str(ws / "npu.onnx"), "-o", str(out / "e.onnx")]) == 0
    assert main(["run", str(ws / "npu.onnx"), "--inputs", str(ws / "good.npz"), "-o",
                 str(out / "y.npz")]) == 0
    assert {p.name for p in out.iterdir()} == {"o.onnx", "r.json", "e.onnx", "y.npz"}


def test_plain_npy_is_one_array(ws: Path, tmp_path: Path) -> None:
    """A ``.npy`` feeds a single-input model like a one-array ``.npz``."""
    np.save(tmp_path / "x.npy", images(1))
    assert main(["run", str(ws / "npu.onnx"), "--inputs", str(tmp_path / "x.npy")]) == 0


def test_export_api_refuses_what_validation_refuses(ws: Path) -> None:
    from ortnpu.errors import ModelError
    from ortnpu.exporters import export

    _two_multipliers(ws)
    with pytest.raises(ModelError, match="multiplier must be a 1-D tensor of length 1 or"):
        export(onnx.load(ws / "mult2.onnx"))


def test_a_closed_stdout_pipe_is_not_an_internal_error(ws: Path, tmp_path: Path) -> None:
    """``ortnpu optimize ... | head -1``: the reader leaves; the model is still written."""
    proc = subprocess.Popen([sys.executable, "-m", "ortnpu", "optimize", str(ws / "m.onnx"),
                             "-o", str(tmp_path / "o.onnx"), "-v"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "internal error" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "o.onnx").is_file()


def test_arrays_a_command_does_not_use_are_not_read(ws: Path) -> None:
    """Data files are checked by their headers and read lazily: a damaged array next to the
    one the command uses does not stop it (and big unused arrays are never loaded)."""
    name = _short_member(ws)
    assert main(["run", str(ws / "npu.onnx"), "--inputs", str(ws / name)]) == 0
