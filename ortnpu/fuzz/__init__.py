"""Fuzzing of ortnpu's edges: mutated NPU graphs, op calls, inputs, targets, calibration sets.

Each case is fully determined by ``(seed, index)`` and runs in a worker subprocess; the runner
counts crashes (signals), hangs (timeouts), non-ortnpu exceptions and mismatches (executors that
disagree, declared types not honoured). The goal is zero of each. Entry points:
``scripts/fuzz.py`` (long runs), ``tests/test_fuzz.py`` (a fixed-seed subset in CI), and
``python -m ortnpu.fuzz.worker`` to replay one case. See docs/robustness.md.
"""

from ortnpu.fuzz.runner import BAD, Summary, run_fuzz

__all__ = ["BAD", "Summary", "run_fuzz"]
