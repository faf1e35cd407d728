"""Zoo models written directly with ``onnx.helper`` (no torch): control flow and int inputs.

``vad_if`` follows the structure of Silero's voice-activity detector: an ``If`` on the int64
sample-rate input picks one of two front-end convolutions (each branch reads the audio and its
weights from the outer graph, as the real model does), then a convolutional encoder, a one-step
LSTM that carries its state ``[2, 1, H]`` between calls, and a sigmoid speech probability.
Weights are seeded; the model is a few kilobytes and builds in milliseconds.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def build_vad_if(samples: int = 256, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """The Silero-like VAD: inputs ``input`` f32 ``[1, samples]``, ``state`` f32
    ``[2, 1, hidden]``, ``sr`` int64 scalar; outputs ``output`` ``[1, 1]`` and ``stateN``."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    c1, c2, k = 16, hidden, 16
    inits = [
        _init("stft16k_w", (rng.standard_normal((c1, 1, k)) / np.sqrt(k)).astype(f32)),
        _init("stft16k_b", (rng.standard_normal(c1) * 0.1).astype(f32)),
        _init("stft8k_w", (rng.standard_normal((c1, 1, k)) / np.sqrt(k)).astype(f32)),
        _init("stft8k_b", (rng.standard_normal(c1) * 0.1).astype(f32)),
        _init("enc_w", (rng.standard_normal((c2, c1, 3)) / np.sqrt(3 * c1)).astype(f32)),
        _init("enc_b", (rng.standard_normal(c2) * 0.1).astype(f32)),
        _init("lstm_W", (rng.standard_normal((1, 4 * hidden, c2)) / np.sqrt(c2)).astype(f32)),
        _init("lstm_R", (rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
              .astype(f32)),
        _init("lstm_B", (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(f32)),
        _init("dec_w", (rng.standard_normal((1, hidden, 1)) / np.sqrt(hidden)).astype(f32)),
        _init("dec_b", np.zeros(1, f32)),
        _init("sr16k", np.array(16000, np.int64)),
        _init("audio_shape", np.array([1, 1, samples], np.int64)),
        _init("axis2", np.array([2], np.int64)),
        _init("axis0", np.array([0], np.int64)),
        _init("idx0", np.array([0], np.int64)),
        _init("idx1", np.array([1], np.int64)),
    ]

    def branch(tag: str) -> onnx.GraphProto:
        out = f"feat_{tag}"
        nodes = [
            helper.make_node("Reshape", ["input", "audio_shape"], [f"audio_{tag}"],
                             name=f"reshape_{tag}"),
            helper.make_node("Conv", [f"audio_{tag}", f"stft{tag}_w", f"stft{tag}_b"],
                             [f"conv_{tag}"], name=f"stft_{tag}", strides=[8], pads=[4, 4]),
            helper.make_node("Relu", [f"conv_{tag}"], [out], name=f"stft_relu_{tag}"),
        ]
        t = (samples + 8 - k) // 8 + 1
        return helper.make_graph(nodes, f"branch_{tag}", [], [
            helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c1, t])])

    nodes = [
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="sr_is_16k"),
        helper.make_node("If", ["is16k"], ["feat"], name="sr_switch",
                         then_branch=branch("16k"), else_branch=branch("8k")),
        helper.make_node("Conv", ["feat", "enc_w", "enc_b"], ["enc"], name="encoder",
                         strides=[2], pads=[1, 1]),
        helper.make_node("Relu", ["enc"], ["enc_relu"], name="encoder_relu"),
        helper.make_node("ReduceMean", ["enc_relu"], ["pooled"], name="pool", axes=[2],
                         keepdims=0),
        helper.make_node("Unsqueeze", ["pooled", "axis0"], ["seq"], name="to_sequence"),
        helper.make_node("Gather", ["state", "idx0"], ["h0"], name="state_h", axis=0),
        helper.make_node("Gather", ["state", "idx1"], ["c0"], name="state_c", axis=0),
        helper.make_node("LSTM", ["seq", "lstm_W", "lstm_R", "lstm_B", "", "h0", "c0"],
                         ["lstm_y", "lstm_h", "lstm_c"], name="lstm", hidden_size=hidden),
        helper.make_node("Concat", ["lstm_h", "lstm_c"], ["stateN"], name="new_state", axis=0),
        helper.make_node("Squeeze", ["lstm_y", "idx1"], ["lstm_out"], name="squeeze_dir"),
        helper.make_node("Relu", ["lstm_out"], ["dec_in"], name="decoder_relu"),
        helper.make_node("Transpose", ["dec_in"], ["dec_t"], name="decoder_layout",
                         perm=[1, 2, 0]),
        helper.make_node("Conv", ["dec_t", "dec_w", "dec_b"], ["dec"], name="decoder"),
        helper.make_node("Sigmoid", ["dec"], ["prob"], name="decoder_sigmoid"),
        helper.make_node("Squeeze", ["prob", "axis2"], ["output"], name="squeeze_time"),
    ]
    graph = helper.make_graph(
        nodes, "vad_if",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, samples]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, hidden])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ortnpu-models")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


BUILDERS = {"zoo_vad_if": build_vad_if}
"""Zoo models that need no torch, by cache name (without ``.onnx``)."""
