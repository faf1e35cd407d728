"""Accuracy at dataset scale on real models: one process, two, and a local Ray cluster.

``python -m ortnpu.bench scale`` runs :func:`ortnpu.evaluate_accuracy` on

* the Fashion-MNIST CNN (``fashion_mnist_cnn.onnx``), all 10 000 labelled test images, and
* MobileNetV2 (``mobilenet_v2.onnx``) on a few thousand 224x224 crops of Debian's desktop
  backgrounds (:mod:`ortnpu.bench.images`; no labels: agreement and SQNR),

each quantized for ``tflite-int8``, with every setup of :data:`SETUPS`. It checks that every
setup gives the same numbers (``AccuracyResult.numbers()``, floats compared exactly), and prints
one markdown table (rates, speed-up over one single-threaded process, load average) and the
time of a 50 000-image ImageNet-size run estimated from the measured MobileNetV2 rates.

The speed-up is the time of one single-threaded process over the time of the setup, in the same
run: the scaling of independent single-thread workers. Beside it the command measures what the
machine allowed at that moment: a fixed pure-Python loop run in one process and then split
over two (:func:`machine_speedup`). On a machine shared with other users that control is the
ceiling (Linux's autogroup scheduler gives each login session one fair share of the CPU, so a
second process of ours gets no more CPU while other sessions keep both cores busy). The row
with one process and all threads shows what onnxruntime's own intra-op threads give instead.
Times include starting the workers (processes forked from a fork server, Ray actors) and
building their sessions; the first two-worker row also starts the fork server (its imports),
the row after it finds the server running, as every later evaluation of a process does (autofix
trials); starting the Ray cluster itself is timed on its own. Run it outside an ortnpu source
checkout (Ray's workers put the driver's working directory on ``sys.path``).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ortnpu import models_cache
from ortnpu.bench import images, models

#: (label, engine, workers, threads per worker; None: all cores)
SETUPS: tuple[tuple[str, str, int, int | None], ...] = (
    ("1 process, 1 thread", "local", 1, 1),
    ("1 process, all threads", "local", 1, None),
    ("2 workers (this process + 1 forked), 1 thread each", "processes", 2, 1),
    ("2 workers again (fork server running), 1 thread each", "processes", 2, 1),
    ("Ray (local cluster), 2 actors, 1 thread each", "ray", 2, 1),
)
#: wallpaper crops MobileNetV2 is evaluated on
CROPS = 2000
#: samples per batch (the unit of work): Fashion-MNIST, MobileNetV2
FASHION_BATCH = 250
MOBILENET_BATCH = 25
#: the size of ImageNet's validation set, for the estimate
IMAGENET_VAL = 50_000
TARGET = "tflite-int8"


@dataclass
class Case:
    """A float model, its NPU graph and the shards it is evaluated on."""

    name: str
    float_model: Path
    npu_model: Path
    shards: list[Path]
    batch: int
    description: str


@dataclass
class Run:
    """One setup on one case."""

    case: str
    setup: str
    engine: str
    workers: int
    threads: int | None
    seconds: float
    samples: int
    numbers: dict[str, Any]
    load: tuple[float, float] = (0.0, 0.0)   # 1-minute load average before and after
    #: CPU seconds of this process and its workers (``AccuracyResult.cpu_seconds``; None: Ray,
    #: whose actors are the cluster's processes); unlike the time, hardly changed by other
    #: users' load
    cpu: float | None = None
    identical: bool = True
    speedup: float | None = None

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


@dataclass
class Measurement:
    """Everything the command prints."""

    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ray_start: float | None = None
    #: the control of :func:`machine_speedup`, before and after the runs
    machine: list[float] = field(default_factory=list)


#: iterations of the control loop (about two seconds of one idle core)
BURN = 40_000_000


def machine_speedup(iterations: int = BURN) -> float:
    """How much faster two processes run a fixed pure-Python loop than one, right now.

    One process runs ``iterations`` steps, then two processes run half each at the same time
    (plain interpreters, no imports): 2.0 on an idle 2-core machine, less when other work (or
    another login session, under Linux's autogroup scheduling) holds the cores.
    """
    import subprocess
    import sys

    def wall(parts: int) -> float:
        code = f"s = 0\nfor i in range({iterations // parts}): s += i"
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(parts)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - start

    return wall(1) / wall(2)


def _shards(folder: Path, stem: str, x: np.ndarray, y: np.ndarray | None,
            size: int) -> list[Path]:
    """``x`` (and labels ``y``) cut into ``.npz`` shards of ``size`` samples."""
    out = []
    for k, start in enumerate(range(0, len(x), size)):
        path = folder / f"{stem}_{k:03d}.npz"
        arrays = {"test_x": x[start:start + size]}
        if y is not None:
            arrays["test_y"] = y[start:start + size]
        np.savez(path, **arrays)
        out.append(path)
    return out


def _quantize(float_path: Path, calib: np.ndarray, out: Path) -> Path:
    import ortnpu

    onnx.save(ortnpu.quantize(onnx.load(str(float_path)), TARGET, calib), str(out))
    return out


def fashion_case(folder: Path) -> Case | str:
    """The Fashion-MNIST CNN on its 10 000 test images (4 labelled shards), or why not."""
    path = models_cache.cached_model("fashion_mnist_cnn.onnx")
    data = models_cache.cached_model("fashion_mnist_data.npz")
    if path is None or data is None:
        return ("fashion_mnist_cnn: not built; run `python models/fashion_mnist_cnn.py` "
                "(trains a few minutes)")
    with np.load(data) as f:
        calib, x, y = f["calib_x"], f["test_x"], f["test_y"]
    npu = _quantize(path, calib, folder / "fashion_mnist_cnn.npu.onnx")
    return Case("fashion_mnist_cnn", path, npu, _shards(folder, "fashion", x, y, 2500),
                FASHION_BATCH, f"Fashion-MNIST CNN, {len(x)} labelled test images "
                f"({len(calib)} training images calibrate)")


def mobilenet_case(folder: Path, crops: int, cache: Path | None) -> Case | str:
    """MobileNetV2 on ``crops`` wallpaper crops (unlabelled shards of one batch each)."""
    path = models_cache.cached_model("mobilenet_v2.onnx")
    calib = models.photo_calibration()
    if path is None or calib is None:
        return "mobilenet_v2: not built; run `python models/mobilenet_v2.py`"
    try:
        raw = images.wallpaper_crops(crops, cache)
    except images.MissingSourceError as exc:
        return f"mobilenet_v2: {exc}"
    npu = _quantize(path, calib, folder / "mobilenet_v2.npu.onnx")
    shards = []
    for k, start in enumerate(range(0, len(raw), MOBILENET_BATCH)):   # normalised shard by shard
        shards += _shards(folder, f"crops_{k:03d}", images.normalise(
            raw[start:start + MOBILENET_BATCH]), None, MOBILENET_BATCH)
    return Case("mobilenet_v2", path, npu, shards, MOBILENET_BATCH,
                f"MobileNetV2, {len(raw)} wallpaper crops of {len(images.wallpaper_files())} "
                f"pictures, no labels ({len(calib)} photo crops calibrate)")


def _start_ray() -> float:
    """Start (or connect to, with ``RAY_ADDRESS``) a Ray cluster; the seconds it took."""
    import ray

    start = time.perf_counter()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(ignore_reinit_error=True)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 ignore_reinit_error=True)
    return time.perf_counter() - start


def measure(cases: list[Case], setups: tuple[tuple[str, str, int, int | None], ...] = SETUPS,
            progress: bool = True, burn: int = BURN) -> Measurement:
    """Every setup on every case; the first setup of a case is the reference of the others;
    the machine's own speed-up (:func:`machine_speedup` of ``burn`` steps) before and after."""
    from ortnpu.accuracy import evaluate_accuracy
    from ortnpu.errors import OrtNpuError

    out = Measurement(machine=[machine_speedup(burn)])
    if any(engine == "ray" for _, engine, _, _ in setups):
        try:
            import ray.data
        except ImportError:
            out.notes.append("Ray rows skipped: pip install 'ortnpu[ray]'")
            setups = tuple(s for s in setups if s[1] != "ray")
        else:
            out.ray_start = _start_ray()
    try:
        for case in cases:
            first: Run | None = None
            base_rate: float | None = None
            for label, engine, workers, threads in setups:
                before = os.getloadavg()[0]
                try:
                    res = evaluate_accuracy(case.float_model, case.npu_model, case.shards,
                                            batch=case.batch, workers=workers, engine=engine,
                                            threads=threads, progress=progress)
                except OrtNpuError as exc:
                    out.notes.append(f"{case.name}, {label}: failed: {exc}")
                    continue
                run = Run(case.name, label, engine, workers, threads, res.seconds,
                          res.samples, res.numbers(), (before, os.getloadavg()[0]),
                          cpu=res.cpu_seconds)
                if first is None:
                    first = run
                run.identical = run.numbers == first.numbers
                if progress:
                    print(f"# {case.name}, {label}: {run.samples} images in {run.seconds:.1f} s "
                          f"({run.rate:.1f} images/s), identical: {run.identical}", flush=True)
                if threads == 1 and workers == 1:
                    base_rate = run.rate
                if base_rate:
                    run.speedup = run.rate / base_rate
                out.runs.append(run)
    finally:
        if out.ray_start is not None:
            import ray

            ray.shutdown()
    out.machine.append(machine_speedup(burn))
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f} %"


def table(m: Measurement) -> str:
    """The markdown table of the runs."""
    lines = ["| model | images | run | seconds | images/s | speed-up | CPU seconds | float top-1 | "
             "NPU top-1 | "
             "agreement | output SQNR | identical to the first row | load average |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in m.runs:
        n = r.numbers
        sqnr = n["outputs"][n["output"]]["sqnr_db"]
        lines.append(
            f"| {r.case} | {r.samples} | {r.setup} | {r.seconds:.1f} | {r.rate:.1f} | "
            + ("" if r.speedup is None else f"{r.speedup:.2f}x") + " | "
            + ("" if r.cpu is None else f"{r.cpu:.1f}") + " | "
            f"{_pct(n['float_top1'])} | {_pct(n['npu_top1'])} | {_pct(n['agreement'])} | "
            + (sqnr if isinstance(sqnr, str) else f"{sqnr:.2f} dB")
            + f" | {'yes' if r.identical else 'NO'} | {r.load[0]:.1f} / {r.load[1]:.1f} |")
    return "\n".join(lines)


def estimate(m: Measurement, images_: int = IMAGENET_VAL, case: str = "mobilenet_v2") -> str:
    """The time of an ``images_``-image run at each measured rate of ``case``."""
    runs = [r for r in m.runs if r.case == case]
    if not runs:
        return f"no {case} rate measured: no estimate"
    lines = [f"A {images_:,}-image ImageNet-size run ({case}, float model + NPU graph, "
             "images already decoded and cropped), from the measured rates:"]
    for r in runs:
        eff = (f" (speed-up {r.speedup:.2f}x: {100 * r.speedup / r.workers:.0f} % of "
               f"{r.workers} workers)" if r.workers > 1 and r.speedup else "")
        lines.append(f"- {r.setup}: {images_:,} / {r.rate:.1f} images/s = "
                     f"{images_ / r.rate / 60:.1f} min{eff}")
    per_worker = max((r.rate / r.workers for r in runs if r.threads == 1), default=None)
    if per_worker:
        lines.append(f"- N single-thread workers (processes or Ray actors on a cluster) at "
                     f"the best measured {per_worker:.1f} images/s each: "
                     f"{images_ / per_worker / 60:.1f} min / N (assumes each worker has a core "
                     "of its own, as fast as this one, and the data where every worker reads "
                     "it; plus a few seconds of start-up)")
    return "\n".join(lines)


def main(crops: int = CROPS, cache: Path | None = None, names: list[str] | None = None) -> int:
    """Build the cases, measure, print the checks, the table and the estimate; exit code 1
    when some setup gave different numbers."""
    names = names or ["fashion_mnist_cnn", "mobilenet_v2"]
    load0 = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ortnpu_scale_") as tmp:
        folder = Path(tmp)
        cases: list[Case] = []
        for name in names:
            if name == "fashion_mnist_cnn":
                got = fashion_case(folder)
            elif name == "mobilenet_v2":
                got = mobilenet_case(folder, crops, cache)
            else:
                raise SystemExit(f"scale measures fashion_mnist_cnn and mobilenet_v2, not "
                                 f"{name!r}")
            if isinstance(got, str):
                print(f"# {got} (skipped)")
            else:
                print(f"# {got.name}: {got.description}, batch {got.batch}")
                cases.append(got)
        prepared = time.perf_counter() - start
        m = measure(cases)
    for note in m.notes:
        print(f"# {note}")
    for case in cases:
        runs = [r for r in m.runs if r.case == case.name]
        same = all(r.identical for r in runs)
        print(f"{case.name}: identical numbers in all {len(runs)} runs: "
              f"{'yes' if same else 'NO'}")
    print(f"\nload average (1/5/15 min) at the start {load0[0]:.2f} / {load0[1]:.2f} / "
          f"{load0[2]:.2f}, at the end " + " / ".join(f"{v:.2f}" for v in os.getloadavg())
          + f"; {os.cpu_count()} CPUs; preparing (quantizing, crops, shards) {prepared:.0f} s"
          + (f"; starting the local Ray cluster {m.ray_start:.1f} s" if m.ray_start else "")
          + f"; total {time.perf_counter() - start:.0f} s")
    print("the machine's own 2-process speed-up on a pure-Python loop (the ceiling of the "
          "speed-ups below), before and after the runs: "
          + " / ".join(f"{v:.2f}x" for v in m.machine) + "\n")
    print(table(m))
    print()
    print(estimate(m))
    return 0 if all(r.identical for r in m.runs) else 1


__all__ = ["SETUPS", "Case", "Measurement", "Run", "estimate", "main", "measure", "table"]
