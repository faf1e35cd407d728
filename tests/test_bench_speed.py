"""The speed benchmark times each session alone: not while the threads of the session before it
still spin (onnxruntime's pool spins about 70 ms after a run; timed right after it, ortnpu's
2-thread session under a busy core ran 1.5x slower than its 1-thread one, issue 15)."""

from __future__ import annotations

import threading
import time

import pytest

from ortnpu.bench.speed import interleaved_medians, wait_for_idle_threads


def _spin_in_background(seconds: float) -> threading.Thread:
    """A thread that burns CPU for ``seconds``, like a thread pool spinning after its run."""

    def spin() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def test_waits_while_another_thread_spins_and_not_longer() -> None:
    spinner = _spin_in_background(0.3)
    waited = wait_for_idle_threads(limit_s=2.0)
    assert not spinner.is_alive() or waited >= 2.0
    assert waited >= 0.2
    # idle: back at once (bounded generously: a pool of an earlier test may still spin briefly)
    assert wait_for_idle_threads(limit_s=2.0) < 1.0


def test_wait_is_bounded() -> None:
    spinner = _spin_in_background(1.0)
    start = time.perf_counter()
    wait_for_idle_threads(limit_s=0.1)
    assert time.perf_counter() - start < 0.5
    spinner.join()


def test_no_session_is_timed_while_the_one_before_still_spins() -> None:
    spinners: list[threading.Thread] = []
    overlapped: list[bool] = []

    def spinning_session() -> None:  # returns, leaving a thread that spins for 50 ms
        spinners.append(_spin_in_background(0.05))

    def next_session() -> None:
        overlapped.append(any(t.is_alive() for t in spinners))

    interleaved_medians([spinning_session, next_session], repeat=3, rounds=3, settle_ms=0.0)
    assert overlapped and not any(overlapped)


def test_peak_is_measured_not_read_from_a_table() -> None:
    """The probes count what they ran (12 chains of the best instruction per step; 8 adds
    per step) and the peak is their measured rate: plausible for any CPU of today."""
    from ortnpu.bench.speed import cpu_peak_gmacs
    from ortnpu.domain import native

    if not native.AVAILABLE:
        pytest.skip("the probes are C")
    lib = native._native.lib
    per_step = 12 * (64 if lib.ortnpu_cpu_has_vnni() else 16 if lib.ortnpu_cpu_has_avx2() else 0)
    assert lib.ortnpu_mac_probe(1000) == 1000 * per_step
    assert lib.ortnpu_clock_probe(8000) in (0, 8000)   # 0: no x86-64 version of the probe
    peak, how = cpu_peak_gmacs()
    if per_step:
        assert 1 < peak < 10_000 and how.startswith("measured"), (peak, how)
