"""One conformance case and its files in the ONNX backend-test layout.

A case is one ``com.ortnpu`` node with concrete inputs and attributes. On disk it is the layout of
onnx's own backend tests, so any ONNX runner (or a hardware runtime) can consume it::

    test_<op>_<case>/model.onnx                 one node; parameters are initializers
    test_<op>_<case>/test_data_set_0/input_<k>.pb   activations, TensorProto, graph-input order
    test_<op>_<case>/test_data_set_0/output_0.pb    expected output of the numpy reference
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ortnpu.domain import DOMAIN, DOMAIN_VERSION, OPS_BY_NAME, make_node
from ortnpu.domain.spec import ONNX_OF_DTYPE, OpSpec
from ortnpu.errors import ModelError

#: Opset of the default domain in case models, and the IR version onnxruntime 1.20+ reads.
DEFAULT_OPSET = 17
IR_VERSION = 9
DATA_SET = "test_data_set_0"


@dataclass(frozen=True)
class Tensor:
    """One input of a case.

    Attributes:
        name: tensor name in the model.
        value: the array.
        param: True for parameters (weights, bias, multipliers, tables...), stored as
            initializers in model.onnx; False for activations, fed as graph inputs.
    """

    name: str
    value: np.ndarray
    param: bool = False


@dataclass(frozen=True)
class Case:
    """One conformance case: an op, its inputs and attributes, and why it exists."""

    suite: str
    op: str
    name: str
    inputs: tuple[Tensor, ...]
    attrs: Mapping[str, Any]
    out_dtype: np.dtype
    doc: str = ""
    _cache: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def spec(self) -> type[OpSpec]:
        """The op spec."""
        return OPS_BY_NAME[self.op]

    @property
    def dirname(self) -> str:
        """Directory name ``test_<op>_<case>`` (op in lower case, no underscore)."""
        return f"test_{self.op.lower()}_{self.name}"

    def expected(self) -> np.ndarray:
        """Output of the numpy reference kernel (validated inputs, computed once)."""
        if "y" not in self._cache:
            arrays = [t.value for t in self.inputs]
            self._cache["y"] = self.spec.run_reference(arrays, self.attrs, self.out_dtype)
        return self._cache["y"]

    def feeds(self) -> dict[str, np.ndarray]:
        """Graph inputs of the model: the activations."""
        return {t.name: t.value for t in self.inputs if not t.param}

    def model(self) -> onnx.ModelProto:
        """The single-node NPU graph of the case."""
        node_name = f"{self.op}_{self.name}"
        node = make_node(self.spec, [t.name for t in self.inputs], "y", self.out_dtype,
                         node_name, **dict(self.attrs))
        y = self.expected()
        graph = helper.make_graph(
            [node], self.dirname,
            [_value_info(t.name, t.value) for t in self.inputs if not t.param],
            [_value_info("y", y)],
            [numpy_helper.from_array(t.value, t.name) for t in self.inputs if t.param],
            doc_string=self.doc,
        )
        return conformance_model(graph, self.suite)

    def write(self, root: Path) -> Path:
        """Write the case under ``root``; return its directory."""
        return write_case(Path(root) / self.dirname, self.model(), list(self.feeds().items()),
                          [("y", self.expected())])


def write_case(folder: Path, model: onnx.ModelProto,
               inputs: Sequence[tuple[str, np.ndarray]],
               outputs: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Write a case in the ONNX backend-test layout: ``model.onnx`` and ``test_data_set_0/``
    with ``input_<k>.pb`` / ``output_<k>.pb``; return ``folder``."""
    data = folder / DATA_SET
    data.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    for k, (name, value) in enumerate(inputs):
        write_tensor(data / f"input_{k}.pb", value, name)
    for k, (name, value) in enumerate(outputs):
        write_tensor(data / f"output_{k}.pb", value, name)
    return folder


def conformance_model(graph: onnx.GraphProto, suite: str) -> onnx.ModelProto:
    """The model of a case: ``graph`` with the kit's producer, IR version, opsets and suite."""
    model = helper.make_model(
        graph, producer_name="ortnpu.conformance", ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", DEFAULT_OPSET),
                       helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    helper.set_model_props(model, {"ortnpu.conformance.suite": suite})
    return model


def _value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_OF_DTYPE[value.dtype], list(value.shape))


def write_tensor(path: Path, value: np.ndarray, name: str) -> None:
    """Write one TensorProto file as onnx's backend test data does."""
    Path(path).write_bytes(numpy_helper.from_array(np.asarray(value), name).SerializeToString())


def read_tensor(path: Path) -> np.ndarray:
    """Read one TensorProto file."""
    proto = onnx.TensorProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
        return numpy_helper.to_array(proto)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ModelError(f"{path}: not a readable TensorProto file: {exc}") from None


@dataclass(frozen=True)
class StoredCase:
    """A case read back from disk: what a runner needs."""

    path: Path
    suite: str
    op: str
    name: str
    inputs: dict[str, np.ndarray]
    expected: list[np.ndarray]

    @property
    def model_path(self) -> Path:
        """The case's model.onnx."""
        return self.path / "model.onnx"


def graph_input_names(model_path: Path) -> list[str]:
    """Graph inputs that are not initializers, in order."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{model_path}: cannot read the model: {exc}") from None
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def read_case(folder: Path, root: Path | None = None) -> StoredCase:
    """Read ``test_<op>_<case>/`` (model, inputs in graph-input order, expected outputs)."""
    folder = Path(folder)
    if not folder.name.startswith("test_") or not (folder / "model.onnx").is_file():
        raise ModelError(f"{folder}: not a conformance case (need test_<op>_<case>/model.onnx)")
    data = folder / DATA_SET
    names = graph_input_names(folder / "model.onnx")
    inputs = {}
    for k, name in enumerate(names):
        file = data / f"input_{k}.pb"
        if not file.is_file():
            raise ModelError(f"{folder}: model input {name!r} has no {DATA_SET}/input_{k}.pb")
        inputs[name] = read_tensor(file)
    outputs = sorted(data.glob("output_*.pb"))
    if not outputs:
        raise ModelError(f"{folder}: no {DATA_SET}/output_<k>.pb with the expected outputs")
    want = [data / f"output_{k}.pb" for k in range(len(outputs))]
    stray = sorted(set(outputs) - set(want))
    if stray:
        raise ModelError(f"{folder}: {DATA_SET}/{stray[0].name} is not an expected output file "
                         f"(expected output_0.pb ... output_{len(outputs) - 1}.pb, numbered "
                         "from 0 without gaps); remove or rename it")
    outputs = want
    _, op, *rest = folder.name.split("_")
    suite = str(folder.parent.relative_to(root)) if root and folder.parent != root else ""
    return StoredCase(folder, suite, op, "_".join(rest), inputs,
                      [read_tensor(p) for p in outputs])


def find_cases(root: Path, ops: Sequence[str] | None = None) -> list[Path]:
    """Every case directory under ``root`` (``root`` itself may be one), sorted."""
    root = Path(root)
    if not root.exists():
        raise ModelError(f"{root}: no such directory")
    if (root / "model.onnx").is_file():
        found = [root]
    else:
        found = sorted(p.parent for p in root.rglob("model.onnx") if p.parent.name.startswith(
            "test_"))
    if ops:
        wanted = {o.lower() for o in ops}
        found = [p for p in found if p.name.split("_")[1] in wanted]
    return found
