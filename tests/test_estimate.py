"""Performance estimate: MACs, bytes, SRAM fit, roofline cycles and totals on crafted graphs."""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortnpu.errors import ModelError
from ortnpu.estimate import estimate
from ortnpu.partition import partition
from ortnpu.target import parse_target


def _target(sram_kib: int = 1024, cpu_preferred: str = "[]") -> object:
    return parse_target(f"""name = "t"
[support]
cpu_preferred = {cpu_preferred}
op_types = ["Conv", "Relu", "Gemm", "Flatten", "Softmax"]
[hardware]
clock_mhz = 100.0
macs_per_cycle = 100
elementwise_per_cycle = 10
sram_kib = {sram_kib}
dram_gbps = 0.1
cpu_gmacs = 1.0
subgraph_overhead_us = 5.0
""")


def _model() -> onnx.ModelProto:
    w = np.ones((8, 4, 3, 3), np.float32)
    fw = np.ones((8 * 16, 10), np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw"], ["g"], name="fc"),
         helper.make_node("Softmax", ["g"], ["y"], name="sm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fw, "fw")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_per_layer_numbers() -> None:
    t = _target()
    est = estimate(_model(), t)
    layers = {x.name: x for x in est.layers}
    conv = layers["conv"]
    assert conv.macs == 8 * 16 * 4 * 9            # out elements x (Cin/g) x kernel
    assert conv.weight_bytes == 8 * 4 * 9         # int8 weights
    assert conv.input_bytes == 64 and conv.output_bytes == 128
    assert conv.sram_fit
    # conv reads the graph input through DRAM (subgraph boundary): 288 weights + 64 input bytes
    assert conv.dram_bytes == 288 + 64
    assert conv.compute_cycles == 8 * 16 * 4 * 9 // 100 + 1
    assert conv.memory_cycles == 352  # 0.1 GB/s at 100 MHz = 1 byte per cycle
    assert conv.cycles == 352 and conv.bound == "memory"
    assert layers["flat"].bound == "view" and layers["flat"].cycles == 0
    assert layers["fc"].macs == 128 * 10
    sm = layers["sm"]
    assert sm.placement == "NPU"  # the target lists Softmax: TFLite's integer SOFTMAX


def test_cpu_layers_flagged_and_totals() -> None:
    t = _target(cpu_preferred='["Softmax"]')
    plan = partition(_model(), t)
    est = estimate(_model(), t, plan)
    sm = next(x for x in est.layers if x.name == "sm")
    assert sm.placement == "CPU" and sm.bound == "cpu" and sm.cycles == 0
    assert sm.time_us == pytest.approx(4 * 10 / 1e3)  # 4 ops per element at 1 GMAC/s
    tot = est.totals
    assert tot["subgraphs"] == 1 and tot["overhead_ms"] == pytest.approx(0.005)
    assert tot["latency_ms"] == pytest.approx(tot["npu_time_ms"] + tot["cpu_time_ms"] + 0.005)
    assert tot["fps"] == pytest.approx(1000 / tot["latency_ms"])
    assert tot["npu_mac_fraction"] == 1.0
    assert tot["dram_bytes"] == sum(x.dram_bytes for x in est.layers if x.placement == "NPU")
    assert est.to_dict()["layers"][0]["name"] == "conv"
    assert any("illustrative" in n for n in est.notes)


def test_sram_overflow_moves_activations_through_dram() -> None:
    est = estimate(_model(), _target(sram_kib=0))
    conv = next(x for x in est.layers if x.name == "conv")
    assert not conv.sram_fit
    assert conv.dram_bytes == 288 + 64 + 128
    assert est.totals["layers_not_fitting_sram"] >= 1


def test_fused_activation_is_free() -> None:
    import ortnpu

    est = estimate(ortnpu.optimize(_model()), _target())
    relu = next(x for x in est.layers if x.name == "relu")
    assert relu.bound == "fused" and relu.cycles == 0


def test_bad_model() -> None:
    with pytest.raises(ModelError):
        estimate(b"not a model", _target())  # type: ignore[arg-type]


def _ethos_model(nodes: list, inits: list, x_shape: list[int], y: str) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                    x_shape)],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_ethos_u55_rules() -> None:
    """The Ethos-U terms: depthwise at 3/32 of the MAC rate, the expand conv with 16 input
    channels bound by the output write rate, Add at 1.5 cycles per element with the depth
    rounded up to 16, each with the bound that limits it."""
    c = 24
    dw = np.ones((c, 1, 3, 3), np.float32)
    ex = np.ones((c, 16, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "ex"], ["e"], name="expand"),
             helper.make_node("Conv", ["e", "dw"], ["d"], name="dw", group=c, pads=[1] * 4),
             helper.make_node("Add", ["d", "e"], ["y"], name="add")]
    est = estimate(_ethos_model(nodes, [numpy_helper.from_array(dw, "dw"),
                                        numpy_helper.from_array(ex, "ex")], [1, 16, 28, 28],
                                "y"), "ethos-u55-128")
    layers = {x.name: x for x in est.layers}
    outputs = 28 * 28 * c
    # depthwise: 12 kernel steps (9 rounded to 4s) x 8 (one channel of the 8-wide dot product)
    assert layers["dw"].compute_cycles == outputs * 12 * 8 // 128
    assert layers["dw"].bound == "compute"
    # 1x1 from 16 channels: the MAC pass takes 32 channels (half used); writing 0.5 cycle per
    # output element is slower still
    assert layers["expand"].compute_cycles == outputs * 32 // 128
    assert layers["expand"].output_cycles == outputs // 2
    assert layers["expand"].bound == "output"
    # Add: 1.5 cycles per element, 24 channels rounded up to 32
    assert layers["add"].output_cycles == 28 * 28 * 32 * 3 // 2
    assert layers["add"].bound == "output" and layers["add"].compute_cycles == 0


def test_first_layer_uses_part_kernel_and_flash_weights_bind_fc() -> None:
    """A 3-channel 3x3 conv takes the kernel in 4s with the depth rounded to 8 (3 passes, not 9),
    and a fully connected layer on ethos-u55-128 waits for its weights from flash (1 B/cycle)."""
    w = np.ones((16, 3, 3, 3), np.float32)
    fc = np.ones((100, 16 * 8 * 8), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="stem", pads=[1] * 4,
                              strides=[2, 2]),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    est = estimate(_ethos_model(nodes, [numpy_helper.from_array(w, "w"),
                                        numpy_helper.from_array(fc, "fc")], [1, 3, 16, 16], "y"),
                   "ethos-u55-128")
    layers = {x.name: x for x in est.layers}
    assert layers["stem"].compute_cycles == 8 * 8 * 16 * (3 * 4) * 8 // 128
    assert layers["fc"].bound == "memory"
    assert layers["fc"].memory_cycles == 100 * 1024   # 0.5 GB/s at 500 MHz = 1 byte/cycle


def test_first_layer_reads_its_external_input_per_output_block() -> None:
    """On ethos-u65-256 the network input lies in DRAM; like Vela, the first layer fetches it
    once per 16-deep block of output channels and per square block of 160 output pixels (12x12)
    with the 3x3 kernel's halo, rounded to the 2x2 micro-block and whole at the edges."""
    w = np.ones((32, 3, 3, 3), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="stem", pads=[0, 0, 1, 1],
                              strides=[2, 2])]
    est = estimate(_ethos_model(nodes, [numpy_helper.from_array(w, "w")], [1, 3, 64, 64], "y"),
                   "ethos-u65-256")
    stem = est.layers[0]
    side = 3 * 26   # 3 blocks of 12 outputs per axis (32 wide), each fetching 11 * 2 + 3 -> 26
    inputs = side * side * 3 * (32 // 16)
    weights = math.ceil(32 * 27 * 32 * 32 / 160)   # no bias; read once per 160 outputs
    assert stem.dram_bytes == weights + inputs + 32 * 32 * 32
    # the 3-byte pixels move in 8-byte runs of 128-byte bursts; the output in 16-byte runs
    assert stem.memory_cycles == math.ceil((weights + inputs * 16 + 32 * 32 * 32 * 8) / 12)
    assert stem.bound == "memory"
