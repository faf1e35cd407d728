"""Render docs/op-domain.md from the op table, so the reference never drifts from the code.

``python -m ortnpu.domain.docgen > docs/op-domain.md``; a test checks the file is current.
"""

from __future__ import annotations

from ortnpu.domain import DOMAIN, DOMAIN_VERSION, OPS
from ortnpu.domain.arith import ROUNDING_RULES
from ortnpu.domain.spec import COMMON_ATTRS, MAX_VARIADIC

_HEADER = f"""# The `{DOMAIN}` op domain (version {DOMAIN_VERSION})

Generated from the op table by `python -m ortnpu.domain.docgen`; do not edit by hand.

Every op is integer in, integer out, with its rescale inside. Activations are int8, uint8 or
int16. onnxruntime-extensions infers an output type only from a single dynamically typed input,
so each op is registered once per **output** type with the type as a suffix of the op type:
`Conv_i8`, `Conv_u8`, `Conv_i16` (and, for Concat, once per input count 2..{MAX_VARIADIC}:
`Concat3_i8`). Activation inputs accept any of the three types. Per-channel parameters
(multipliers, shifts, biases, tables) are tensor inputs; scalars are attributes, and every
attribute is always present on the node (the quantizer fills the defaults).

## Rescale rules (attribute `rounding`)

A rescale computes `x · multiplier · 2^shift`, rounded by the rule; `shift` is signed, positive
shifts left (TFLite's convention). Exact statements are in `ortnpu/domain/arith.py`:

| rule | formula | where from |
|---|---|---|
| `tflite_double` | `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(shift,0), M), max(-shift,0))`; x is saturated to int32 first (64-bit accumulators), `x << left` wraps to int32 | TFLite's default `MultiplyByQuantizedMultiplier` |
| `tflite_single` | `(x·M + 2^(30-shift)) >> (31 - shift)`, shift ≤ 30, x saturated to int32 first, result saturated to int32 | TFLite built with `TFLITE_SINGLE_ROUNDING` |
| `tflite_int64` | `M' = (M + 2^15) >> 16` (0x7FFF when M ≥ 0x7FFF0000); `(x·M' + 2^(14-shift)) >> (15 - shift)`, x saturated to ±2^47, result to int32 | TFLite 16x8 kernels (int64 accumulator) |
| `half_up` | `(x·M + 2^(r-1)) >> r` for a right shift r = -shift > 0; exact left shift otherwise; exact for x up to ±2^62 (no wrap), saturated to int32 | N2D2 single-shift (M = 1), double-shift (M = 2^a + 1), fixed-point16/32; TOSA RESCALE `SINGLE_ROUND` and the 16-bit multiplier (`scale32 = false`) |
| `tosa_double` | as `half_up`, but x is saturated to int32 first and for a right shift r > 31 the offset is `2^(r-1) + 2^30` (x ≥ 0) or `2^(r-1) - 2^30` (x < 0) | TOSA `apply_scale_32` with `DOUBLE_ROUND` (RESCALE, `tosa-int8`) |

Rules allowed: {", ".join(f"`{r}`" for r in ROUNDING_RULES)}. Where the reference has undefined
behaviour (int32 overflow) ortnpu wraps like hardware adders; where it asserts a range it
saturates. Accumulators with `acc_bits = 32` wrap modulo 2^32 (sum plus bias).

Each op's "TFLite:" line names the TFLite kernel it reproduces on the `tflite-*` targets and
the detail that decides its bits; tests/oracle checks them against LiteRT's reference kernels
(docs/oracle.md).

Attributes common to every op: {", ".join(f"`{a.name}` ({a.doc})" for a in COMMON_ATTRS)}.
"""


def render() -> str:
    """The whole markdown document."""
    parts = [_HEADER]
    for op in OPS:
        parts.append(f"\n## {op.name}\n\n{(op.__doc__ or '').strip()}\n\n{op.doc}\n")
        if op.tflite:
            parts.append(f"\nTFLite: {op.tflite}\n")
        if op.same_type:
            parts.append("\nThe output type equals the input type.\n")
        parts.append("\n| input | type | meaning |\n|---|---|---|\n")
        for i in op.inputs:
            kind = "int8/uint8/int16" if i.kind == "act" else i.kind
            parts.append(f"| `{i.name}` | {kind} | {i.doc} |\n")
        if op.attrs:
            parts.append("\n| attribute | type | default | meaning |\n|---|---|---|---|\n")
            for a in op.attrs:
                extra = ""
                if a.choices:
                    extra = " (one of " + ", ".join(f"`{c}`" for c in a.choices) + ")"
                elif a.lo is not None:
                    extra = f" (in [{a.lo}, {a.hi}])"
                parts.append(f"| `{a.name}` | {a.kind.__name__} | `{a.default}` | "
                             f"{a.doc}{extra} |\n")
        names = [t for t, _, _ in op.op_types()]
        shown = ", ".join(f"`{n}`" for n in names[:6]) + (" …" if len(names) > 6 else "")
        parts.append(f"\nRegistered as {shown}.\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
