"""Side-by-side latency: onnxruntime float, onnxruntime int8 (QDQ), ortnpu's NPU graph.

All sessions of a model (the three executions at every thread count) run in one process on the
same input; the numbers that matter are the ratios, never absolute times. They are timed in
turns (blocks of runs of each, again and again, each block after the threads of the session
before it went idle and a few milliseconds of untimed runs) so that a slower or faster phase of
a shared machine affects all alike; each latency is the median of its runs. Each batch size is
timed on a quiet machine and again while a competing process keeps one core busy (a Python busy
loop, ended after the measurement).

What is timed: ``session.run`` on an input already in memory, after the sessions were created
(session set-up, quantization and the compilation of the C programs are not included).

Also reported: what onnxruntime actually ran (the node types of the graph it optimized, saved
with ``optimized_model_filepath``: integer, float, Q/DQ), the multiply-adds per second of
ortnpu's largest layers against this CPU's peak (at its measured clock), and quantization time
(``ortnpu.quantize`` against onnxruntime's ``quantize_static`` with the same calibration images).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ortnpu.bench.models import BenchModel
from ortnpu.console import quiet_session_options
from ortnpu.quant.onnxruntime_qdq import quantize_with_onnxruntime, sample_feeds

CALIBRATION_IMAGES = 64

#: onnxruntime node types that compute on integers (its int8 kernels).
_INTEGER_OPS = frozenset({"QGemm", "QAttention", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                          "DynamicQuantizeLinear"})
#: node types that only move, select or reshape values (exact on any type).
_MOVE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat",
                       "Gather", "Shape", "Slice", "Split", "Identity", "MaxPool", "Expand",
                       "ConstantOfShape", "Constant", "ReorderInput", "ReorderOutput", "Cast",
                       "Equal", "Where"})


def op_kind(op_type: str) -> str:
    """``integer``, ``qdq`` (QuantizeLinear/DequantizeLinear), ``move`` or ``float``."""
    if op_type.startswith("QLinear") or "Integer" in op_type or op_type in _INTEGER_OPS:
        return "integer"
    if op_type in ("QuantizeLinear", "DequantizeLinear"):
        return "qdq"
    return "move" if op_type in _MOVE_OPS else "float"


@dataclass
class Ran:
    """The node types of the graph onnxruntime optimized and ran, by kind."""

    kinds: dict[str, Counter] = field(default_factory=dict)

    def summary(self) -> str:
        """E.g. ``integer 52 (QLinearConv 52), float 2 (Conv 1, Add 1), Q/DQ 4, moves 3``."""
        parts = []
        for kind, label, detail in (("integer", "integer", True), ("float", "float", True),
                                    ("qdq", "Q/DQ", False), ("move", "moves", False)):
            c = self.kinds.get(kind, Counter())
            if not c:
                continue
            text = f"{label} {sum(c.values())}"
            if detail:
                text += " (" + ", ".join(f"{k} {v}" for k, v in c.most_common()) + ")"
            parts.append(text)
        return ", ".join(parts)


def onnxruntime_ran(model: str | bytes, threads: int) -> Ran:
    """What onnxruntime runs for ``model`` (a path or serialized bytes) at the benchmark's
    options: the node types of its optimized graph, saved by ``optimized_model_filepath``."""
    with tempfile.TemporaryDirectory() as tmp:
        so = quiet_session_options()
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    ran = Ran()
    for node in graph.node:
        ran.kinds.setdefault(op_kind(node.op_type), Counter())[node.op_type] += 1
    return ran


def _best_rate(probe: Callable[[int], int], n: int) -> float:
    """The highest count per second of five runs of a C probe (``probe(n)`` returns what it
    counted; a short run first lets the core leave any idle state)."""
    probe(max(1, n // 10))
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        done = int(probe(n))
        best = max(best, done / max(time.perf_counter() - start, 1e-9))
    return best


def cpu_peak_gmacs() -> tuple[float, str]:
    """Int8 multiply-adds per second one core reaches, and how it was found: measured, with
    twelve independent chains of the best multiply-add instruction ortnpu's kernels use
    (AVX-512 VNNI's VPDPBUSD, 64 per instruction, else AVX2's VPMADDWD, 16), and the clock
    the core ran at meanwhile (a chain of dependent adds). The base clock in /proc/cpuinfo
    and a per-cycle figure from a table were both wrong here: a 2.6 GHz EPYC ran its GEMMs
    at 3.5 GHz with two VNNI instructions per cycle, and a peak from them read 138 %."""
    from ortnpu.domain import native

    if not native.AVAILABLE:
        return 0.0, "no C kernels"
    lib = native._native.lib
    macs = _best_rate(lib.ortnpu_mac_probe, 2_000_000)
    mhz = _best_rate(lib.ortnpu_clock_probe, 40_000_000) / 1e6
    if lib.ortnpu_cpu_has_vnni():
        how = "AVX-512 VNNI VPDPBUSD"
    elif lib.ortnpu_cpu_has_avx2():
        how = "AVX2 VPMADDWD"
    else:
        return 0.0, "no SIMD path"
    per_cycle = f", {macs / (mhz * 1e6):.0f} MAC/cycle at {mhz:.0f} MHz" if mhz else ""
    return macs / 1e9, f"measured: {how}, 12 independent chains{per_cycle}, one core"


@contextlib.contextmanager
def competing_process(seconds: float = 900.0) -> Iterator[None]:
    """A busy loop in another process while the block runs (it also ends by itself after
    ``seconds``, should this process die first)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        busy.kill()
        busy.wait()


@dataclass
class SpeedRow:
    """Median latencies (ms) of one model at one thread count, batch size and machine load."""

    model: str
    threads: int
    batch: int
    busy: bool              # a competing process kept a core busy
    float_ms: float
    qdq_ms: float
    ortnpu_ms: float
    native: bool            # every NPU subgraph ran as a compiled C program
    one_thread_ms: float = 0.0  # ortnpu at 1 thread in the same measurement (scaling)

    @property
    def vs_qdq(self) -> float:
        return self.ortnpu_ms / self.qdq_ms

    @property
    def vs_float(self) -> float:
        return self.ortnpu_ms / self.float_ms

    @property
    def vs_best(self) -> float:
        """Against the faster of onnxruntime's int8 and float executions."""
        return self.ortnpu_ms / min(self.qdq_ms, self.float_ms)


@dataclass
class ModelReport:
    """Everything measured on one model."""

    model: str
    rows: list[SpeedRow]
    quant_ort_s: float      # onnxruntime quantize_static
    quant_ortnpu_s: float   # ortnpu.quantize (same calibration images)
    ran_float: Ran
    ran_qdq: Ran
    layers: list[tuple[str, int, float, float]]  # largest layers: name, MACs, ms, GMAC/s
    peak_mb: float
    notes: list[str] = field(default_factory=list)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def wait_for_idle_threads(limit_s: float = 2.0, window_s: float = 0.005,
                          quiet_windows: int = 4) -> float:
    """Sleep until no other thread of this process uses CPU for ``quiet_windows`` windows in
    a row (or ``limit_s`` passed); the seconds waited.

    Why: an onnxruntime session's pool keeps spinning after its run ends (about 70 ms for a
    2-thread MobileNetV2 session on the benchmark machine, longer while a competing process
    holds a core, since the spin counts iterations). Timed right after it, the next session
    shares the CPU with those spinning threads: with a busy second core, ortnpu's 2-thread
    session ran 1.5x slower than its 1-thread one even with every layer on one thread, an
    artefact of the order of the turns, not of either session. ortnpu's own idle workers are
    waited for alike. Several quiet windows in a row, not one: on a loaded machine a spinning
    thread can wait a whole window for a core and look idle (CI saw the next session start
    while a 50 ms spinner was still alive)."""
    start = time.perf_counter()
    quiet = 0
    while time.perf_counter() - start < limit_s and quiet < quiet_windows:
        others = time.process_time() - time.thread_time()
        time.sleep(window_s)
        busy = time.process_time() - time.thread_time() - others >= 0.1 * window_s
        quiet = 0 if busy else quiet + 1
    return time.perf_counter() - start


def interleaved_medians(runs: list[Callable[[], object]], repeat: int, rounds: int = 10,
                        settle_ms: float = 5.0) -> list[float]:
    """Median milliseconds of each callable over ``repeat`` timed runs, taken in ``rounds``
    blocks in turn. Each block first waits until the threads of the session before it are
    idle (:func:`wait_for_idle_threads`), then runs untimed for ``settle_ms`` (at least one
    run: a sleeping pool must wake up, as it would have in a session used steadily)."""
    times: list[list[float]] = [[] for _ in runs]
    per_block = max(1, -(-repeat // rounds))
    for _ in range(rounds):
        for k, run in enumerate(runs):
            wait_for_idle_threads()
            settle_until = time.perf_counter() + settle_ms / 1000
            run()
            while time.perf_counter() < settle_until:
                run()
            for _ in range(per_block):
                start = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def fixed_batch(model: onnx.ModelProto) -> int:
    """The batch size the model's first input fixes (0: free)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0


def free_batch(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model with a free batch axis (exporters often fix it to 1), or None when the graph
    itself depends on it (a Reshape to a fixed batch): checked by running 2 samples."""
    free = onnx.ModelProto()
    free.CopyFrom(model)
    del free.graph.value_info[:]
    for vi in (free.graph.input[0], *free.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    try:
        sess = ort.InferenceSession(free.SerializeToString(), quiet_session_options(),
                                    providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        sess.run(None, {inp.name: np.zeros([2, *inp.shape[1:]], np.float32)})
    except Exception:  # onnxruntime refuses the graph or the batch: keep the fixed one
        return None
    return free


def largest_layers(sess: object, x: np.ndarray, top: int = 3,
                   repeat: int = 20) -> list[tuple[str, int, float, float]]:
    """The ``top`` layers with the most multiply-adds of ortnpu's compiled programs, with their
    profiled milliseconds on ``x`` and GMAC/s (the profile runs the samples one after another)."""
    out = []
    for prog in getattr(sess, "native_programs", []):
        if tuple(x.shape[1:]) != prog.in_dims or x.dtype != prog.in_dtype or not prog.macs:
            continue
        for (name, ms), macs in zip(prog.profile(x, repeat=repeat), prog.macs, strict=True):
            if macs and ms > 0:
                out.append((name, macs * len(x), ms, macs * len(x) / ms / 1e6))
    return sorted(out, key=lambda r: -r[1])[:top]


def measure(model: BenchModel, threads: tuple[int, ...] = (1, 2), repeat: int = 30,
            batches: tuple[int, ...] = (1, 32), busy: tuple[bool, ...] = (False, True),
            target: str = "tflite-int8") -> ModelReport:
    """Time the three executions of ``model`` at every thread count, batch size and load."""

    import ortnpu
    from ortnpu.domain import native

    raw = onnx.load(str(model.path))
    notes = []
    if fixed_batch(raw) and any(b != fixed_batch(raw) for b in batches):
        free = free_batch(raw)
        if free is not None:
            raw = free
            notes.append("batch axis freed (the file fixes it to 1)")
    optimized = ortnpu.optimize(raw)
    name = optimized.graph.input[0].name
    calib = model.calib[:CALIBRATION_IMAGES]
    fixed = fixed_batch(optimized)
    if fixed:
        dropped = [b for b in batches if b != fixed]
        batches = tuple(b for b in batches if b == fixed)
        if dropped:
            notes.append(f"the model fixes batch {fixed}: batch {dropped} not measured")

    def options(n: int) -> ort.SessionOptions:
        so = quiet_session_options()
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        return so

    start = time.perf_counter()
    qdq_bytes = quantize_with_onnxruntime(optimized, sample_feeds(name, calib)).SerializeToString()
    quant_ort = time.perf_counter() - start
    start = time.perf_counter()
    npu = ortnpu.quantize(optimized, target, calib, optimize=False)
    quant_ortnpu = time.perf_counter() - start
    float_bytes = optimized.SerializeToString()
    sessions = {}
    for n in threads:
        nsess = ortnpu.InferenceSession(npu, intra_op_num_threads=n)  # also sets C threads
        sessions[n] = (ort.InferenceSession(float_bytes, options(n),
                                            providers=["CPUExecutionProvider"]),
                       ort.InferenceSession(qdq_bytes, options(n),
                                            providers=["CPUExecutionProvider"]), nsess)

    def timed(n: int, sess: object, feed: dict) -> Callable[[], object]:
        if isinstance(sess, ortnpu.InferenceSession):
            def run() -> object:
                native.set_threads(n)  # the C kernels' thread count is process-wide
                return sess.run(None, feed)
            return run
        return lambda: sess.run(None, feed)

    rows = []
    try:
        for batch in batches:
            x = np.ascontiguousarray(model.test[:batch])
            feed = {name: x}
            runs = [timed(n, s, feed) for n in threads for s in sessions[n]]
            for loaded in busy:
                with competing_process() if loaded else contextlib.nullcontext():
                    ms = interleaved_medians(runs, repeat)
                base = ms[2]
                for k, n in enumerate(threads):
                    f, q, o = ms[3 * k:3 * k + 3]
                    nsess = sessions[n][2]
                    ok = bool(nsess.compile_reports) and all(r.native
                                                             for r in nsess.compile_reports)
                    rows.append(SpeedRow(model.name, n, batch, loaded, f, q, o, ok, base))
        x1 = np.ascontiguousarray(model.test[:1])
        native.set_threads(threads[0])
        layers = largest_layers(sessions[threads[0]][2], x1)
    finally:
        native.set_threads(None)
    return ModelReport(model.name, rows, quant_ort, quant_ortnpu,
                       onnxruntime_ran(float_bytes, threads[0]),
                       onnxruntime_ran(qdq_bytes, threads[0]), layers, _peak_mb(), notes)


def table(reports: list[ModelReport]) -> str:
    """Markdown: the latency table, then per model what onnxruntime ran, the largest layers'
    GMAC/s and the quantization times."""
    lines = ["| model | batch | competing process | threads | float (ms) | ORT int8 QDQ (ms) | "
             "ortnpu (ms) | **ortnpu / int8** | **ortnpu / faster ORT** | ortnpu n / 1 thread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        for r in rep.rows:
            flag = "" if r.native else " (Python path)"
            scale = f"{r.ortnpu_ms / r.one_thread_ms:.2f}" if r.threads > 1 else "-"
            lines.append(f"| {r.model} | {r.batch} | {'busy' if r.busy else 'no'} | {r.threads} | "
                         f"{r.float_ms:.3f} | {r.qdq_ms:.3f} | {r.ortnpu_ms:.3f}{flag} | "
                         f"{r.vs_qdq:.2f} | {r.vs_best:.2f} | {scale} |")
    peak, how = cpu_peak_gmacs()
    lines += ["", f"Peak: {peak:.0f} GMAC/s ({how}).", ""]
    for rep in reports:
        lines.append(f"* **{rep.model}**: onnxruntime ran, int8 session: {rep.ran_qdq.summary()}; "
                     f"float session: {rep.ran_float.summary()}.")
        if rep.layers:
            layer_text = "; ".join(f"{n} {m / 1e6:.3g} MMAC in {ms:.3f} ms = {g:.0f} GMAC/s"
                                   + (f" ({100 * g / peak:.0f} % of peak)" if peak else "")
                                   for n, m, ms, g in rep.layers)
            lines.append(f"  Largest ortnpu layers (1 thread, batch 1): {layer_text}.")
        lines.append(f"  Quantization: onnxruntime {rep.quant_ort_s:.2f} s, ortnpu "
                     f"{rep.quant_ortnpu_s:.2f} s; the bench process's peak RSS so far "
                     f"{rep.peak_mb:.0f} MB (test data, onnxruntime's calibration and "
                     "ortnpu's quantization together)."
                     + "".join(f" Note: {n}." for n in rep.notes))
    return "\n".join(lines)
