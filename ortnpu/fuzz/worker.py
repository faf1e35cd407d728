"""Fuzz worker: runs cases ``[start, stop)`` of a seed in this process and reports each one.

Run by :mod:`ortnpu.fuzz.runner` in a subprocess, so that a crash (a signal) or a hang of one
case kills only the worker; the runner sees which case was in progress from the ``B`` line
printed before it. Replay one case with::

    python -m ortnpu.fuzz.worker --seed 0 --start 1234 --stop 1235 --verbose

Outcome classes: ``ok`` (ran, results consistent), ``ortnpu`` (an :class:`OrtNpuError` for bad
input: the expected refusal), ``foreign`` (any other exception, including a non-ortnpu exception
caught inside a kernel by the hook), ``mismatch`` (the C kernels, the numpy references and
onnxruntime disagree, or an output is not what was declared: silent garbage).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ortnpu.errors import OrtNpuError
from ortnpu.fuzz import gen
from ortnpu.fuzz.runner import IMPORT_MISMATCH

#: Kinds of case and their share of a run.
KINDS = (("op-direct", 0.34), ("op-graph", 0.26), ("model", 0.2), ("target", 0.07),
         ("calibration", 0.07), ("file", 0.06))
#: Kinds drawn before KINDS, each with its own draw (so adding one kept every other case's kind
#: where the draw misses: replay commands of earlier runs still name the same case).
EXTRA_KINDS = (("ep", 0.05, 2),)   # (kind, share, salt of its draw)
#: Worst first: the class of a case is the worst of its steps.
SEVERITY = ("crash", "hang", "foreign", "mismatch", "missed", "ortnpu", "ok")


class MismatchError(Exception):
    """Two executors disagree, or an output is not what the op declares."""


def classify(fn: Callable[[], Any]) -> tuple[str, str, Any]:
    """Run ``fn``; return ``(class, detail, result)``."""
    try:
        return "ok", "", fn()
    except MismatchError as exc:
        return "mismatch", str(exc), None
    except OrtNpuError as exc:
        text = str(exc)
        if "internal kernel error" in text or "python custom op failed" in text:
            return "foreign", f"{type(exc).__name__} wrapping: {text}", None
        return "ortnpu", f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}", None
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        at = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        return "foreign", f"{type(exc).__name__} at {at}: {exc}"[:500], None


def _worst(classes: list[str]) -> str:
    return min(classes, key=SEVERITY.index)


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Equal dtype, shape and values; shape ``[]`` equals ``[1]`` (a known limitation: the C
    wrappers and the onnxruntime hook return rank-0 results as ``[1]``, same values). A float
    NaN equals a NaN at the same place (an output scale of inf gives 0 * inf on every path;
    seed 1208 case 5847 was reported as a mismatch for NaNs on both sides)."""
    if a.shape in ((), (1,)) and b.shape in ((), (1,)):
        a, b = a.reshape(1), b.reshape(1)
    nan_ok = a.dtype.kind == "f" and b.dtype.kind == "f"
    if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b, equal_nan=nan_ok):
        raise MismatchError(f"{what}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
                       f"{'' if a.shape != b.shape else ', values differ'}")


class Worker:
    """Holds what cases share (base NPU graphs per preset) and runs cases by index."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._npu: dict[str, onnx.ModelProto] = {}
        self._qdq: dict[str, onnx.ModelProto] = {}

    def npu_model(self, preset: str) -> onnx.ModelProto:
        """The tiny CNN quantized for a preset (built once per worker)."""
        if preset not in self._npu:
            import ortnpu

            rng = np.random.default_rng(12345)
            self._npu[preset] = ortnpu.quantize(gen.tiny_cnn(), preset, gen.images(rng, 8))
        return self._npu[preset]

    def qdq_model(self, act: str) -> onnx.ModelProto:
        """The tiny CNN quantized by onnxruntime's quantize_static (built once per worker)."""
        if act not in self._qdq:
            self._qdq[act] = gen.ort_qdq(act)
        return self._qdq[act]

    def kind_of(self, index: int) -> str:
        """The kind of case ``index`` (fixed by the seed)."""
        for kind, share, salt in EXTRA_KINDS:
            if np.random.default_rng([self.seed, index, salt]).random() < share:
                return kind
        r = np.random.default_rng([self.seed, index, 1]).random()
        for kind, share in KINDS:
            if r < share:
                return kind
            r -= share
        return KINDS[-1][0]

    def run(self, index: int) -> tuple[str, str, str]:
        """Run case ``index``; return ``(kind, class, detail)``."""
        kind = self.kind_of(index)
        rng = np.random.default_rng([self.seed, index])
        steps: list[tuple[str, str]] = getattr(self, "_" + kind.replace("-", "_"))(rng)
        cls = _worst([c for c, _ in steps])
        detail = next((d for c, d in steps if c == cls), "")
        return kind, cls, detail

    # ---------------------------------------------------------------------------- kinds
    def _op_direct(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """One op called through ``kernels.run`` on both paths; results must agree."""
        from ortnpu.domain import kernels

        case = gen.op_case(rng, direct=True)
        steps, results = [], {}
        for mode in ("numpy", "c"):
            if mode == "c" and not _native_available():
                continue
            kernels.set_mode(mode)

            def call(mode: str = mode) -> np.ndarray:
                attrs = case.spec.full_attrs(case.attrs)
                y = kernels.run(case.spec, case.arrays, attrs, np.dtype(case.out_dtype))
                y = np.asarray(y)
                if y.dtype != case.out_dtype:
                    raise MismatchError(f"{mode} kernel returned {y.dtype}, declared "
                                        f"{case.out_dtype}")
                return y

            cls, detail, y = classify(call)
            steps.append((cls, f"{mode}: {detail} [{case.describe()}]"))
            results[mode] = (cls, y)
        kernels.set_mode("auto")
        if len(results) == 2:
            (c1, y1), (c2, y2) = results["numpy"], results["c"]
            if (c1 == "ok") != (c2 == "ok"):
                steps.append(("mismatch", f"numpy {c1} but C {c2} [{case.describe()}]"))
            elif c1 == "ok":
                steps.append(classify(lambda: _same(y1, y2, f"C vs numpy {case.describe()}"))[:2])
        return steps

    def _op_graph(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """One op as a one-node NPU graph in onnxruntime; must equal the numpy reference."""
        import ortnpu
        from ortnpu.domain import kernels

        case = gen.op_case(rng, direct=False)
        built = gen.op_model(case)
        if built is None:
            return [("ok", "not expressible as a graph")]
        model, feeds = built

        def run() -> np.ndarray:
            sess = ortnpu.InferenceSession(model)
            return sess.run(None, feeds)[0]

        cls, detail, y = classify(run)
        steps = [(cls, f"{detail} [{case.describe()}]")]
        if cls == "ok":
            # onnxruntime-extensions hands rank-0 inputs of fixed type to the hook as [1]
            kinds = case.spec.input_kinds(len(case.arrays) - len(case.spec.inputs) + 1
                                          if case.spec.variadic else 0)
            seen = [a.reshape(1) if a.ndim == 0 and k != "act" else a
                    for a, k in zip(case.arrays, kinds, strict=True)]
            kernels.set_mode("numpy")
            ref_cls, ref_detail, ref = classify(
                lambda: kernels.run(case.spec, seen, case.spec.full_attrs(case.attrs),
                                    np.dtype(case.out_dtype)))
            kernels.set_mode("auto")
            if ref_cls != "ok":
                steps.append(("mismatch", f"onnxruntime ran, numpy refused: {ref_detail} "
                                          f"[{case.describe()}]"))
            else:
                steps.append(classify(lambda: _same(np.asarray(y), ref,
                                                    f"onnxruntime vs numpy {case.describe()}")
                                      )[:2])
        return steps

    def _model(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """A quantized model, mutated or not, run on good or bad inputs."""
        import ortnpu

        preset = gen._pick(rng, ("tflite-int8", "tflite-a16w8", "n2d2-int8"))
        model = onnx.ModelProto()
        model.CopyFrom(self.npu_model(preset))
        notes = [preset]
        mutated = rng.random() < 0.7
        if mutated:
            for _ in range(int(rng.integers(1, 3))):
                notes += gen.mutate_npu_model(rng, model)
        x, what = gen.mutate_input(rng, gen.images(rng, int(rng.integers(1, 4))))
        notes.append(f"input {what}")
        policy = gen._pick(rng, ("raise", "zero", "allow"))

        def run() -> list[np.ndarray]:
            sess = ortnpu.InferenceSession(model, nan_policy=policy)
            out = sess.run(None, {"x": x})
            if what in ("valid", "empty batch") and not mutated:
                if out[0].dtype != np.float32 or out[0].shape != (len(x), 4):
                    raise MismatchError(f"output {out[0].dtype}{list(out[0].shape)}")
                if not np.all(np.isfinite(out[0])):
                    raise MismatchError("non-finite output from a finite input")
            return out

        cls, detail, out = classify(run)
        steps = [(cls, f"{detail} [{'; '.join(notes)}]")]
        if cls == "ok" and not mutated and what == "valid" and rng.random() < 0.25:
            from ortnpu.runtime.reference import run_reference

            def check() -> None:
                ref = run_reference(model, {"x": x})
                ref0 = ref[0] if isinstance(ref, (list, tuple)) else next(iter(ref.values()))
                _same(np.asarray(out[0]), np.asarray(ref0), "onnxruntime vs reference evaluator")

            steps.append(classify(check)[:2])
        return steps

    def _target(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """A mutated target file: loaded, and when valid used to quantize and run."""
        import ortnpu

        preset = gen._pick(rng, ("tflite-int8", "tflite-a16w8", "n2d2-int8"))
        text, what = gen.mutate_toml(rng, ortnpu.load_target(preset).to_toml())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.toml"
            path.write_bytes(text.encode("utf-8", "surrogatepass"))

            def run() -> None:
                target = ortnpu.load_target(str(path))
                if rng.random() < 0.3:
                    npu = ortnpu.quantize(gen.tiny_cnn(), target, gen.images(rng, 4))
                    y = ortnpu.InferenceSession(npu).run(None, {"x": gen.images(rng, 2)})[0]
                    if not np.all(np.isfinite(y)):
                        raise MismatchError("non-finite output of a model quantized for the target")

            cls, detail, _ = classify(run)
        return [(cls, f"{detail} [{preset}: {what}]")]

    def _calibration(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """Quantize with valid or broken calibration data; the result must be sane."""
        import ortnpu

        data, what = gen.calibration_data(rng)
        preset = gen._pick(rng, ("tflite-int8", "tflite-a16w8", "n2d2-int8"))

        def run() -> None:
            npu = ortnpu.quantize(gen.tiny_cnn(), preset, data)
            _check_scales(npu)
            y = ortnpu.InferenceSession(npu).run(None, {"x": gen.images(rng, 2)})[0]
            if not np.all(np.isfinite(y)):
                raise MismatchError("non-finite output after calibration")

        cls, detail, _ = classify(run)
        return [(cls, f"{detail} [{preset}: {what}]")]

    def _file(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """A corrupted model file through load_model and InferenceSession."""
        import ortnpu
        from ortnpu.validate import load_model

        data = self.npu_model("tflite-int8").SerializeToString()
        bad, what = gen.model_bytes_mutation(rng, data)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            path.write_bytes(bad)

            def run() -> None:
                load_model(str(path))
                sess = ortnpu.InferenceSession(str(path))
                sess.run(None, {"x": gen.images(rng, 1)})

            cls, detail, _ = classify(run)
        return [(cls, f"{detail} [{what}]")]


    def _ep(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """A QDQ model, mutated or not, in a plain onnxruntime session with the ortnpu EP.

        onnxruntime's errors (its own refusals and the EP's statuses) are expected refusals,
        except the EP's "internal error" (a non-ortnpu exception in its Python side). When
        the EP claimed every node and ``import_qdq`` of the whole model runs too, the outputs
        must be identical; an unmutated model on a valid input must be claimed whole."""
        import onnxruntime as ort

        import ortnpu
        import ortnpu.ep
        from ortnpu.errors import ModelError, first_line

        act = gen._pick(rng, ("QInt8", "QUInt8"))
        preset = gen._pick(rng, ("tflite-int8", "tflite-a16w8", "n2d2-int8"))
        model = onnx.ModelProto()
        model.CopyFrom(self.qdq_model(act))
        notes = [act, preset]
        mutated = rng.random() < 0.6
        if mutated:
            for _ in range(int(rng.integers(1, 3))):
                notes += gen.mutate_qdq_model(rng, model)
        x, what = gen.mutate_input(rng, gen.images(rng, 1))
        notes.append(f"input {what}")
        policy = gen._pick(rng, ("raise", "zero", "allow"))

        def run() -> None:
            so = ort.SessionOptions()
            so.add_provider_for_devices(ortnpu.ep.register(),
                                        {"target": preset, "nan_policy": policy})
            try:
                sess = ort.InferenceSession(model.SerializeToString(), so)
                sess.disable_fallback()
                report = ortnpu.ep.explain(sess)
                out = sess.run(None, {"x": x})
            except Exception as exc:  # onnxruntime's exception types
                if "ortnpu: internal error" in str(exc):
                    raise
                raise ModelError(f"onnxruntime: {first_line(exc)}") from None
            whole = all(r.device == "NPU" for r in report)
            if not mutated and what == "valid" and not whole:
                raise MismatchError("the EP left nodes of an unmutated model on the CPU")
            if not whole:
                return
            try:
                ref = ortnpu.InferenceSession(ortnpu.import_qdq(model, preset),
                                              nan_policy=policy).run(None, {"x": x})
            except OrtNpuError:
                if not mutated and what == "valid":
                    raise
                return
            for a, b in zip(out, ref, strict=True):
                _same(np.asarray(a), np.asarray(b), "EP session vs import_qdq session")

        cls, detail, _ = classify(run)
        return [(cls, f"{detail} [{'; '.join(notes)}]")]

def _check_scales(model: onnx.ModelProto) -> None:
    """Quantize/Dequantize scales of an NPU graph must be finite and positive."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1:
            t = inits.get(node.input[1])
            if t is None:
                continue
            s = numpy_helper.to_array(t)
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise MismatchError(f"node {node.name!r}: scale {s.reshape(-1)[:4]} is not finite "
                               "and positive")


def _native_available() -> bool:
    from ortnpu.domain import kernels

    return kernels._native() is not None


def _imported() -> dict[str, Any]:
    """Which ortnpu this worker imported and which kernels it runs (reported to the runner)."""
    import ortnpu
    from ortnpu.domain import kernels, native

    return {"ortnpu": os.path.dirname(os.path.realpath(ortnpu.__file__)),
            "c": _native_available(), "kernels": kernels.describe(),
            "c_expected": native.expected() or ""}


def _limit_memory(gib: float) -> None:
    """Cap the address space so a runaway allocation is a MemoryError, not the OOM killer."""
    try:
        import resource

        limit = int(gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not on this platform
        pass


def main(argv: list[str] | None = None) -> int:
    """Run a range of cases, printing ``B i`` before and one JSON line after each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--stop", type=int, required=True)
    p.add_argument("--memory-gib", type=float, default=6.0)
    p.add_argument("--verbose", action="store_true", help="print details and kernel logs")
    p.add_argument("--suite", choices=("edges", "chains"), default="edges",
                   help="edges: ops, models, files; chains: multi-layer graphs through every "
                        "path, the compiled programs included (ortnpu.fuzz.chains)")
    p.add_argument("--package", metavar="DIR",
                   help="the ortnpu package folder the runner imported; refuse to run another")
    args = p.parse_args(argv)
    info = _imported()
    if args.package and os.path.realpath(args.package) != info["ortnpu"]:
        print(f"ortnpu.fuzz.worker: imported ortnpu from {info['ortnpu']} but the runner "
              f"imported {os.path.realpath(args.package)} (a source checkout in the working "
              "directory or on PYTHONPATH?)", file=sys.stderr, flush=True)
        return IMPORT_MISMATCH
    if args.memory_gib > 0:
        _limit_memory(args.memory_gib)
    if not args.verbose:
        import logging

        logging.getLogger("ortnpu").setLevel(logging.CRITICAL)
    worker = Worker(args.seed)
    sink = io.StringIO()
    if args.suite == "edges":
        with contextlib.redirect_stderr(sink) if not args.verbose else contextlib.nullcontext():
            worker.npu_model("tflite-int8")
    out = sys.stdout
    print("READY " + json.dumps(info), flush=True)
    for i in range(args.start, args.stop):
        print(f"B {i}", file=out, flush=True)
        if args.suite == "chains":
            from ortnpu.fuzz.chains import run_case

            print(json.dumps(run_case(args.seed, i)), file=out, flush=True)
            continue
        kind, cls, detail = worker.run(i)
        print(json.dumps({"i": i, "kind": kind, "class": cls, "detail": detail[:800]}),
              file=out, flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ORTNPU_NUM_THREADS", "1")
    sys.exit(main())
