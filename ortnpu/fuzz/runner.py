"""Fuzz runner: cases in worker subprocesses with a per-case timeout, results classified.

Cases are handed out in batches to ``jobs`` worker processes (:mod:`ortnpu.fuzz.worker`). A
worker that dies by a signal or exits early is a **crash** of the case it had started; a case
that does not finish within ``timeout`` seconds is a **hang** (the worker is killed). Either
way the case is replayed alone in a fresh process to confirm it, and the rest of the batch goes
to a new worker. Everything else is classified inside the worker (see its docstring).

Workers import exactly the ortnpu this process imported: its folder goes first on
``PYTHONPATH``, the workers start in an empty temporary directory (so a repository checkout in
the current directory cannot shadow the installed package and its C kernels) and each worker
checks ``ortnpu.__file__`` before its first case (a different package stops the run with
:class:`WorkerImportError`). Each worker reports which kernels it runs; the summary prints them,
and a run whose workers lack the C kernels although they are expected
(:func:`ortnpu.domain.native.expected`) counts as failed.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Classes that count as failures of ortnpu ("missed": a chain case expected to run through a
#: compiled C program stayed on the Python path, see ortnpu.fuzz.chains).
BAD = ("crash", "hang", "foreign", "mismatch", "missed")
#: Case suites: the edges of single ops, models and files (worker.py), or chains of layers
#: through every execution path including the compiled programs (chains.py).
SUITES = ("edges", "chains")
#: Seconds a worker may take to import and build its base models before the first case.
STARTUP_SECONDS = 120.0
#: Exit code of a worker that imported another ortnpu than the runner's.
IMPORT_MISMATCH = 97


class WorkerImportError(RuntimeError):
    """A worker imported a different ortnpu package than the process that started it."""


@dataclass
class Summary:
    """Counts per class and per kind, and the failing cases with how to replay them."""

    seed: int
    suite: str = "edges"
    cases: int = 0
    classes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: what ran, summed over the cases (chains: execution paths, compiled layers "C:<op>")
    paths: Counter = field(default_factory=Counter)
    #: What the workers reported at startup: package folder, kernels, C available/expected.
    workers: dict[str, Any] = field(default_factory=dict)
    #: Run-level failures (C kernels expected but absent in the workers).
    problems: list[str] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        """Count one case's record."""
        self.cases += 1
        self.classes[record["class"]] += 1
        self.kinds[record.get("kind", "?")] += 1
        self.paths.update(record.get("paths", ()))
        if record["class"] in BAD:
            self.failures.append(record)

    @property
    def bad(self) -> int:
        """Failing cases (crashes, hangs, foreign exceptions, mismatches) plus run problems."""
        return sum(self.classes[c] for c in BAD) + len(self.problems)

    @property
    def kernels(self) -> str:
        """Which kernels the workers ran, as they reported it."""
        w = self.workers
        if not w:
            return "unknown (no worker reported)"
        return (f"{'C and numpy' if w.get('c') else 'numpy only'} "
                f"({w.get('kernels', '?')}); ortnpu from {w.get('ortnpu', '?')}")

    def to_text(self, limit: int = 20) -> str:
        """The report: totals, per class, per kind, then the first failures."""
        lines = [f"fuzz {self.suite} seed {self.seed}: {self.cases} cases in "
                 f"{self.seconds:.0f} s",
                 "  " + ", ".join(f"{c} {self.classes[c]}" for c in
                                  ("ok", "ortnpu", "foreign", "mismatch", "missed", "crash",
                                   "hang")),
                 "  kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())),
                 f"  kernels: {self.kernels}"]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        if self.paths:
            lines.append("  ran: " + ", ".join(f"{k} {n}" for k, n in sorted(
                self.paths.items()) if not k.startswith("C:")))
            lines.append("  layers in compiled programs: " + ", ".join(
                f"{k[2:]} {n}" for k, n in sorted(self.paths.items()) if k.startswith("C:")))
        suite = f" --suite {self.suite}" if self.suite != "edges" else ""
        for rec in self.failures[:limit]:
            lines.append(f"  {rec['class'].upper()} case {rec['i']} ({rec.get('kind', '?')}): "
                         f"{rec.get('detail', '')[:300]}")
            lines.append(f"    replay: python -m ortnpu.fuzz.worker --seed {self.seed} "
                         f"--start {rec['i']} --stop {rec['i'] + 1}{suite} --verbose")
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def package_dir() -> str:
    """The folder of the ortnpu package this process imported."""
    import ortnpu

    return os.path.dirname(os.path.realpath(ortnpu.__file__))


def _worker_cmd(seed: int, start: int, stop: int, memory_gib: float,
                suite: str = "edges") -> list[str]:
    return [sys.executable, "-m", "ortnpu.fuzz.worker", "--seed", str(seed), "--start",
            str(start), "--stop", str(stop), "--memory-gib", str(memory_gib), "--suite", suite,
            "--package", package_dir()]


def worker_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: this process's ortnpu first on ``PYTHONPATH``, one kernel
    thread each (unless set)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("ORTNPU_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    root = os.path.dirname(package_dir())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run_batch(seed: int, start: int, stop: int, timeout: float, memory_gib: float,
              env: dict[str, str], cwd: str | None = None,
              ready: dict[str, Any] | None = None, suite: str = "edges"
              ) -> tuple[list[dict[str, Any]], int | None]:
    """Run cases ``[start, stop)`` in one worker until done, a crash or a hang.

    Args:
        cwd: the worker's working directory (keep it outside a source checkout).
        ready: filled with what the worker reports at startup (package, kernels).

    Returns:
        The records of finished cases (plus one crash/hang record), and the first case not
        run (None when the batch completed).

    Raises:
        WorkerImportError: the worker imported another ortnpu than this process.
    """
    proc = subprocess.Popen(_worker_cmd(seed, start, stop, memory_gib, suite),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    records: list[dict[str, Any]] = []
    buf, err_tail = b"", b""
    current: int | None = None
    deadline = time.monotonic() + STARTUP_SECONDS
    done = False
    try:
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(proc)
                at = current if current is not None else start
                records.append({"i": at, "class": "hang",
                                "detail": f"no result within {timeout:.0f} s "
                                          f"({'startup' if current is None else 'case'})"})
                return records, at + 1
            events = sel.select(timeout=min(left, 1.0))
            if not events and proc.poll() is not None:
                break
            for key, _ in events:
                chunk = os.read(key.fileobj.fileno(), 65536)
                if key.data == "err":
                    err_tail = (err_tail + chunk)[-4000:]
                    continue
                if not chunk:
                    done = True
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode("utf-8", "replace").strip()
                    if text.startswith("READY"):
                        deadline = time.monotonic() + timeout
                        if ready is not None and text[5:].strip():
                            ready.update(json.loads(text[5:]))
                    elif text.startswith("B "):
                        current = int(text[2:])
                        deadline = time.monotonic() + timeout
                    elif text.startswith("{"):
                        records.append(json.loads(text))
                        current = None
                    elif text == "DONE":
                        done = True
        code = proc.wait(timeout=30)
    finally:
        sel.close()
        if proc.poll() is None:
            _kill(proc)
    if code == IMPORT_MISMATCH:
        raise WorkerImportError(err_tail.decode("utf-8", "replace").strip().splitlines()[-1]
                                if err_tail.strip() else "a fuzz worker imported another ortnpu")
    finished = {r["i"] for r in records}
    if code != 0 or len(finished) < stop - start:
        at = current if current is not None else next(
            (i for i in range(start, stop) if i not in finished), start)
        tail = err_tail.decode("utf-8", "replace").strip().splitlines()[-3:]
        records.append({"i": at, "class": "crash",
                        "detail": f"worker died with {_signal_name(code)}: {' | '.join(tail)}"})
        return records, at + 1
    return records, None


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_fuzz(cases: int, seed: int = 0, jobs: int = 2, timeout: float = 60.0,
             batch: int = 50, memory_gib: float = 6.0, start: int = 0,
             env: dict[str, str] | None = None,
             progress: Callable[[Summary], None] | None = None,
             suite: str = "edges") -> Summary:
    """Run cases ``[start, start + cases)`` of ``seed`` on ``jobs`` workers.

    Args:
        cases: number of cases.
        seed: the seed; a case is fully determined by ``(seed, index)``.
        jobs: worker processes at once.
        timeout: seconds per case before it counts as a hang.
        batch: cases per worker process.
        memory_gib: address-space cap of each worker (0 = none).
        start: first case index.
        env: environment of the workers (default: this one, one kernel thread each).
        progress: called with the summary after each batch.
        suite: ``"edges"`` (ops, models, files) or ``"chains"`` (multi-layer graphs through
            every path, the compiled programs included; ortnpu.fuzz.chains).

    Raises:
        WorkerImportError: a worker imported another ortnpu than this process.
        ValueError: an unknown suite.
    """
    from ortnpu.domain import native

    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    env = worker_env(env)
    cwd = tempfile.mkdtemp(prefix="ortnpu-fuzz-")
    try:
        summary = _run_all(cases, seed, jobs, timeout, batch, memory_gib, start, env, cwd,
                           progress, suite)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    why = native.expected()
    if why and not summary.workers.get("c"):
        summary.problems.append(f"the C kernels are expected ({why}) but the workers ran the "
                                f"numpy kernels only: {summary.kernels}")
    return summary


def _run_all(cases: int, seed: int, jobs: int, timeout: float, batch: int, memory_gib: float,
             start: int, env: dict[str, str], cwd: str,
             progress: Callable[[Summary], None] | None, suite: str) -> Summary:
    """The batches of :func:`run_fuzz` on ``jobs`` threads, each driving one worker."""
    summary = Summary(seed, suite)
    errors: list[BaseException] = []
    queue = [(s, min(s + batch, start + cases)) for s in range(start, start + cases, batch)]
    lock = threading.Lock()
    t0 = time.monotonic()

    def work() -> None:
        try:
            batches()
        except BaseException as exc:  # re-raised by the main thread
            with lock:
                errors.append(exc)
                queue.clear()

    def batches() -> None:
        while True:
            with lock:
                if not queue:
                    return
                lo, hi = queue.pop(0)
            ready: dict[str, Any] = {}
            records, rest = run_batch(seed, lo, hi, timeout, memory_gib, env, cwd, ready, suite)
            for rec in records:
                if rec["class"] in ("crash", "hang"):
                    rec.update(_confirm(seed, rec, timeout, memory_gib, env, cwd, suite))
            with lock:
                if ready and not summary.workers:
                    summary.workers.update(ready)
                for rec in records:
                    summary.add(rec)
                if rest is not None and rest < hi:
                    queue.append((rest, hi))
                summary.seconds = time.monotonic() - t0
                if progress is not None:
                    progress(summary)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    summary.seconds = time.monotonic() - t0
    summary.failures.sort(key=lambda r: r["i"])
    return summary


def _confirm(seed: int, rec: dict[str, Any], timeout: float, memory_gib: float,
             env: dict[str, str], cwd: str | None = None, suite: str = "edges"
             ) -> dict[str, Any]:
    """Replay a crashed or hung case alone; note whether it reproduces."""
    records, _ = run_batch(seed, rec["i"], rec["i"] + 1, timeout, memory_gib, env, cwd,
                           suite=suite)
    again = next((r for r in records if r["i"] == rec["i"]), None)
    if again is None:
        return {"detail": rec["detail"] + " (replay: no result)"}
    if again["class"] == rec["class"]:
        return {"detail": rec["detail"] + " (reproduced alone)", "kind": again.get("kind", "?")}
    return {"detail": rec["detail"] + f" (alone: {again['class']}: {again.get('detail', '')})"}
