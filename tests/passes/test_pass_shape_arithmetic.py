"""FoldShapeArithmetic: a dynamic-batch export's shape arithmetic folded entry by entry.

Every rewritten graph is run by onnxruntime at several batch sizes and must give the float
model's outputs bit for bit (the pass moves no arithmetic on activations)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from passes_helpers import init, model, rand, run

from ortnpu.passes import FoldShapeArithmetic, InferShapes, RemoveUnused, optimize
from ortnpu.passes.shape_inference import InferShapes as Infer

I64 = np.int64


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return init(name, np.array(values, I64))


def _fold(m: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    m = InferShapes()(m).model
    result = FoldShapeArithmetic()(m)
    return RemoveUnused()(result.model).model, result.changes


def _same_at_batches(before: onnx.ModelProto, after: onnx.ModelProto, shape: list[int],
                     batches: tuple[int, ...] = (1, 3)) -> None:
    for b in batches:
        x = np.random.default_rng(b).standard_normal([b, *shape]).astype(np.float32)
        for want, got in zip(run(before, {"x": x}), run(after, {"x": x}), strict=True):
            assert want.shape == got.shape and np.array_equal(want, got), b


def _attention_reshape() -> onnx.ModelProto:
    """x [N, 5, 12] → Reshape to [Shape(x)[0], Shape(x)[1], 3, Shape(x)[2] / 3] (the ViT's
    q/k/v split as torch exports it with a dynamic batch) → Relu."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["t"], axis=0),
        helper.make_node("Gather", ["s", "i2"], ["c"], axis=0),
        helper.make_node("Div", ["c", "three"], ["d"]),
        *[helper.make_node("Unsqueeze", [v, "ax0"], [f"{v}_1"]) for v in ("n", "t", "d")],
        helper.make_node("Concat", ["n_1", "t_1", "k3", "d_1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    inits = [init("i0", np.array(0, I64)), init("i1", np.array(1, I64)),
             init("i2", np.array(2, I64)), init("three", np.array(3, I64)),
             _i64("ax0", [0]), _i64("k3", [3])]
    return model(nodes, {"x": ["N", 5, 12]}, {"y": ["N", 5, 3, 4]}, inits)


def test_a_reshape_target_that_copies_the_batch_becomes_constant() -> None:
    before = _attention_reshape()
    after, changes = _fold(before)
    reshape = next(n for n in after.graph.node if n.op_type == "Reshape")
    target = next(t for t in after.graph.initializer if t.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 5, 3, 4], changes
    assert [n.op_type for n in after.graph.node] == ["Reshape", "Relu"]
    _same_at_batches(before, after, [5, 12])
    inferred = Infer()(after).model
    out = next(v for v in inferred.graph.value_info if v.name == "r")
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [5, 3, 4]


def test_one_unknown_entry_becomes_minus_one() -> None:
    """The batch read from another tensor (not the Reshape's input) at another position:
    not a copy, so the single unknown entry is inferred."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n_1"]),
        helper.make_node("Concat", ["k", "n_1"], ["target"], axis=0),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("Reshape", ["xt", "target"], ["y"]),
    ]
    before = model(nodes, {"x": ["N", 6]}, {"y": [2, 3, "N"]},
                   [init("i0", np.array(0, I64)), _i64("ax0", [0]), _i64("k", [2, 3])])
    after, _ = _fold(before)
    reshape = next(n for n in after.graph.node if n.op_type == "Reshape")
    target = next(t for t in after.graph.initializer if t.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [2, 3, -1]
    _same_at_batches(before, after, [6])


def test_static_entries_fold_and_two_unknowns_stay() -> None:
    """Shape(x)[1:] is known although x's batch is not; a target with the batch and a
    dynamic length (two unknowns, neither a copy of the input's dim there) stays."""
    nodes = [
        helper.make_node("Shape", ["x"], ["all"]),
        helper.make_node("Slice", ["all", "st", "en"], ["nl"]),
        helper.make_node("Concat", ["nl", "four"], ["target"], axis=0),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["xt", "target"], ["y"]),
    ]
    before = model(nodes, {"x": ["N", "L", 4]}, {"y": ["N", "L", 4]},
                   [_i64("st", [0]), _i64("en", [2]), _i64("four", [4])])
    _, changes = _fold(before)
    assert not changes, changes
    static = model([helper.make_node("Shape", ["x"], ["s"], start=1),
                    helper.make_node("Mul", ["s", "two"], ["m"]),
                    helper.make_node("Concat", ["one", "m"], ["target"], axis=0),
                    helper.make_node("Reshape", ["x", "target"], ["y"])],
                   {"x": ["N", 4, 4]}, {"y": ["M", 4, 8]},
                   [_i64("two", [1, 2]), _i64("one", [-1])])
    after, changes = _fold(static)
    assert any("folded 3 shape computation" in c for c in changes), changes
    assert [n.op_type for n in after.graph.node] == ["Reshape"]
    _same_at_batches(static, after, [4, 4], batches=(2, 4))


def _class_token(with_pos: bool) -> onnx.ModelProto:
    """torch's ``cat([cls.expand(b, -1, -1), x], 1) (+ pos)`` as the TorchScript exporter
    writes it with a dynamic batch (Equal/Where on -1 entries, Expand)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b_1"]),
        helper.make_node("Concat", ["b_1", "m1", "m1"], ["want"], axis=0),
        helper.make_node("Equal", ["want", "neg"], ["is_neg"]),
        helper.make_node("Where", ["is_neg", "ones", "want"], ["shape"]),
        helper.make_node("Expand", ["cls", "shape"], ["cls_b"]),
        helper.make_node("Concat", ["cls_b", "x"], ["joined" if with_pos else "y"], axis=1),
    ]
    inits = [init("i0", np.array(0, I64)), _i64("ax0", [0]), _i64("m1", [-1]),
             _i64("neg", [-1, -1, -1]), _i64("ones", [1, 1, 1]), init("cls", rand(1, 1, 8))]
    if with_pos:
        nodes.append(helper.make_node("Add", ["joined", "pos"], ["y"]))
        inits.append(init("pos", rand(1, 5, 8)))
    return model(nodes, {"x": ["N", 4, 8]}, {"y": ["N", 5, 8]}, inits)


@pytest.mark.parametrize("with_pos", [True, False])
def test_a_class_token_expanded_to_the_batch_becomes_pad_and_add(with_pos: bool) -> None:
    before = _class_token(with_pos)
    after, changes = _fold(before)
    assert [n.op_type for n in after.graph.node] == ["Pad", "Add"], changes
    _same_at_batches(before, after, [4, 8], batches=(1, 2, 5))


def test_the_pipeline_places_a_dynamic_batch_vit_pattern_without_run_time_shapes() -> None:
    """optimize leaves no Shape, Expand or int64 arithmetic in either pattern."""
    for before in (_attention_reshape(), _class_token(True)):
        after = optimize(before)
        ops = {n.op_type for n in after.graph.node}
        assert not ops & {"Shape", "Gather", "Expand", "Where", "Concat", "Unsqueeze"}, ops
        _same_at_batches(before, after, [d.dim_value for d in
                                          before.graph.input[0].type.tensor_type.shape.dim[1:]])


def test_a_contrib_gelu_does_not_stop_shape_inference() -> None:
    """FuseErfGelu's com.microsoft Gelu: onnx's inferencer does not know it; the shapes after
    it must still be inferred when value infos are dropped (a dynamic batch read as 1)."""
    nodes = [helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
             helper.make_node("Relu", ["g"], ["y"])]
    g = helper.make_graph(nodes, "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.microsoft", 1)])
    inferred = Infer()(m).model
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output]}
    assert shapes["g"] == [2, 3] and shapes["y"] == [2, 3]
    assert inferred.graph.node[0].op_type == "Gelu"
    assert inferred.graph.node[0].domain == "com.microsoft"
