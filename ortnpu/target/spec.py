"""Target descriptions: the integer arithmetic, op support rules and hardware numbers of an NPU.

A target is a frozen value loaded from TOML. Each section of the file maps to one dataclass
below; the loader validates every key against the dataclass fields (type, allowed values,
range), so a typo or an impossible value is reported with the file, the key and what is allowed.
New keys are added by adding a field with a default: the loader and the docs follow from it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ortnpu.domain.arith import SUB_NEGATE_MODES
from ortnpu.errors import TargetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Rescale modes: how a layer's real multiplier is represented in integers.
RESCALE_MODES = ("fixed_point", "fixed_point16", "single_shift", "double_shift")
#: Rounding rules of the rescale (see docs/op-domain.md for the exact formulas).
ROUNDING_RULES = ("tflite_double", "tflite_single", "tflite_int64", "half_up", "tosa_double")


def _meta(doc: str, choices: tuple[Any, ...] | None = None, lo: float | None = None,
          hi: float | None = None) -> dict[str, Any]:
    return {"doc": doc, "choices": choices, "lo": lo, "hi": hi}


@dataclass(frozen=True)
class Arithmetic:
    """Integer arithmetic of the NPU: what every kernel of the op domain reproduces."""

    activation_bits: int = field(default=8, metadata=_meta(
        "bits of activations", (8, 16)))
    activation_signed: bool = field(default=True, metadata=_meta(
        "activations are signed (int8/int16) rather than unsigned"))
    activation_symmetric: bool = field(default=False, metadata=_meta(
        "activation zero point fixed at 0"))
    activation_narrow_range: bool = field(default=False, metadata=_meta(
        "signed activations use [-(2^(n-1)-1), 2^(n-1)-1] (N2D2)"))
    unsigned_after_relu: bool = field(default=False, metadata=_meta(
        "outputs of layers ending in ReLU use the unsigned range [0, 2^n-1] (N2D2)"))
    weight_bits: int = field(default=8, metadata=_meta("bits of weights", (4, 8)))
    weight_narrow_range: bool = field(default=True, metadata=_meta(
        "weights use [-(2^(n-1)-1), 2^(n-1)-1], i.e. -128 is never used"))
    per_channel: bool = field(default=True, metadata=_meta(
        "weights have one scale per output channel"))
    bias_bits: int = field(default=32, metadata=_meta("bits of the quantized bias", (32, 64)))
    accumulator_bits: int = field(default=32, metadata=_meta(
        "bits of the accumulator before the rescale", (32, 64)))
    rescale: str = field(default="fixed_point", metadata=_meta(
        "how a layer's real multiplier is represented", RESCALE_MODES))
    rounding: str = field(default="tflite_double", metadata=_meta(
        "rounding rule applied by the rescale", ROUNDING_RULES))
    multiplier_bits: int = field(default=32, metadata=_meta(
        "bits of the fixed-point multiplier (sign included)", lo=2, hi=32))
    add_left_shift: int = field(default=20, metadata=_meta(
        "left shift applied to both inputs of an elementwise Add (TFLite: 20 for int8, 15 for "
        "int16; with power-of-two scales the smallest, raised per Add to align both inputs "
        "without losing bits)", lo=0, hi=30))
    power_of_two_scales: bool = field(default=False, metadata=_meta(
        "all scales are powers of two (shift-only hardware)"))
    sub_negate: str = field(default="multiplier", metadata=_meta(
        "where an elementwise Sub negates its subtrahend: 'multiplier' rescales b with its "
        "multiplier negated (TFLite's SUB), 'result' rescales b and subtracts the rounded value "
        "(TOSA: RESCALE then SUB); the two differ where b's rescale rounds a tie",
        SUB_NEGATE_MODES))

    @property
    def activation_dtype(self) -> str:
        """numpy dtype name of activations (signed form)."""
        return f"{'int' if self.activation_signed else 'uint'}{self.activation_bits}"

    @property
    def activation_range(self) -> tuple[int, int]:
        """Smallest and largest activation value."""
        lo, hi = integer_range(self.activation_bits, self.activation_signed)
        return (lo + 1 if self.activation_narrow_range and self.activation_signed else lo), hi

    @property
    def weight_range(self) -> tuple[int, int]:
        """Smallest and largest weight value."""
        lo, hi = integer_range(self.weight_bits, True)
        return (lo + 1 if self.weight_narrow_range else lo), hi


@dataclass(frozen=True)
class SupportRules:
    """Which ONNX ops the NPU runs, and the limits it has on them."""

    op_types: tuple[str, ...] = field(default=(
        "Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool",
        "GlobalAveragePool", "Concat", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid",
        "Reshape", "Flatten", "Transpose", "Pad", "Squeeze", "Unsqueeze", "Identity",
        "BatchNormalization", "Dropout", "Slice", "Split", "Sub", "Max",
        "Min", "LeakyRelu", "Elu", "Gelu",
        "Resize", "Softmax", "ReduceMean", "Pow", "Sqrt", "Div", "Gather"),
        metadata=_meta("ONNX op types the NPU can run"))
    cpu_preferred: tuple[str, ...] = field(default=("Softmax",), metadata=_meta(
        "ops the NPU could run but that are better left to the CPU"))
    max_kernel: int = field(default=16, metadata=_meta(
        "largest kernel height or width of Conv and pools", lo=1))
    max_stride: int = field(default=8, metadata=_meta("largest stride", lo=1))
    max_dilation: int = field(default=8, metadata=_meta("largest dilation", lo=1))
    max_channels: int = field(default=65536, metadata=_meta("largest channel count", lo=1))
    max_rank: int = field(default=4, metadata=_meta("largest tensor rank", lo=1, hi=8))
    depthwise: bool = field(default=True, metadata=_meta("runs depthwise convolutions"))
    grouped: bool = field(default=True, metadata=_meta("runs grouped convolutions"))
    dynamic_shapes: bool = field(default=False, metadata=_meta(
        "accepts tensors whose shape is not known before run time"))
    min_subgraph_nodes: int = field(default=1, metadata=_meta(
        "smallest NPU subgraph worth the transfer to and from the NPU", lo=1))
    fused_activations: tuple[str, ...] = field(default=("Relu", "Clip"), metadata=_meta(
        "activations the NPU applies as an output clamp of the layer before them"))
    dtypes: tuple[str, ...] = field(default=("float32", "float16"), metadata=_meta(
        "element types of float tensors the NPU can take over (they are quantized)"))
    max_spatial_dims: int = field(default=2, metadata=_meta(
        "most spatial axes of Conv and pools (1 = signals, 2 = images, 3 = volumes)", lo=1))
    matmul_two_activations: bool = field(default=False, metadata=_meta(
        "runs MatMul whose two operands are both computed at run time (attention scores)"))


@dataclass(frozen=True)
class Hardware:
    """Numbers of the performance estimate. Illustrative unless ``source`` names a datasheet."""

    # Upper bounds keep the estimate's arithmetic finite (1e308 MHz made cycle times 0 and
    # divided by them); they are far above any real part.
    clock_mhz: float = field(default=1000.0, metadata=_meta("NPU clock in MHz", lo=1e-3,
                                                            hi=1e6))
    macs_per_cycle: int = field(default=512, metadata=_meta("int8 MACs per cycle", lo=1,
                                                            hi=1 << 24))
    macs_per_cycle_16bit: int = field(default=128, metadata=_meta(
        "MACs per cycle with 16-bit activations", lo=1, hi=1 << 24))
    elementwise_per_cycle: int = field(default=64, metadata=_meta(
        "elementwise results per cycle", lo=1, hi=1 << 24))
    sram_kib: int = field(default=1024, metadata=_meta(
        "on-chip SRAM in KiB: a layer whose weights, inputs and outputs do not fit together "
        "moves its activations through external memory (not used with io_in_sram or cascading;"
        " Ethos-U65-256: 384, the arena cache of Vela's Dedicated_Sram_384KB memory mode)",
        lo=0, hi=1 << 32))
    dram_gbps: float = field(default=8.0, metadata=_meta("DRAM bandwidth in GB/s", lo=1e-3,
                                                         hi=1e6))
    cpu_gmacs: float = field(default=10.0, metadata=_meta(
        "host CPU throughput in GMAC/s, for layers left on the CPU", lo=1e-3, hi=1e9))
    subgraph_overhead_us: float = field(default=20.0, metadata=_meta(
        "fixed cost in microseconds of handing one NPU subgraph from the CPU to the NPU", lo=0,
        hi=1e9))
    # The fields below refine the roofline for NPUs like Arm's Ethos-U (docs/evaluate.md). Their
    # defaults switch each refinement off, so a target without them keeps the plain roofline.
    ublock_height: int = field(default=1, metadata=_meta(
        "output micro-block height: output rows are computed in groups of this many (Ethos-U55-128:"
        " 2, Vela's ArchitectureConfig ofm_ublock)", lo=1, hi=64))
    ublock_width: int = field(default=1, metadata=_meta(
        "output micro-block width (Ethos-U55-128: 1, Ethos-U65-256: 2)", lo=1, hi=64))
    ublock_depth: int = field(default=1, metadata=_meta(
        "output micro-block depth: output channels are rounded up to it (Ethos-U: 8)", lo=1,
        hi=1024))
    mac_depth_step: int = field(default=1, metadata=_meta(
        "input channels one pass of the MAC array consumes; the input depth of a convolution is "
        "rounded up to it (Ethos-U: 32 = 8-wide dot products over 4 cycles)", lo=1, hi=4096))
    part_kernel_step: int = field(default=1, metadata=_meta(
        "kernel elements one pass takes in the small-depth mode (Ethos-U 'part-kernel first': 4,"
        " with the depth rounded to part_kernel_depth); the faster of the two modes is used",
        lo=1, hi=64))
    part_kernel_depth: int = field(default=1, metadata=_meta(
        "input channel rounding of the small-depth mode (Ethos-U: 8, the dot-product width)",
        lo=1, hi=4096))
    depthwise_efficiency: float = field(default=1.0, metadata=_meta(
        "fraction of macs_per_cycle a depthwise convolution reaches before kernel rounding "
        "(Ethos-U: 0.125, one input channel per output in an 8-wide dot product)", lo=1e-6,
        hi=1.0))
    depthwise_kernel_step: int = field(default=1, metadata=_meta(
        "depthwise kernel elements are taken in groups of this many (Ethos-U: 4)", lo=1, hi=64))
    pool_window_per_cycle: float = field(default=0.0, metadata=_meta(
        "pool window elements per cycle over all outputs (Ethos-U: macs_per_cycle / 32, i.e. 4 "
        "cycles per window element per micro-block, fitted to Vela's pool cycles); 0 counts "
        "window elements as elementwise results", lo=0.0, hi=1e9))
    pool_min_window: int = field(default=1, metadata=_meta(
        "a pool window costs at least this many elements (Ethos-U: 4)", lo=1, hi=1024))
    weights_per_cycle: float = field(default=0.0, metadata=_meta(
        "weights the weight decoder delivers per cycle, a floor under layers with few outputs "
        "such as fully connected ones (Ethos-U: 8); 0 = no limit", lo=0.0, hi=1e9))
    output_cycles_per_element: float = field(default=0.0, metadata=_meta(
        "cycles to write one output element of a convolution, fully connected or pool layer "
        "with its activation (Vela output_cycles_per_elem; U55-128: 0.5, U65-256: 0.25); 0 = free",
        lo=0.0, hi=1e6))
    maxpool_cycles_per_element: float = field(default=0.0, metadata=_meta(
        "output write cost of a max pool element (U55-128: 0.25, U65-256: 0.125)", lo=0.0,
        hi=1e6))
    elementwise_cycles_per_element: float = field(default=0.0, metadata=_meta(
        "cycles per output element of a two-input elementwise op (Add, Sub, Mul...), replacing "
        "1/elementwise_per_cycle (Vela: U55-128 1.5, U65-256 0.75); 0 = use elementwise_per_cycle",
        lo=0.0, hi=1e6))
    elementwise_depth_round: int = field(default=1, metadata=_meta(
        "channel depth of elementwise ops is rounded up to this (Ethos-U: 16, the NHCWB16 brick)",
        lo=1, hi=1024))
    sram_gbps: float = field(default=0.0, metadata=_meta(
        "on-chip SRAM bandwidth in GB/s that activations in SRAM are read and written at; "
        "0 = SRAM access is free", lo=0.0, hi=1e6))
    sram_burst_efficiency: float = field(default=1.0, metadata=_meta(
        "fraction of sram_gbps reached by the NPU's access pattern", lo=1e-3, hi=1.0))
    dram_burst_bytes: int = field(default=0, metadata=_meta(
        "burst length of external memory in bytes: an activation tensor with C channels (NHWC) "
        "moves in runs of C rounded up to 8 bytes, so its efficiency is min(1, that / burst); "
        "0 = full efficiency (Vela: Dram_burst_length 128)", lo=0, hi=1 << 20))
    dram_write_run_bytes: int = field(default=0, metadata=_meta(
        "NHWC writes to external memory go out in runs of at most this many bytes (Vela: 16 "
        "per core); 0 = no cap", lo=0, hi=1 << 20))
    io_in_sram: bool = field(default=False, metadata=_meta(
        "all activations, graph inputs and outputs too, live in SRAM; external memory holds "
        "only the weights (Vela's Shared_Sram memory mode)"))
    ofm_block_pixels: int = field(default=0, metadata=_meta(
        "output pixels (height x width) of one output block; a convolution reads its weights "
        "again for every block (Vela's block configs within the SHRAM, fitted on its weight "
        "traffic: U55-128 about 128, U65-256 about 160); 0 = weights read once", lo=0,
        hi=1 << 30))
    ofm_block_depth: int = field(default=0, metadata=_meta(
        "output channels of one output block; a convolution or fully connected layer reads its "
        "input again for every block of output channels (Vela's ifm re-fetch); an input in "
        "external memory is also read once per output block of ofm_block_pixels (a square block,"
        " its height and width rounded to the micro-block) with the kernel's halo; "
        "0 = input read once", lo=0, hi=1 << 20))
    part_kernel_block_depth: int = field(default=0, metadata=_meta(
        "output channels of one output block of a convolution in the small-depth mode "
        "(part_kernel_step): its input is read again for every such block (Vela 5.2 picks "
        "16-deep blocks for the 3-channel first layers on Ethos-U); 0 = ofm_block_depth",
        lo=0, hi=1 << 20))
    cascading: bool = field(default=False, metadata=_meta(
        "activations inside an NPU subgraph stay in SRAM whatever their size (the compiler runs "
        "layers in stripes that fit, as Vela's cascading does); only subgraph inputs and "
        "outputs cross external memory"))
    weight_compression: float = field(default=1.0, metadata=_meta(
        "stored size of the weights over their size at weight_bits (compressed weight streams)",
        lo=1e-3, hi=8.0))
    stored_bias_bytes: int = field(default=0, metadata=_meta(
        "bytes stored per output channel for bias and requantization (Ethos-U: 10 = 40-bit bias "
        "+ 32-bit multiplier + shift); 0 = the bias at bias_bits", lo=0, hi=64))
    illustrative: bool = field(default=True, metadata=_meta(
        "true when the numbers are not taken from a public datasheet"))
    source: str = field(default="", metadata=_meta("datasheet the numbers come from"))


@dataclass(frozen=True)
class Target:
    """A complete NPU target: name, arithmetic, support rules and hardware numbers."""

    name: str
    description: str = ""
    arithmetic: Arithmetic = field(default_factory=Arithmetic)
    support: SupportRules = field(default_factory=SupportRules)
    hardware: Hardware = field(default_factory=Hardware)
    origin: str = "<built-in>"

    def check(self, node: Any, shapes: dict[str, Any] | None = None) -> Any:
        """Return the :class:`~ortnpu.target.support.Verdict` of ``node`` on this target."""
        from ortnpu.target import support

        return support.check_node(self, node, shapes or {})

    def to_toml(self) -> str:
        """Serialise back to the TOML format :func:`load_target` reads."""
        lines = [f'name = "{self.name}"', f"description = {_toml_value(self.description)}"]
        for section in ("arithmetic", "support", "hardware"):
            lines.append(f"\n[{section}]")
            for f in dataclasses.fields(getattr(self, section)):
                lines.append(f"{f.name} = {_toml_value(getattr(getattr(self, section), f.name))}")
        return "\n".join(lines) + "\n"


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value of a ``bits``-wide integer."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


_SECTIONS: dict[str, type] = {"arithmetic": Arithmetic, "support": SupportRules,
                              "hardware": Hardware}


def _type_name(tp: Any) -> str:
    return {"int": "an integer", "bool": "true or false", "float": "a number",
            "str": "a string"}.get(str(tp), "a list of strings")


def _convert(value: Any, f: dataclasses.Field, where: str) -> Any:
    """Check one TOML value against its dataclass field and return it in the field's type."""
    tp = str(f.type)
    meta = f.metadata
    ok: bool
    if tp == "bool":
        ok = isinstance(value, bool)
    elif tp == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise TargetError(f"{where}: {value!r} is not a finite number")
    elif tp == "str":
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        value = tuple(value) if ok else value
    if not ok:
        raise TargetError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(_toml_value(c) for c in choices)
        raise TargetError(f"{where}: {value!r} is not allowed; use one of {allowed}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        raise TargetError(f"{where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise TargetError(f"{where}: {value!r} is above the maximum {hi}")
    return value


def _build_section(cls: type, table: Any, origin: str, section: str) -> Any:
    if not isinstance(table, dict):
        raise TargetError(f"{origin}: [{section}] must be a table of keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        where = f"{origin}: [{section}] {key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise TargetError(f"{where}: unknown key; known keys are {known}")
        kwargs[key] = _convert(value, fields[key], where)
    return cls(**kwargs)


def _check_consistency(t: Target) -> None:
    a, origin = t.arithmetic, t.origin
    if a.activation_bits == 16 and a.accumulator_bits != 64:
        raise TargetError(f"{origin}: [arithmetic] accumulator_bits: 16-bit activations need a "
                          "64-bit accumulator; set accumulator_bits = 64")
    if a.bias_bits > a.accumulator_bits:
        raise TargetError(f"{origin}: [arithmetic] bias_bits {a.bias_bits} exceeds "
                          f"accumulator_bits {a.accumulator_bits}")
    if (a.rounding == "tflite_int64") != (a.accumulator_bits == 64 and a.rescale == "fixed_point"
                                          and a.rounding.startswith("tflite")):
        raise TargetError(f"{origin}: [arithmetic] rounding: 'tflite_int64' goes with a 64-bit "
                          "accumulator and the fixed_point rescale (TFLite 16x8); use "
                          "'tflite_double' or 'tflite_single' with 32-bit accumulators")
    if a.rescale in ("single_shift", "double_shift") and a.rounding != "half_up":
        raise TargetError(f"{origin}: [arithmetic] rounding: shift rescale modes round with "
                          f"'half_up'; got {a.rounding!r}")
    if a.rescale == "fixed_point16" and a.multiplier_bits > 16:
        raise TargetError(f"{origin}: [arithmetic] multiplier_bits: fixed_point16 needs at most "
                          f"16, got {a.multiplier_bits}")


def parse_target(text: str, origin: str = "<string>") -> Target:
    """Parse a target from TOML text; ``origin`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{origin}: not valid TOML: {exc}") from None
    allowed_top = {"name", "description", *_SECTIONS}
    for key in doc:
        if key not in allowed_top:
            raise TargetError(f"{origin}: unknown key {key!r}; known top-level keys are "
                              f"{', '.join(sorted(allowed_top))}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise TargetError(f"{origin}: key 'name' is required and must be a non-empty string")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise TargetError(f"{origin}: key 'description' must be a string")
    sections = {s: _build_section(cls, doc.get(s, {}), origin, s) for s, cls in _SECTIONS.items()}
    target = Target(name=name, description=description, origin=origin, **sections)
    _check_consistency(target)
    return target


def preset_names() -> list[str]:
    """Names of the targets that ship with ortnpu."""
    folder = resources.files("ortnpu.target") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


DEFAULT_TARGET = "tflite-int8"


def load_target(name_or_path: str | Path | Target | None = None) -> Target:
    """Load a preset by name, a TOML file by path, or pass a :class:`Target` through.

    Args:
        name_or_path: a preset name (see :func:`preset_names`), a path to a ``.toml`` file, an
            already-loaded target, or ``None`` for the default ``tflite-int8``.

    Raises:
        TargetError: unknown preset, unreadable file, or malformed contents.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    if name_or_path is None:
        name_or_path = DEFAULT_TARGET
    text_name = str(name_or_path)
    if text_name in preset_names():
        ref = resources.files("ortnpu.target") / "presets" / f"{text_name}.toml"
        return parse_target(ref.read_text(encoding="utf-8"), origin=f"preset {text_name}")
    path = Path(text_name)
    if path.suffix != ".toml" and not path.exists():
        raise TargetError(f"unknown target {text_name!r}: not a preset "
                          f"({', '.join(preset_names())}) and no such .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot read target file: {exc}") from None
    return parse_target(text, origin=str(path))
