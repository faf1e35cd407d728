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


_FAMILIES = """
## Two arithmetic families: TFLite and TOSA

Written by hand in `ortnpu/target/docgen.py`; the numbers come from
`python scripts/tosa_vs_tflite.py` (details in [tosa.md](tosa.md)).

| | TFLite (`tflite-int8`, `tflite-a16w8`, `ethos-u*`) | TOSA (`tosa-int8`, `tosa-int16`) |
|---|---|---|
| rescale, 8-bit | `tflite_double`: SaturatingRoundingDoublingHighMul (round at bit 31), then RoundingDivideByPOT (half away from zero) | `tosa_double`: one shift, `(x·m + 2^(r-1) ± 2^30) >> r`, the ±2^30 only when r > 31 (`DOUBLE_ROUND`) |
| rescale, 16-bit | `tflite_int64`: multiplier reduced to 15 bits, one half-up shift | `half_up` with a 16-bit multiplier (`apply_scale_16`) |
| ties of a negative value | away from zero | `DOUBLE_ROUND`: away from zero (as TFLite); `SINGLE_ROUND`: toward +∞ |
| Sub: where b is negated (`sub_negate`) | `"multiplier"`: b rescaled with its multiplier negated (`PrepareGeneralSubOp`, `op_sign = -1`) | `"result"`: b rescaled, the rounded value subtracted (RESCALE, then SUB) |
| elementwise left shift (`add_left_shift`) | 20 (int8), 15 (int16) | as the legalization writes it (presets: 20, 15); `import_tosa` reads each RESCALE |
| average pool divisor | MEAN: renormalized multiplier; AVERAGE_POOL_2D: rounded division | `reciprocal_scale(count)`: `((2^30+1) << k) // count`, equal to the rounded division |
| outside reference | LiteRT's reference kernels ([oracle.md](oracle.md)) | the TOSA reference model ([tosa.md](tosa.md)) |

Measured: `tosa_double` and `tflite_double` differ on 0 of 2,000,000 random int32 accumulators
and multipliers (right shifts 31..62) and on 0 of 1,000,000 ties; TOSA's `SINGLE_ROUND`
(`half_up`) differs from TFLite on 31,252 of the 2,000,000 and on 499,203 of the 1,000,000 ties
(−6384 · 2^-5 = −199.5: TFLite and `DOUBLE_ROUND` give −200, `SINGLE_ROUND` −199). The bundled
CNN quantized for `tflite-int8` and for `tosa-int8` has identical integers in every convolution,
ReLU and pool; they first differ at the global average pool (TFLite's MEAN multiplier vs an
average pool's rounded division: 2,171 of 17,280 values; both with minmax ranges), with 0 of 540
class decisions changed; with `SINGLE_ROUND` they differ from the first convolution on (474 of
552,960 values).

Sub rounds differently where b's rescale meets a tie: negating the multiplier rounds `-b·m`,
TOSA rounds `b·m` and negates the result; a half-up rounding (TOSA's, and `tosa_double` for
shifts up to 31) sends `+t.5` up and `-t.5` up too, so `round(-v) ≠ -round(v)` on every tie. On a SUB `y = a - b/2` (int8, no left shift, tosa_double) the two orders differ on 28,608
of the 65,536 pairs (a = 0, b = −127: −(−63.5) is 64 with the negated multiplier, 63 in TOSA).
With a legalization's left shift of 15 and 32-bit multipliers (200 random int16 SUBs, every
b) b's rescale ties in 47 of the 200, but the output rescale by ~2^-15 hides the ±1: 0 of
13,107,200 outputs differ. `tosa-int8`/`tosa-int16` set `sub_negate = "result"`: a TOSA SUB then
runs in TOSA's order for every input, where TFLite's order is exact only when no tie reaches
the output (the reference-model test with b/2 differs on 8 of 8 values in TFLite's order).
"""  # noqa: E501 (markdown table rows)


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
    parts.append(_FAMILIES)
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
