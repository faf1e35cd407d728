"""Render docs/targets.md (the target-file reference) from the target dataclasses.

``python -m ortnpu.target.docgen > docs/targets.md``; a test checks the file is current.
"""

from __future__ import annotations

import dataclasses

from ortnpu.target.spec import _SECTIONS, _toml_value, load_target, preset_names

_HEADER = """# Target files

Generated from `ortnpu/target/spec.py` by `python -m ortnpu.target.docgen`; do not edit by hand.

A target describes an NPU: its integer arithmetic (what every `com.ortnpu` kernel reproduces),
which ONNX ops it runs and with which limits, and the hardware numbers of the performance
estimate. It is a TOML file; `ortnpu.load_target("tflite-int8")` loads a preset,
`ortnpu.load_target("my_npu.toml")` a file, and every command takes `--target NAME_OR_PATH`.
Every key is optional except `name`; a missing key takes the default below. Unknown keys, wrong
types and values outside the allowed set are errors that name the file, the key and what is
allowed. The NPU graph stores its target's TOML in `metadata_props` (`ortnpu.target_toml`).

```toml
name = "my-npu"
description = "what this NPU computes"

[arithmetic]
activation_bits = 8
rescale = "fixed_point"
rounding = "tflite_double"

[support]
max_kernel = 7

[hardware]
clock_mhz = 800.0
macs_per_cycle = 512
```
"""


def render() -> str:
    """The whole markdown document."""
    parts = [_HEADER]
    for section, cls in _SECTIONS.items():
        parts.append(f"\n## `[{section}]`\n\n{(cls.__doc__ or '').strip()}\n\n")
        parts.append("| key | default | meaning |\n|---|---|---|\n")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            meta = f.metadata
            doc = meta.get("doc", "")
            if meta.get("choices"):
                doc += "; one of " + ", ".join(f"`{_toml_value(c)}`" for c in meta["choices"])
            if meta.get("lo") is not None or meta.get("hi") is not None:
                doc += f"; range [{meta.get('lo', '')}, {meta.get('hi') or ''}]"
            parts.append(f"| `{f.name}` | `{_toml_value(default)}` | {doc} |\n")
    parts.append("\n## Presets\n")
    for name in preset_names():
        t = load_target(name)
        a = t.arithmetic
        parts.append(f"\n### `{name}`\n\n{t.description}\n\n"
                     f"Activations {a.activation_dtype} {a.activation_range}, weights int"
                     f"{a.weight_bits} {a.weight_range} "
                     f"{'per channel' if a.per_channel else 'per tensor'}, bias int{a.bias_bits}, "
                     f"accumulator int{a.accumulator_bits}, rescale `{a.rescale}` rounding "
                     f"`{a.rounding}`. Hardware numbers are "
                     f"{'illustrative' if t.hardware.illustrative else t.hardware.source}.\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
