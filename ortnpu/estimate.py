"""Performance estimate per layer from the target's hardware numbers.

The model (documented in docs/evaluate.md) is a roofline per layer:

* **compute cycles** = MACs / MACs-per-cycle (the 16-bit rate when activations are 16-bit)
  + elementwise results / elementwise-per-cycle;
* **output cycles** = output elements x the write cost of one element (0 unless set);
* **SRAM cycles** = activation bytes read and written in SRAM / SRAM bandwidth (0 unless set);
* **memory cycles** = external memory (DRAM or flash) bytes / (DRAM bandwidth / clock);
* **cycles** = the largest of the four; it names the layer's **bound**.

Targets modelled on Arm's Ethos-U refine the compute term (see :func:`_compute_cycles`): the
input depth is rounded to the MAC array's pass, depthwise convolutions reach only a fraction of
the MAC rate, pools cost per window element, outputs are rounded up to the micro-block and
elementwise ops cost a fraction of a cycle per element with the depth rounded up.

A layer's weights always come from DRAM (once, or once per output block). Its activations stay
in SRAM when weights, inputs and outputs fit together in ``sram_kib`` (or always with
``io_in_sram``); otherwise they go through DRAM too. Tensors entering or leaving an NPU subgraph
cross DRAM unless ``io_in_sram``; a convolution reads such an input once per output block, with
the kernel's halo (:func:`_external_input_reads`). Fused activations and reshape-like views
cost nothing. CPU layers are timed separately from ``cpu_gmacs`` and flagged. The latency adds
the NPU time, the CPU time and ``subgraph_overhead_us`` per NPU subgraph, all run one after the
other (no overlap).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from ortnpu.errors import ModelError
from ortnpu.partition import NPU, PartitionPlan, partition, prepare
from ortnpu.passes.graph import GraphIndex, attr, shapes_and_types
from ortnpu.target.spec import Hardware, Target, load_target

#: Ops that only reinterpret the shape of a tensor: no compute, no data movement.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                      "Constant"})
#: Two-input elementwise ops, costed per output element by ``elementwise_cycles_per_element``.
BINARY_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min"})
#: Pools, costed per window element by ``pool_window_per_cycle``.
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
#: Ops whose outputs are written at ``output_cycles_per_element``.
OUTPUT_RATE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool",
                             "GlobalAveragePool"})
#: Ops that move data without arithmetic.
MOVE_OPS = frozenset({"Transpose", "Concat", "Pad", "Slice", "Split", "Gather", "Resize",
                      "Expand", "Tile", "DepthToSpace", "SpaceToDepth"})


@dataclass
class LayerEstimate:
    """The estimate of one node.

    Attributes:
        name: node name.
        op: op type.
        placement: ``"NPU"`` or ``"CPU"``.
        subgraph: index of its NPU subgraph, or None.
        macs: multiply-accumulates.
        elementwise_ops: other arithmetic results (pool window elements, activations...).
        weight_bytes: bytes of constant inputs at the target's weight and bias widths.
        input_bytes: bytes of run-time inputs at the activation width.
        output_bytes: bytes of outputs at the activation width.
        sram_fit: weights, inputs and outputs fit in SRAM together.
        dram_bytes: bytes moved to or from DRAM (external memory) for this layer.
        compute_cycles: cycles the arithmetic needs.
        output_cycles: cycles writing the output elements needs.
        sram_cycles: cycles the SRAM traffic of the activations needs.
        memory_cycles: cycles the DRAM traffic needs (with burst efficiency).
        cycles: the largest of the four on the NPU; 0 for CPU layers.
        bound: ``compute``, ``output``, ``sram``, ``memory`` (external memory), ``fused``
            (activation applied by the layer before), ``view`` (shape change only), or
            ``cpu``.
        time_us: time of the layer in microseconds.
        exact: False when unknown dims were taken as 1.
    """

    name: str
    op: str
    placement: str
    subgraph: int | None
    macs: int = 0
    elementwise_ops: int = 0
    weight_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    sram_fit: bool = True
    dram_bytes: int = 0
    compute_cycles: int = 0
    output_cycles: int = 0
    sram_cycles: int = 0
    memory_cycles: int = 0
    cycles: int = 0
    bound: str = "compute"
    time_us: float = 0.0
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Estimate:
    """Per-layer estimates and totals of a whole model on one target.

    Attributes:
        target: target name.
        layers: per-node estimates in topological order.
        totals: summed numbers (see :meth:`compute_totals` and docs/evaluate.md).
        illustrative: the target's hardware numbers are not from a datasheet.
        notes: assumptions the user should know about.
    """

    target: str
    layers: list[LayerEstimate]
    totals: dict[str, Any] = field(default_factory=dict)
    illustrative: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "illustrative": self.illustrative,
                "notes": list(self.notes), "totals": dict(self.totals),
                "layers": [layer.to_dict() for layer in self.layers]}


def _elements(shape: list | None) -> tuple[int, bool]:
    if shape is None:
        return 1, False
    exact = all(isinstance(d, int) and d >= 0 for d in shape)
    return int(math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape)), exact


def _work(node: onnx.NodeProto, shapes: dict, index: GraphIndex) -> tuple[int, int]:
    """(MACs, elementwise results) of one node."""
    op = node.op_type
    out_n, _ = _elements(shapes.get(node.output[0])) if node.output else (0, True)
    if op in VIEW_OPS or op in MOVE_OPS:
        return 0, 0
    w_shape = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if op == "Conv" and w_shape:
        return out_n * _elements(w_shape[1:])[0], 0
    if op == "ConvTranspose" and w_shape:
        in_n, _ = _elements(shapes.get(node.input[0]))
        return in_n * _elements(w_shape[1:])[0], 0
    if op == "Gemm" and w_shape and len(w_shape) == 2:
        k = w_shape[1] if attr(node, "transB", 0) else w_shape[0]
        return out_n * (k if isinstance(k, int) else 1), 0
    if op == "MatMul":
        a = shapes.get(node.input[0])
        k = a[-1] if a else 1
        return out_n * (k if isinstance(k, int) and k > 0 else 1), 0
    if op in ("MaxPool", "AveragePool", "LpPool"):
        return 0, out_n * int(math.prod(attr(node, "kernel_shape") or [1]))
    if op.startswith("Global") or op.startswith("Reduce"):
        return 0, _elements(shapes.get(node.input[0]))[0]
    if op in ("Softmax", "LayerNormalization", "InstanceNormalization"):
        return 0, 4 * out_n
    return 0, out_n


def _up(x: int, step: int) -> int:
    return -(-x // step) * step


def _dims(shape: list | None) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in (shape or [1])]


def _rounded_outputs(shape: list | None, hw: Hardware, depth: int, spatial: bool) -> int:
    """Output elements with the channels (axis 1) rounded up to ``depth`` and, when
    ``spatial``, height and width rounded up to the micro-block: the work the NPU really does."""
    dims = _dims(shape)
    if len(dims) < 2:
        return math.prod(dims)
    dims[1] = _up(dims[1], depth)
    if spatial and len(dims) >= 4:
        dims[-2], dims[-1] = _up(dims[-2], hw.ublock_height), _up(dims[-1], hw.ublock_width)
    return math.prod(dims)


def _pass_work(k: int, cin: int, hw: Hardware) -> tuple[int, int]:
    """MACs one output takes in the MAC array's two modes: depth first (the input depth rounded
    to ``mac_depth_step``) and part-kernel first (the kernel rounded to ``part_kernel_step``,
    the depth to ``part_kernel_depth``); the array runs the cheaper one."""
    return (k * _up(cin, hw.mac_depth_step),
            _up(k, hw.part_kernel_step) * _up(cin, hw.part_kernel_depth))


def _is_depthwise(node: onnx.NodeProto, w: list[int]) -> bool:
    return node.op_type == "Conv" and attr(node, "group", 1) > 1 and w[1] == 1


def _compute_cycles(node: onnx.NodeProto, shapes: dict, layer: LayerEstimate, hw: Hardware,
                    macs_per_cycle: int) -> float:
    """Cycles of the arithmetic: MACs with the input depth and kernel rounded to what one pass
    of the MAC array takes, pools per window element, other work per elementwise result."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    w = _dims(shapes.get(node.input[1])) if len(node.input) > 1 else [1]
    weights = math.prod(w)
    floor = weights / hw.weights_per_cycle if hw.weights_per_cycle and layer.macs else 0.0
    if op == "Conv" and len(w) >= 3:
        n = _rounded_outputs(out, hw, hw.ublock_depth, True)
        k, cin = math.prod(w[2:]), w[1]
        if attr(node, "group", 1) > 1 and cin == 1:
            work = n * _up(k, hw.depthwise_kernel_step) / hw.depthwise_efficiency
        else:
            work = n * min(_pass_work(k, cin, hw))
        return max(work / macs_per_cycle, floor)
    if op in ("Gemm", "MatMul") and layer.macs:
        n = _rounded_outputs(out, hw, hw.ublock_depth, False)
        depth = layer.macs // max(1, _elements(out)[0])
        return max(n * _up(depth, hw.mac_depth_step) / macs_per_cycle, floor)
    if op in POOL_OPS and hw.pool_window_per_cycle:
        window = math.prod(attr(node, "kernel_shape") or _dims(shapes.get(node.input[0]))[2:])
        n = _rounded_outputs(out, hw, hw.ublock_depth, True)
        return n * max(window, hw.pool_min_window) / hw.pool_window_per_cycle
    if op in BINARY_ELEMENTWISE and hw.elementwise_cycles_per_element:
        return 0.0
    return layer.macs / macs_per_cycle + layer.elementwise_ops / hw.elementwise_per_cycle


def _output_cycles(node: onnx.NodeProto, shapes: dict, hw: Hardware) -> float:
    """Cycles writing the outputs: Ethos-U's output unit takes a fixed fraction of a cycle per
    element, per op kind (Vela's output_cycles_per_elem)."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if op in BINARY_ELEMENTWISE and hw.elementwise_cycles_per_element:
        return (_rounded_outputs(out, hw, hw.elementwise_depth_round, False)
                * hw.elementwise_cycles_per_element)
    if op in ("MaxPool", "GlobalMaxPool"):
        rate = hw.maxpool_cycles_per_element
    elif op in OUTPUT_RATE_OPS:
        rate = hw.output_cycles_per_element
    else:
        return 0.0
    return _rounded_outputs(out, hw, hw.ublock_depth, True) * rate if rate else 0.0


def _burst_efficiency(shape: list | None, act_bytes: float, hw: Hardware,
                      write: bool) -> float:
    """Fraction of the DRAM bandwidth an NHWC tensor moves at: runs of C channels (writes
    capped at ``dram_write_run_bytes``) out of each burst."""
    if not hw.dram_burst_bytes:
        return 1.0
    dims = _dims(shape)
    run = _up(math.ceil((dims[1] if len(dims) >= 2 else dims[0]) * act_bytes), 8)
    if write and hw.dram_write_run_bytes:
        run = min(run, hw.dram_write_run_bytes)
    return min(1.0, run / hw.dram_burst_bytes)


def _weight_reads(node: onnx.NodeProto, shapes: dict, hw: Hardware) -> float:
    """How often a convolution reads its weights: once per spatial output block (a fraction
    for the partial blocks at the edges, at least once)."""
    if not hw.ofm_block_pixels or node.op_type != "Conv":
        return 1.0
    dims = _dims(shapes.get(node.output[0]))
    return max(1.0, math.prod(dims[2:]) / hw.ofm_block_pixels) if len(dims) >= 4 else 1.0


def _input_reads(node: onnx.NodeProto, shapes: dict, hw: Hardware) -> float:
    """How often a layer reads its input: once per block of output channels for convolutions
    (not depthwise) and fully connected layers; the block is ``part_kernel_block_depth`` deep
    when a convolution runs in the part-kernel mode (the first layer with 3 channels)."""
    if not hw.ofm_block_depth or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return 1.0
    w = _dims(shapes.get(node.input[1]))
    if _is_depthwise(node, w):
        return 1.0
    depth = hw.ofm_block_depth
    if node.op_type == "Conv" and len(w) >= 3 and hw.part_kernel_block_depth:
        direct, part = _pass_work(math.prod(w[2:]), w[1], hw)
        if part < direct:
            depth = hw.part_kernel_block_depth
    cout = _dims(shapes.get(node.output[0]))[1 if node.op_type == "Conv" else -1]
    return max(1.0, cout / depth)


def _external_input_reads(node: onnx.NodeProto, shapes: dict, hw: Hardware) -> float:
    """How many times its size a convolution reads an input that lies in external memory.

    Vela fetches the input block of every output block (its ``measure_element_access``): the
    input again per block of output channels (:func:`_input_reads`) and, per spatial block, the
    block's rows and columns plus the kernel's halo, with the partial blocks at the edges
    fetched whole. The spatial block is taken square, ``ofm_block_pixels`` in area; the halo is
    rounded to the micro-block. (The SRAM term leaves the halo out: its burst efficiency was
    fitted without it.)"""
    reads = _input_reads(node, shapes, hw)
    if node.op_type != "Conv" or not hw.ofm_block_pixels:
        return reads
    w = _dims(shapes.get(node.input[1]))
    x, y = _dims(shapes.get(node.input[0])), _dims(shapes.get(node.output[0]))
    if len(w) != 4 or len(x) != 4 or len(y) != 4:
        return reads
    side = max(1, math.isqrt(hw.ofm_block_pixels))
    strides = attr(node, "strides", None) or [1, 1]
    dilations = attr(node, "dilations", None) or [1, 1]
    fetched = 1
    for axis, ublock in ((2, hw.ublock_height), (3, hw.ublock_width)):
        block = min(side, y[axis])
        halo = (block - 1) * strides[axis - 2] + (w[axis] - 1) * dilations[axis - 2] + 1
        fetched *= -(-y[axis] // block) * min(_up(halo, ublock), _up(x[axis], ublock))
    return reads * max(1.0, fetched / (x[2] * x[3]))


def estimate(model: onnx.ModelProto, target: Target | str | None = None,
             plan: PartitionPlan | None = None) -> Estimate:
    """Estimate MACs, bytes, SRAM fit, cycles and time per layer, and the totals.

    Args:
        model: the float model (optimized, with shapes inferred, gives the best numbers).
        target: target or preset name whose ``[hardware]`` and ``[arithmetic]`` apply.
        plan: the partition to follow; computed with default options when omitted.

    Returns:
        The :class:`Estimate`.

    Raises:
        ModelError: not a model.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"estimate expects an onnx.ModelProto, got {type(model).__name__}")
    target = load_target(target)
    if plan is None:
        plan = partition(model, target)
    model = prepare(model, target, keep=plan.options.get("force_cpu", ()))
    hw, arith = target.hardware, target.arithmetic
    index = GraphIndex(model.graph)
    shapes, _ = shapes_and_types(model)
    nodes = {n.name: n for n in model.graph.node}
    act_bytes = arith.activation_bits / 8
    macs_per_cycle = hw.macs_per_cycle_16bit if arith.activation_bits == 16 else \
        hw.macs_per_cycle
    bytes_per_cycle = hw.dram_gbps * 1e9 / (hw.clock_mhz * 1e6)
    sram = hw.sram_kib * 1024
    sram_per_cycle = (hw.sram_gbps * 1e9 / (hw.clock_mhz * 1e6) * hw.sram_burst_efficiency
                      if hw.sram_gbps else 0.0)
    boundary_in = {sg.index: set(sg.inputs) for sg in plan.subgraphs}
    boundary_out = {sg.index: set(sg.outputs) for sg in plan.subgraphs}
    sub_of = {n: sg.index for sg in plan.subgraphs for n in sg.nodes}
    layers: list[LayerEstimate] = []
    inexact = []
    for name in plan.order:
        node = nodes[name]
        place = plan.placement[name]
        layer = LayerEstimate(name=name, op=node.op_type, placement=place,
                              subgraph=sub_of.get(name))
        layer.macs, layer.elementwise_ops = _work(node, shapes, index)
        exact = True
        for i, x in enumerate(node.input):
            if not x:
                continue
            n, ok = _elements(shapes.get(x))
            if index.is_constant(x):
                is_bias = i == 2 and node.op_type in ("Conv", "ConvTranspose", "Gemm")
                if i == 1:
                    layer.weight_bytes += math.ceil(n * arith.weight_bits / 8
                                                    * hw.weight_compression)
                elif is_bias and hw.stored_bias_bytes:
                    layer.weight_bytes += n * hw.stored_bias_bytes
                else:
                    bits = arith.bias_bits if is_bias else arith.activation_bits
                    layer.weight_bytes += math.ceil(n * bits / 8)
            else:
                layer.input_bytes += int(n * act_bytes)
                exact = exact and ok
        for o in node.output:
            if o:
                n, ok = _elements(shapes.get(o))
                layer.output_bytes += int(n * act_bytes)
                exact = exact and ok
        layer.exact = exact
        if not exact:
            inexact.append(name)
        fused_into = plan.fused_into.get(name)
        if node.op_type in VIEW_OPS:
            layer.bound, layer.input_bytes, layer.output_bytes = "view", 0, 0
            layer.weight_bytes = 0
        elif place == NPU:
            working = layer.weight_bytes + layer.input_bytes + layer.output_bytes
            layer.sram_fit = hw.io_in_sram or hw.cascading or working <= sram
            weight_dram = math.ceil(layer.weight_bytes * _weight_reads(node, shapes, hw))
            sg = sub_of.get(name)
            if hw.io_in_sram:
                crossing = []
            elif layer.sram_fit and sg is not None:
                crossing = [x for x in node.input if x in boundary_in[sg]]
                crossing += [o for o in node.output if o in boundary_out[sg]]
            else:
                crossing = [x for x in (*node.input, *node.output)
                            if x and not index.is_constant(x)]
            reads = _input_reads(node, shapes, hw)
            external_reads = _external_input_reads(node, shapes, hw)
            act_dram = [_elements(shapes.get(x))[0] * act_bytes
                        * (1.0 if x in node.output else external_reads) for x in crossing]
            layer.dram_bytes = weight_dram + int(sum(act_dram))
            in_dram = sum(_elements(shapes.get(x))[0] * act_bytes
                          * (1.0 if x in node.output else reads) for x in crossing)
            sram_bytes = (layer.input_bytes * reads + layer.output_bytes - in_dram)
            if fused_into and plan.placement.get(fused_into) == NPU:
                layer.bound = "fused"
            else:
                scaled = weight_dram + sum(
                    b / _burst_efficiency(shapes.get(x), act_bytes, hw, x in node.output)
                    for x, b in zip(crossing, act_dram, strict=True))
                terms = {
                    "compute": _compute_cycles(node, shapes, layer, hw, macs_per_cycle),
                    "output": _output_cycles(node, shapes, hw),
                    "sram": sram_bytes / sram_per_cycle if sram_per_cycle else 0.0,
                    "memory": scaled / bytes_per_cycle}
                layer.compute_cycles = math.ceil(terms["compute"])
                layer.output_cycles = math.ceil(terms["output"])
                layer.sram_cycles = math.ceil(terms["sram"])
                layer.memory_cycles = math.ceil(terms["memory"])
                layer.bound = max(terms, key=lambda b: terms[b])
                layer.cycles = max(layer.compute_cycles, layer.output_cycles,
                                   layer.sram_cycles, layer.memory_cycles)
                layer.time_us = layer.cycles / hw.clock_mhz
        else:
            layer.bound = "cpu"
            layer.sram_fit = False
            work = layer.macs + layer.elementwise_ops
            if node.op_type in MOVE_OPS:
                work = (layer.input_bytes + layer.output_bytes) // 4
            layer.time_us = work / (hw.cpu_gmacs * 1e3)
        layers.append(layer)
    result = Estimate(target=target.name, layers=layers, illustrative=hw.illustrative)
    result.totals = compute_totals(layers, target, len(plan.subgraphs))
    if hw.illustrative:
        result.notes.append(f"the hardware numbers of target {target.name!r} are illustrative, "
                            "not from a datasheet")
    if inexact:
        result.notes.append(f"{len(inexact)} layer(s) have unknown dims, counted as 1; fix the "
                            "input shapes with --input-shape for exact numbers")
    result.notes.append("NPU and CPU parts run one after the other; CPU times come from "
                        f"cpu_gmacs = {hw.cpu_gmacs} GMAC/s")
    return result


def compute_totals(layers: list[LayerEstimate], target: Target,
                   subgraphs: int) -> dict[str, Any]:
    """Totals: MACs, bytes, cycles, times (ms), latency, fps and the NPU share of MACs."""
    hw = target.hardware
    npu = [layer for layer in layers if layer.placement == NPU]
    cpu = [layer for layer in layers if layer.placement != NPU]
    macs = sum(layer.macs for layer in layers)
    npu_macs = sum(layer.macs for layer in npu)
    npu_us = sum(layer.time_us for layer in npu)
    cpu_us = sum(layer.time_us for layer in cpu)
    overhead_us = subgraphs * hw.subgraph_overhead_us
    latency_us = npu_us + cpu_us + overhead_us
    bounds = {b: sum(1 for layer in npu if layer.bound == b)
              for b in ("compute", "output", "sram", "memory", "fused", "view")}
    return {
        "macs": macs,
        "npu_macs": npu_macs,
        "cpu_macs": macs - npu_macs,
        "npu_mac_fraction": (npu_macs / macs) if macs else 1.0,
        "weight_bytes": sum(layer.weight_bytes for layer in npu),
        "dram_bytes": sum(layer.dram_bytes for layer in npu),
        "npu_cycles": sum(layer.cycles for layer in npu),
        "npu_time_ms": npu_us / 1000,
        "cpu_time_ms": cpu_us / 1000,
        "overhead_ms": overhead_us / 1000,
        "latency_ms": latency_us / 1000,
        "fps": 1e6 / latency_us if latency_us > 0 else math.inf,
        "layers_not_fitting_sram": sum(1 for layer in npu
                                       if not layer.sram_fit and layer.bound != "view"),
        "npu_layers_by_bound": bounds,
        "npu_layers": len(npu),
        "cpu_layers": len(cpu),
        "subgraphs": subgraphs,
    }


__all__ = ["Estimate", "LayerEstimate", "compute_totals", "estimate"]
