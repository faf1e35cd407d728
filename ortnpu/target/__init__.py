"""NPU targets: arithmetic, support rules and hardware numbers, loaded from TOML."""

from ortnpu.target.spec import (
    DEFAULT_TARGET,
    Arithmetic,
    Hardware,
    SupportRules,
    Target,
    integer_range,
    load_target,
    parse_target,
    preset_names,
)

__all__ = [
    "DEFAULT_TARGET",
    "Arithmetic",
    "Hardware",
    "SupportRules",
    "Target",
    "integer_range",
    "load_target",
    "parse_target",
    "preset_names",
]
