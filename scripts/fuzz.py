"""Long fuzz run of ortnpu's edges; prints the counts and the failing cases.

    python scripts/fuzz.py --cases 10000 --seed 0 --jobs 2
    python scripts/fuzz.py --chains --cases 10000 --seed 0 --jobs 2   # compiled programs

Exit code 0 when there were no crashes, hangs, non-ortnpu exceptions, mismatches or (chains)
cases that missed the compiled path, else 1 (also when the C kernels are expected but the
workers ran without them); 2 when a worker imported another ortnpu than this script. Replay a
case with ``python -m ortnpu.fuzz.worker --seed S --start I --stop I+1 [--suite chains] --verbose``.

It fuzzes the ortnpu that ``import ortnpu`` finds (the installed package with its C kernels;
the repository checkout is not put on the path), and the report's ``kernels:`` line says which
kernels the workers ran. To fuzz another copy, put it first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ortnpu.fuzz import Summary, run_fuzz
from ortnpu.fuzz.runner import WorkerImportError


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the summary (and write it as JSON on request)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--jobs", type=int, default=2, help="worker processes at once")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    p.add_argument("--batch", type=int, default=100, help="cases per worker process")
    p.add_argument("--memory-gib", type=float, default=6.0, help="address-space cap per worker")
    p.add_argument("--json", metavar="FILE", help="write counts and failures as JSON")
    p.add_argument("--chains", action="store_true",
                   help="multi-layer NPU graphs through every execution path (compiled C "
                        "programs, fused Python, per node, plain onnxruntime, integer export)")
    args = p.parse_args(argv)
    last = [0.0]

    def progress(s: Summary) -> None:
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            counts = ", ".join(f"{k} {v}" for k, v in sorted(s.classes.items()))
            print(f"  {s.cases}/{args.cases} cases, {s.seconds:.0f} s: {counts}", flush=True)

    try:
        summary = run_fuzz(args.cases, seed=args.seed, jobs=args.jobs, timeout=args.timeout,
                           batch=args.batch, memory_gib=args.memory_gib, start=args.start,
                           progress=progress, suite="chains" if args.chains else "edges")
    except WorkerImportError as exc:
        print(f"fuzz: {exc}", file=sys.stderr)
        return 2
    print(summary.to_text(limit=50))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seed": args.seed, "start": args.start, "cases": summary.cases,
            "seconds": round(summary.seconds, 1), "classes": dict(summary.classes),
            "kinds": dict(summary.kinds), "paths": dict(summary.paths),
            "suite": summary.suite, "kernels": summary.kernels,
            "workers": summary.workers, "problems": summary.problems,
            "failures": summary.failures}, indent=1))
    if args.chains and summary.cases >= 20 and not summary.paths["compiled-program"]:
        print("FAIL: no chain case ran through a compiled C program (are the C kernels built "
              "and in use? `ortnpu info`)")
        return 1
    return 1 if summary.bad else 0


if __name__ == "__main__":
    sys.exit(main())
