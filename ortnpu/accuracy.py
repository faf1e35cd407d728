"""Accuracy at dataset scale: a float model and its NPU graph over a whole labelled dataset.

:func:`evaluate_accuracy` answers "how much accuracy do I lose on my validation set?": top-1
and top-k accuracy of both models, how often their top-1 classes agree, the drop per class,
SQNR/cosine of every output and any metric of the user's, over datasets of any size
(:mod:`ortnpu.datasets`).

The dataset is cut into numbered batches; each batch is scored on its own into a small
**record** of sums (correct counts, the SQNR sums of :class:`ortnpu.comparison._Accumulator`).
Records are reduced in batch order at the end, so the result is identical bit for bit whoever
scored the batches and in which order they finished:

* ``engine="local"``: this process, ``workers=1``;
* ``engine="processes"``: this process and ``workers - 1`` others on this machine, forked from
  a fork server that imported numpy, onnx and onnxruntime once (spawned where there is no fork
  server), each building its two sessions once (they import the same ortnpu package as this
  process, checked); this process scores while the others start;
* ``engine="ray"``: Ray Data ``map_batches`` with an actor per worker that builds its sessions
  once; on a cluster when ``ray.init`` connects to one (``RAY_ADDRESS``), see docs/accuracy.md.

Every worker scores the float model and the NPU graph itself, on its own batches (a task names
its data: file names, a slice of an ``.npz`` shard, which it memory-maps), with ``threads``
intra-op threads in both sessions.

Every record is appended to the ``checkpoint`` file (JSON lines) as it arrives; a run given the
file of an interrupted run scores only the missing batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ortnpu import console
from ortnpu.comparison import Metrics, _Accumulator, _load, _num
from ortnpu.datasets import Dataset, Task, as_dataset
from ortnpu.errors import CalibrationError, ModelError

SCHEMA = "ortnpu.accuracy/1"
DEFAULT_BATCH = 64
ENGINES = ("local", "processes", "ray")

#: metric(float_outputs, npu_outputs, labels) -> {name: one value per sample}
UserMetric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], "np.ndarray | None"],
                      Mapping[str, Any]]


# -- result ---------------------------------------------------------------------------------

@dataclass
class AccuracyResult:
    """The evaluation of an NPU graph against its float model over a dataset.

    Accuracies are fractions in [0, 1] (None without labels or class scores); ``per_class``
    lists ``{class, samples, float, npu, drop}`` for every class present in the labels;
    ``outputs`` the error of each output over all samples; ``user`` the mean per sample of each
    value the user metric returned.
    """

    samples: int
    batches: int
    output: str
    topk: int
    float_top1: float | None = None
    npu_top1: float | None = None
    float_topk: float | None = None
    npu_topk: float | None = None
    agreement: float | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Metrics] = field(default_factory=dict)
    user: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: CPU seconds of every process that scored (this one during the run, each worker from
    #: its start; None with Ray, whose actors are the cluster's)
    cpu_seconds: float | None = None
    engine: str = "local"
    workers: int = 1
    resumed: int = 0
    float_model: str = ""
    npu_model: str = ""

    @property
    def top1_drop(self) -> float | None:
        """Float top-1 accuracy minus the NPU graph's (positive: accuracy lost)."""
        if self.float_top1 is None or self.npu_top1 is None:
            return None
        return self.float_top1 - self.npu_top1

    def numbers(self) -> dict[str, Any]:
        """The result without timings: equal for any engine and worker count."""
        d = self.to_dict()
        for k in ("seconds", "samples_per_second", "cpu_seconds", "engine", "workers",
                  "resumed"):
            d.pop(k)
        return d

    def to_dict(self) -> dict[str, Any]:
        rate = self.samples / self.seconds if self.seconds > 0 else None
        return {"schema": SCHEMA, "float_model": self.float_model, "npu_model": self.npu_model,
                "samples": self.samples, "batches": self.batches, "output": self.output,
                "topk": self.topk, "float_top1": self.float_top1, "npu_top1": self.npu_top1,
                "top1_drop": self.top1_drop, "float_topk": self.float_topk,
                "npu_topk": self.npu_topk, "agreement": self.agreement,
                "per_class": self.per_class,
                "outputs": {k: m.to_dict() for k, m in self.outputs.items()},
                "user": {k: _num(v) for k, v in self.user.items()},
                "seconds": round(self.seconds, 3), "samples_per_second":
                    None if rate is None else round(rate, 2),
                "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
                "engine": self.engine, "workers": self.workers, "resumed": self.resumed}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self, class_names: Sequence[str] | None = None) -> str:
        """One self-contained HTML page (:mod:`ortnpu.report.accuracy`); ``class_names[i]``
        names class ``i`` (e.g. an image folder's sub-folders)."""
        from ortnpu.report.accuracy import render_html

        return render_html(self, class_names)

    def to_text(self, classes: int = 10) -> str:
        """A summary: accuracies, agreement, the ``classes`` worst per-class drops, outputs."""
        pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"   # noqa: E731
        rate = f", {self.samples / self.seconds:.1f} samples/s" if self.seconds > 0 else ""
        lines = [f"accuracy of {self.npu_model} against {self.float_model}: {self.samples} "
                 f"samples in {self.seconds:.1f} s{rate} ({self.engine}, {self.workers} "
                 f"worker{'s' if self.workers != 1 else ''}"
                 + (f", {self.resumed} batches resumed" if self.resumed else "") + ")"]
        if self.float_top1 is not None:
            lines.append(f"  top-1: float {pct(self.float_top1)}, NPU {pct(self.npu_top1)} "
                         f"(drop {100 * (self.top1_drop or 0.0):+.2f} points)")
            lines.append(f"  top-{self.topk}: float {pct(self.float_topk)}, NPU "
                         f"{pct(self.npu_topk)}")
        if self.agreement is not None:
            lines.append(f"  top-1 agreement float vs NPU: {pct(self.agreement)}")
        worst = sorted((c for c in self.per_class if c["drop"] > 0),
                       key=lambda c: (-c["drop"], c["class"]))[:classes]
        if worst:
            lines.append("  largest per-class drops (points, samples): " + ", ".join(
                f"class {c['class']} {100 * c['drop']:.2f} ({c['samples']})" for c in worst))
        elif self.per_class:
            lines.append("  no class loses accuracy")
        for name, m in self.outputs.items():
            lines.append(f"  output {name}: SQNR {m.sqnr_db:.2f} dB, cosine {m.cosine:.6f}")
        for name, v in self.user.items():
            lines.append(f"  {name}: {v:.6g}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# -- scoring one batch ----------------------------------------------------------------------

@dataclass
class _Config:
    """Everything a worker needs to score batches (pickled once per worker)."""

    float_bytes: bytes
    npu_bytes: bytes
    dataset: Dataset
    output: str
    topk: int
    metric: UserMetric | None
    package: str
    threads: int | None = None
    npu_runtime: str = "ortnpu"


def package_dir() -> str:
    """The folder of the ortnpu package this process imported."""
    import ortnpu

    return os.path.dirname(os.path.realpath(ortnpu.__file__))


class _Scorer:
    """Holds the two sessions of one process and turns tasks into records."""

    def __init__(self, config: _Config) -> None:
        from ortnpu.feeds import session_specs
        from ortnpu.runtime import InferenceSession

        if package_dir() != config.package:
            raise ModelError(f"an accuracy worker imported ortnpu from {package_dir()} but "
                             f"the run started from {config.package}; start workers where the "
                             "same ortnpu is installed (not from a source checkout)")
        self.config = config
        self.f_sess = InferenceSession(config.float_bytes, intra_op_num_threads=config.threads)
        if config.npu_runtime == "onnxruntime":   # a baseline QDQ model, as onnxruntime runs it
            import onnxruntime as ort

            from ortnpu.console import quiet_session_options

            so = quiet_session_options()
            if config.threads is not None:
                so.intra_op_num_threads = config.threads
            self.n_sess = ort.InferenceSession(config.npu_bytes, so,
                                               providers=["CPUExecutionProvider"])
        else:
            self.n_sess = InferenceSession(config.npu_bytes,
                                           intra_op_num_threads=config.threads)
        self.specs = session_specs(self.n_sess)
        self.names = [o.name for o in self.n_sess.get_outputs()]

    def __call__(self, task: Task) -> dict[str, Any]:
        from ortnpu.feeds import cast_input, run_samples

        feed, labels = self.config.dataset.load(task.payload, self.specs)
        for s in self.specs:
            if s.name not in feed:
                raise CalibrationError(f"batch {task.index}: no array for input {s.name!r}")
        feed = {s.name: cast_input(s, feed[s.name], f"batch {task.index}") for s in self.specs}
        f = dict(zip(self.names, run_samples(self.f_sess, feed, self.names, progress=False),
                     strict=True))
        q = dict(zip(self.names, run_samples(self.n_sess, feed, self.names, progress=False),
                     strict=True))
        return score_batch(task.index, f, q, labels, self.config.output, self.config.topk,
                           self.config.metric)


def score_batch(index: int, f: Mapping[str, np.ndarray], q: Mapping[str, np.ndarray],
                labels: np.ndarray | None, output: str, topk: int,
                metric: UserMetric | None = None) -> dict[str, Any]:
    """The record of one batch: sample count, correct counts and error sums (JSON-able)."""
    scores, npu = np.asarray(f[output]), np.asarray(q[output])
    n = int(scores.shape[0]) if scores.ndim else 1
    rec: dict[str, Any] = {"i": index, "n": n, "outputs": {}}
    for name in f:
        acc = _Accumulator(name)
        acc.update(f[name], q[name])
        rec["outputs"][name] = acc.state()
    if scores.ndim == 2 and scores.shape[1] > 1:
        k = min(topk, scores.shape[1])
        f_top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        q_top = np.argsort(-npu.astype(np.float64), axis=1, kind="stable")[:, :k]
        rec["agree"] = int((f_top[:, 0] == q_top[:, 0]).sum())
        if labels is not None:
            y = np.asarray(labels).reshape(-1).astype(np.int64)
            if len(y) != n:
                raise CalibrationError(f"batch {index}: {len(y)} labels for {n} samples")
            if y.size and (y.min() < 0 or y.max() >= scores.shape[1]):
                raise CalibrationError(f"batch {index}: labels {y.min()}..{y.max()} outside "
                                       f"the {scores.shape[1]} classes of output {output!r}")
            f_ok, q_ok = f_top[:, 0] == y, q_top[:, 0] == y
            rec["float_top1"], rec["npu_top1"] = int(f_ok.sum()), int(q_ok.sum())
            rec["float_topk"] = int((f_top == y[:, None]).any(1).sum())
            rec["npu_topk"] = int((q_top == y[:, None]).any(1).sum())
            rec["per_class"] = {str(c): [int((y == c).sum()), int(f_ok[y == c].sum()),
                                         int(q_ok[y == c].sum())] for c in np.unique(y)}
    if metric is not None:
        values = metric(f, q, labels)
        if not isinstance(values, Mapping):
            raise CalibrationError(f"the metric returned a {type(values).__name__}; return "
                                   "{name: one value per sample}")
        rec["user"] = {}
        for name, v in values.items():
            a = np.asarray(v, np.float64).reshape(-1)
            if a.size != n:
                raise CalibrationError(f"metric {name!r}: {a.size} values for a batch of {n} "
                                       "samples; return one value per sample")
            rec["user"][str(name)] = float(a.sum())
    return rec


def reduce_records(records: Sequence[Mapping[str, Any]], output: str, topk: int) -> AccuracyResult:
    """Sum the records in batch order (the same sums whatever scored them)."""
    records = sorted(records, key=lambda r: r["i"])
    samples = sum(r["n"] for r in records)
    if samples == 0:
        raise CalibrationError("the dataset holds no samples")
    res = AccuracyResult(samples=samples, batches=len(records), output=output, topk=topk)
    accs: dict[str, _Accumulator] = {}
    for r in records:
        for name, state in r["outputs"].items():
            accs.setdefault(name, _Accumulator(name)).merge(state)
    res.outputs = {k: a.result() for k, a in accs.items()}
    if all("agree" in r for r in records):
        res.agreement = sum(r["agree"] for r in records) / samples
    if all("float_top1" in r for r in records):
        for key in ("float_top1", "npu_top1", "float_topk", "npu_topk"):
            setattr(res, key, sum(r[key] for r in records) / samples)
        per: dict[int, list[int]] = {}
        for r in records:
            for c, counts in r["per_class"].items():
                row = per.setdefault(int(c), [0, 0, 0])
                for j in range(3):
                    row[j] += counts[j]
        res.per_class = [{"class": c, "samples": n, "float": fo / n, "npu": qo / n,
                          "drop": (fo - qo) / n} for c, (n, fo, qo) in sorted(per.items())]
    if records and all("user" in r for r in records):
        names = list(records[0]["user"])
        res.user = {k: math.fsum(r["user"][k] for r in records) / samples for k in names}
    return res


# -- engines --------------------------------------------------------------------------------

_worker_config: _Config | None = None
_worker_scorer: _Scorer | None = None


def _init_worker(config_path: str) -> None:
    """Pool initializer: read the config from the file the parent wrote once (through the
    start-up pipe, a config of a few MB blocked starting the next process until this one had
    imported onnx); the sessions are built by the first task, so their errors reach the parent
    as the task's exception."""
    global _worker_config
    import pickle

    with open(config_path, "rb") as fh:
        _worker_config = pickle.load(fh)


def _score_in_worker(task: Task) -> tuple[dict[str, Any], int, float]:
    """A task's record, with this worker's pid and CPU seconds so far (a worker forked from
    the fork server is not this run's child: its CPU time is only known from itself)."""
    global _worker_scorer
    if _worker_scorer is None:
        assert _worker_config is not None
        _worker_scorer = _Scorer(_worker_config)
    record = _worker_scorer(task)
    return record, os.getpid(), time.process_time()


def _kernel_threads(restore: int | None = None) -> int | None:
    """The C kernels' thread count, a process-wide setting that building a session with
    ``threads`` changes; given ``restore``, set it back (the caller's own sessions keep theirs).
    """
    from ortnpu.domain import kernels

    native = kernels._native()
    if native is None:
        return None
    if restore is not None:
        native.set_threads(restore)
    return native.get_threads()


def _write_config(config: _Config) -> str:
    """The config pickled into a temporary file for the worker processes; its path."""
    import pickle
    import tempfile

    try:
        data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise CalibrationError(f"with workers the metric (and an iterable dataset's arrays) "
                               f"must be picklable: use a module-level function ({exc})"
                               ) from None
    fd, path = tempfile.mkstemp(prefix="ortnpu_accuracy_", suffix=".pickle")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


#: the slow imports of a worker (~2 s): the fork server imports them once, so a worker forked
#: from it starts in a fraction of a second. Not ortnpu: Python 3.11's fork server ignores the
#: caller's ``sys.path`` and would import a source checkout in its working directory; each
#: worker imports ortnpu itself (50 ms) on the caller's path, checked by ``_Scorer``
PRELOAD = ("numpy", "onnx", "onnxruntime")


def worker_context() -> Any:
    """Where the worker processes come from: a fork server where the platform has one, else
    a spawned interpreter each.

    The fork server is started once per process, from a fresh interpreter (like a spawned
    one: no onnxruntime threads are ever forked); it imports :data:`PRELOAD` and forks each
    worker from there. Every later evaluation's
    workers (autofix trials, the bench's rows) start without importing onnx and onnxruntime
    again. A worker still imports the caller's main script (as with spawn), so a script needs
    ``if __name__ == "__main__":`` around the code that starts an evaluation.

    Setting the preload list is process-wide (``multiprocessing.set_forkserver_preload``):
    it applies to a fork server this process starts later for its own pools too (those then
    import numpy, onnx and onnxruntime at start-up; nothing else changes); a server already
    running keeps its list.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():   # Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _run_processes(config: _Config, tasks: Iterator[Task], workers: int,
                   cpu: dict[int, float] | None = None) -> Iterator[dict[str, Any]]:
    """Score tasks in this process and ``workers - 1`` others (:func:`worker_context`).

    This process scores from the start, in a thread, while the others start: a new worker
    spends a fraction of a second (forked from a running fork server) to two seconds (the
    server's or a spawned interpreter's imports) before it builds its sessions, time the first
    worker now spends scoring instead of waiting. Each worker process holds one task at a
    time (the next is sent when its record arrives), so at the end no process sits on queued
    batches while another is idle. ``cpu`` receives each worker process's CPU seconds (pid:
    seconds).
    """
    import queue
    import threading
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    lock, stop = threading.Lock(), threading.Event()
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()

    def next_task() -> Task | None:
        with lock:   # the dataset's generator is shared by this thread and the scoring one
            return None if stop.is_set() else next(tasks, None)

    def score_here() -> None:
        try:
            scorer = _Scorer(config)
            while (task := next_task()) is not None:
                inbox.put(("record", scorer(task)))
        except BaseException as exc:   # re-raised in the calling thread
            inbox.put(("error", exc))
        finally:
            inbox.put(("done", None))

    children = workers - 1
    path = _write_config(config) if children else None
    pending: set[Future] = set()
    thread = threading.Thread(target=score_here, name="ortnpu-accuracy", daemon=True)
    try:
        with contextlib.ExitStack() as stack:
            # forked from a fork server that imported numpy, onnx and onnxruntime once (a
            # fresh interpreter: no forked onnxruntime threads)
            pool = stack.enter_context(ProcessPoolExecutor(
                children, mp_context=worker_context(),
                initializer=_init_worker, initargs=(path,))) if children else None

            def send() -> None:
                task = next_task() if pool is not None else None
                if task is not None:
                    future = pool.submit(_score_in_worker, task)
                    pending.add(future)
                    future.add_done_callback(lambda f: inbox.put(("future", f)))

            try:
                thread.start()   # scores while the workers start (a fork server's first start
                for _ in range(children):   # waits for its imports)
                    send()
                here = True
                while here or pending:
                    kind, item = inbox.get()
                    if kind == "error":
                        raise item
                    if kind == "done":
                        here = False
                        continue
                    if kind == "future":
                        pending.discard(item)
                        rec, pid, seconds = item.result()
                        if cpu is not None:
                            cpu[pid] = max(seconds, cpu.get(pid, 0.0))
                        send()
                        item = rec
                    yield item
            finally:
                stop.set()
                for f in pending:
                    f.cancel()
                if thread.is_alive():
                    thread.join()
    except BrokenProcessPool:
        raise ModelError("an accuracy worker process died (killed, out of memory, or a script "
                         "without `if __name__ == \"__main__\":` around the code that starts "
                         "the evaluation: worker processes import the main script)") from None
    finally:
        if path:
            os.unlink(path)


class RayScorer:
    """Ray Data actor: builds its sessions once, scores one task per row."""

    def __init__(self, config: Any) -> None:
        import ray

        # the config (both models) travels once through the object store, not per actor
        self.scorer = _Scorer(ray.get(config) if isinstance(config, ray.ObjectRef) else config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pickle

        out = [json.dumps(self.scorer(Task(int(i), pickle.loads(p))))
               for i, p in zip(batch["i"], batch["payload"], strict=True)]
        return {"record": np.array(out, dtype=object)}


def _run_ray(config: _Config, tasks: Iterator[Task], workers: int) -> Iterator[dict[str, Any]]:
    import pickle

    try:
        import ray
    except ImportError:
        raise CalibrationError("engine 'ray' needs Ray: pip install 'ortnpu[ray]'") from None
    if not ray.is_initialized():
        ray.init()   # a cluster when RAY_ADDRESS is set, else a local one
    items = [{"i": t.index, "payload": pickle.dumps(t.payload)} for t in tasks]
    if not items:
        return
    # one block per task, each actor holding one task at a time (no queued batches on one actor
    # while another is idle at the end), one CPU per actor (its sessions run one thread)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    out = ds.map_batches(RayScorer, fn_constructor_kwargs={"config": ray.put(config)},
                         batch_size=1, num_cpus=1, compute=ray.data.ActorPoolStrategy(
                             size=workers, max_tasks_in_flight_per_actor=1))
    try:
        for row in out.iter_rows():
            yield json.loads(row["record"])
    except ray.exceptions.RayError as exc:   # an ortnpu error inside an actor: its own line
        lines = str(exc).splitlines()
        ours = [ln for ln in lines if ln.startswith("ortnpu.errors.")]
        raise ModelError("Ray worker failed: " + (ours[-1].split(": ", 1)[-1] if ours
                                                  else lines[0] if lines else repr(exc))
                         ) from None


# -- checkpoint -----------------------------------------------------------------------------

def _read_checkpoint(path: str, header: dict[str, Any]) -> list[dict[str, Any]]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    try:
        found = json.loads(lines[0])
    except json.JSONDecodeError:
        raise CalibrationError(f"{path}: not an ortnpu accuracy results file; delete it or "
                               "give another") from None
    if found != header:
        diff = sorted(k for k in set(found) | set(header) if found.get(k) != header.get(k))
        raise CalibrationError(f"{path}: holds results of another evaluation (different "
                               f"{', '.join(diff)}); delete it or give another file")
    records = []
    for line in lines[1:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:   # the line being written when the run stopped
            break
    return records


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# -- entry point ----------------------------------------------------------------------------

def evaluate_accuracy(float_model: onnx.ModelProto | str | os.PathLike,
                      npu_model: onnx.ModelProto | str | os.PathLike, dataset: Any, *,
                      metric: UserMetric | None = None, output: str | None = None,
                      topk: int = 5, batch: int = DEFAULT_BATCH, workers: int = 1,
                      engine: str | None = None, checkpoint: str | os.PathLike | None = None,
                      progress: bool = True, threads: int | None = None,
                      npu_runtime: str = "ortnpu") -> AccuracyResult:
    """Evaluate an NPU graph against its float model over a labelled dataset.

    Args:
        float_model: the float model (ModelProto or path).
        npu_model: its NPU graph (from :func:`ortnpu.quantize`).
        dataset: an image folder, ``.npz`` shard path(s), a :class:`ortnpu.datasets.Dataset`
            or any iterable of ``(inputs, label)`` (see :mod:`ortnpu.datasets`).
        metric: ``metric(float_outputs, npu_outputs, labels) -> {name: values}`` with one
            value per sample of the batch; the result holds each name's mean over the dataset.
            With workers it must be picklable (a module-level function).
        output: the output holding class scores (default: the first).
        topk: the k of top-k accuracy.
        batch: samples per batch (the unit of work, of the checkpoint and of a worker).
        workers: scorers in parallel: with ``processes``, this process and ``workers - 1``
            others (forked from a fork server, or spawned); with ``ray``, Ray actors.
        engine: ``local``, ``processes`` or ``ray`` (default: local for one worker, else
            processes).
        checkpoint: a JSON-lines file each finished batch is appended to; given the file of an
            interrupted run with the same models, data and settings, only the missing batches
            are scored.
        progress: a progress bar (batches, rate, ETA) on stderr when it is a terminal.
        threads: intra-op threads of each worker's sessions, float and NPU (default:
            onnxruntime's own choice for one local worker, 1 per Ray actor, else
            ``cpu_count // workers`` so workers do not compete).
        npu_runtime: ``ortnpu`` (an NPU graph, :class:`ortnpu.InferenceSession`) or
            ``onnxruntime`` (a plain onnxruntime session with its default optimizations, e.g.
            a QDQ model of onnxruntime's own quantizer scored as a baseline).

    Raises:
        ModelError: the models do not belong together or cannot run.
        CalibrationError: bad data, labels, metric or settings.
    """
    engine = engine or ("local" if workers == 1 else "processes")
    if engine not in ENGINES:
        raise CalibrationError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if npu_runtime not in ("ortnpu", "onnxruntime"):
        raise CalibrationError(f"npu_runtime must be 'ortnpu' or 'onnxruntime', got "
                               f"{npu_runtime!r}")
    if threads is not None and threads < 1:
        raise CalibrationError(f"threads must be at least 1, got {threads}")
    if workers < 1 or batch < 1 or topk < 1:
        raise CalibrationError(f"workers, batch and topk must be at least 1, got {workers}, "
                               f"{batch}, {topk}")
    if engine == "local" and workers != 1:
        raise CalibrationError("engine 'local' runs one worker; use engine 'processes' or 'ray'")
    fm, f_name = _load(float_model, "float model")
    nm, n_name = _load(npu_model, "NPU graph")
    f_out = [o.name for o in fm.graph.output]
    n_out = [o.name for o in nm.graph.output]
    if f_out != n_out:
        raise ModelError(f"{n_name} has outputs {n_out} but {f_name} has {f_out}; pass the "
                         "float model the NPU graph was quantized from")
    output = output or n_out[0]
    if output not in n_out:
        raise ModelError(f"{n_name} has no output {output!r}; its outputs are {n_out}")
    data = as_dataset(dataset)
    f_bytes, n_bytes = fm.SerializeToString(), nm.SerializeToString()
    if threads is None and engine == "ray":
        threads = 1   # each actor reserves one CPU (num_cpus=1), wherever it runs
    elif threads is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
    config = _Config(f_bytes, n_bytes, data, output, topk, metric, package_dir(), threads,
                     npu_runtime)
    header = {"schema": SCHEMA, "float": _digest(f_bytes), "npu": _digest(n_bytes),
              "data": data.describe(), "batch": batch, "output": output, "topk": topk,
              "metric": getattr(metric, "__qualname__", None) if metric else None}
    if npu_runtime != "ortnpu":
        header["npu_runtime"] = npu_runtime
    records = _read_checkpoint(os.fspath(checkpoint), header) if checkpoint else []
    done = {r["i"] for r in records}
    resumed = len(records)
    total = data.count(batch)
    todo = (t for t in data.tasks(batch) if t.index not in done)
    start, cpu_start = time.perf_counter(), time.process_time()
    worker_cpu: dict[int, float] = {}
    kernel_threads = _kernel_threads()   # a session built here sets them for the process
    sink = None
    stream: Iterator[dict[str, Any]] = iter(())
    try:
        if engine == "local":
            stream = map(_Scorer(config), todo)
        elif engine == "processes":
            stream = _run_processes(config, todo, workers, worker_cpu)
        else:
            stream = _run_ray(config, todo, workers)
        if checkpoint:
            fresh = not records
            sink = open(checkpoint, "a" if not fresh else "w", encoding="utf-8")  # noqa: SIM115
            if fresh:
                sink.write(json.dumps(header) + "\n")
                sink.flush()
        for rec in console.progress(stream, total=None if total is None else total - resumed,
                                    desc="accuracy", unit="batch", enabled=progress):
            records.append(rec)
            if sink:
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
    finally:
        if sink:
            sink.close()
        close = getattr(stream, "close", None)
        if close is not None:   # stops the scoring thread and the processes at once
            close()
        _kernel_threads(kernel_threads)
    result = reduce_records(records, output, topk)
    result.seconds = time.perf_counter() - start
    if engine != "ray":
        result.cpu_seconds = time.process_time() - cpu_start + sum(worker_cpu.values())
    result.engine, result.workers, result.resumed = engine, workers, resumed
    result.float_model, result.npu_model = f_name, n_name
    return result


__all__ = ["AccuracyResult", "evaluate_accuracy", "reduce_records", "score_batch"]
