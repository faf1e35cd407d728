"""The conformance kit's QDQ forms through the ortnpu plugin EP (tests/test_ep.py has the rest).

Each single-op QDQ model of tests/oracle/cases.py (int8 and 16x8) runs in a plain onnxruntime
session with the ortnpu EP and the case's target: onnxruntime must assign every node to the EP
and the outputs must equal ``ortnpu.InferenceSession(ortnpu.import_qdq(model))`` bit for bit
(which test_litert_oracle.py compares with LiteRT's reference kernels).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from cases import GENERATORS, make_case

import ortnpu
import ortnpu.ep

pytestmark = pytest.mark.usefixtures("require_c")

FORMS = [(op, "int8") for op in sorted(GENERATORS)] + \
    [(op, "int16") for op in sorted(set(GENERATORS) - {"HARD_SWISH"})]


@pytest.mark.parametrize(("op", "act"), FORMS)
def test_qdq_form_on_the_ep(op: str, act: str) -> None:
    case = make_case(op, act, 0)
    so = ort.SessionOptions()
    so.add_provider_for_devices(ortnpu.ep.register(), {"target": case.target})
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    sess = ort.InferenceSession(case.onnx.SerializeToString(), so)
    report = ortnpu.ep.explain(sess)
    assert {r.device for r in report} == {"NPU"}, [r for r in report if r.device != "NPU"]
    on_ep = sorted((n.name, n.op_type) for sub in sess.get_provider_graph_assignment_info()
                   if sub.ep_name == ortnpu.ep.EP_NAME for n in sub.get_nodes())
    assert on_ep == sorted((r.node, r.op_type) for r in report)
    (got,) = sess.run(None, case.onnx_inputs)
    (want,) = ortnpu.InferenceSession(ortnpu.import_qdq(case.onnx, case.target)).run(
        None, case.onnx_inputs)
    assert got.dtype == want.dtype and np.array_equal(got, want)
