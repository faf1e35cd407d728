"""Suites of cases: one per target preset (its own arithmetic) and one per rounding rule.

A target suite covers every op of the domain with the target's types, rounding, accumulator,
per-channel choice and Add left shift. A ``rule-<rounding>`` suite covers one rounding rule of
``arith.py`` over the whole range the domain allows (int8, uint8 and int16, 32- and 64-bit
accumulators, every shift and edge multiplier), including rules no preset uses
(``tflite_single``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ortnpu.conformance import cases_chain as chain
from ortnpu.conformance import cases_elementwise as ew
from ortnpu.conformance import cases_linear as lin
from ortnpu.conformance import cases_other as other
from ortnpu.conformance import cases_softmax as softmax
from ortnpu.conformance.case import Case
from ortnpu.conformance.profile import Profile, profile_of, rule_profile
from ortnpu.domain import OPS_BY_NAME
from ortnpu.domain.arith import ROUNDING_RULES
from ortnpu.errors import UnsupportedError
from ortnpu.target import Target, load_target, preset_names

Builder = Callable[[Profile], list[Case] | list[chain.ChainCase]]

#: Builders of a target suite, in the order of the domain's op table.
TARGET_BUILDERS: tuple[Builder, ...] = (
    lin.conv_cases, lin.fc_cases, lin.matmul_cases, ew.add_cases, ew.sub_cases, ew.mul_cases,
    ew.min_max_cases, ew.squared_difference_cases, ew.requantize_cases, ew.lut_cases,
    other.pool_cases, other.layout_cases,
    other.resize_cases, softmax.softmax_cases, chain.chain_cases,
)

#: (activation type, accumulator bits) combinations of a rule suite.
RULE_VARIANTS: tuple[tuple[str, int], ...] = (
    ("int8", 32), ("uint8", 32), ("int16", 64), ("int8", 64), ("int16", 32),
)


def _rule_builders(p: Profile) -> list[Case]:
    cases = [lin.fc_sweep(p, "sweep", True, p.acc_bits), lin.conv_ties(p),
             lin.conv_wide(p)]
    cases += [c for c in lin.matmul_cases(p) if c.name in ("2d", "zp_extremes")]
    cases += [c for c in ew.add_cases(p) if c.name in ("grid", "zp_extremes")]
    cases += [c for c in ew.sub_cases(p) if c.name in ("grid", "zp_extremes")]
    cases += [c for c in ew.mul_cases(p) if c.name in ("grid", "saturate")]
    cases += [c for c in ew.requantize_cases(p)
              if c.name == "sweep" or c.name.startswith("to_")]
    return cases


def suite_names() -> list[str]:
    """Every built-in suite: the target presets, then one per rounding rule."""
    return preset_names() + [f"rule-{r}" for r in ROUNDING_RULES]


def target_cases(target: Target | str) -> list[Case | chain.ChainCase]:
    """The cases of a target (a preset name, a TOML path or a :class:`Target`)."""
    p = profile_of(load_target(target))
    return [c for build in TARGET_BUILDERS for c in build(p)]


def rule_cases(rounding: str) -> list[Case]:
    """The cases of one rounding rule over every type and accumulator width."""
    out = []
    for act, acc in RULE_VARIANTS:
        p = rule_profile(rounding, act, acc)
        tag = f"{np.dtype(act).name}_acc{acc}"
        p = dataclasses.replace(p, suite=f"{p.suite}/{tag}")
        out += [dataclasses.replace(c, suite=f"rule-{rounding}", name=f"{c.name}_{tag}")
                for c in _rule_builders(p)]
    return out


def build_suite(name: str | Target) -> list[Case | chain.ChainCase]:
    """The cases of a suite by name (``rule-<rounding>``, a preset, a target file)."""
    if isinstance(name, str) and name.startswith("rule-"):
        rounding = name[5:]
        if rounding not in ROUNDING_RULES:
            raise UnsupportedError(f"unknown suite {name!r}; rule suites are "
                                   f"{', '.join('rule-' + r for r in ROUNDING_RULES)}")
        cases: list[Case | chain.ChainCase] = list(rule_cases(rounding))
    else:
        cases = target_cases(name)
    seen: set[str] = set()
    for c in cases:
        if c.dirname in seen:
            raise AssertionError(f"duplicate case {c.dirname} in suite {c.suite}")
        seen.add(c.dirname)
    return cases


def select(cases: Sequence[Case | chain.ChainCase], ops: Sequence[str] | None
           ) -> list[Case | chain.ChainCase]:
    """Keep the cases of the named ops (case-insensitive; ``chain``: the multi-op chains);
    unknown names are an error."""
    if not ops:
        return list(cases)
    known = {o.lower(): o for o in OPS_BY_NAME} | {"chain": "chain"}
    wanted = set()
    for op in ops:
        if op.lower() not in known:
            raise UnsupportedError(f"unknown op {op!r}; the domain's ops are "
                                   f"{', '.join(OPS_BY_NAME)} (and 'chain')")
        wanted.add(known[op.lower()])
    return [c for c in cases if c.op in wanted]


def generate(out_dir: str | Path, suites: Sequence[str | Target] | None = None,
             ops: Sequence[str] | None = None, nested: bool | None = None) -> list[Path]:
    """Write conformance cases in the ONNX backend-test layout.

    Args:
        out_dir: destination folder (created).
        suites: suite names or targets; default every suite of :func:`suite_names`.
        ops: restrict to these ops (e.g. ``["Conv"]``).
        nested: write each suite in ``out_dir/<suite>/``; default when there are several.

    Returns:
        The case directories written.
    """
    chosen = list(suites) if suites else suite_names()
    nested = len(chosen) > 1 if nested is None else nested
    written = []
    for suite in chosen:
        cases = select(build_suite(suite), ops)
        name = suite.name if isinstance(suite, Target) else str(suite)
        if name.endswith(".toml"):
            name = Path(name).stem
        root = Path(out_dir) / name if nested else Path(out_dir)
        written += [c.write(root) for c in cases]
    return written
