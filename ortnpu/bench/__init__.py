"""Benchmarks on real models (not run in CI): ``python -m ortnpu.bench speed|accuracy``."""
