"""Benchmarks on real models: ``python -m ortnpu.bench speed|accuracy|zoo``.

The zoo's checks also run as tests/test_zoo.py (a small subset in CI).
"""
