"""The model zoo: real architectures through the whole public pipeline, on every preset.

Each zoo model goes optimize → evaluate → quantize → run → export, and the run checks what
ortnpu promises: every step either works or raises an :class:`~ortnpu.OrtNpuError`; the default
(compiled) session, the reference path (``fuse=False, native=False``) and the integer export on
stock onnxruntime give identical outputs; evaluate and quantize put the same nodes on the CPU;
and a float-vs-NPU agreement metric that suits the model (top-1, cosine/SQNR, boxes, CTC
strings). ``tests/test_zoo.py`` asserts these; ``python -m ortnpu.bench zoo`` prints the table.

The models are built by ``python models/zoo.py`` into the model cache (torch-built ViT, YOLO-style
detector and CRNN through :func:`ortnpu.from_torch`; a Silero-like VAD with ``If`` subgraphs
written with onnx.helper; PP-OCR and MobileNetV2 from their packages); the ``light_*`` models
ship inside the ``onnx`` package. Inputs are seeded random samples of the right dtypes, except
for the image models with real samples in the cache: MobileNetV2 (photo crops) and PP-OCR det/rec
(rendered text lines, ``python models/ocr_text.py``; noise when that file is absent).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ortnpu import models_cache
from ortnpu.console import quiet_session_options
from ortnpu.errors import OrtNpuError
from ortnpu.onnx_types import dim_size

PRESETS = ("tflite-int8", "tflite-a16w8", "n2d2-int8")
STEPS = ("load", "optimize", "evaluate", "quantize", "run", "export")


# ------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: where its file is, how to feed it, how to score it.

    Attributes:
        name: the zoo name (also the cache file stem for built models).
        file: file name in the cache or a search folder, or an absolute path.
        metric: ``top1`` (classifier, first output), ``cosine`` (every output), ``boxes``
            (YOLO-style ``[1, 4 + nc, anchors]``), ``ctc`` (greedy-decoded strings), each
            reported with the minimum cosine over the outputs as well.
        input_shapes: fixed shapes for dynamic inputs (passed to ``optimize``).
        freeze: inputs frozen to constants (passed to ``optimize``), e.g. a sample rate.
        int_values: values to cycle through for integer inputs (e.g. ``sr``: 16000, 8000).
        scale: standard deviation of the random float inputs.
        description: one line for the table.
        data: ``(npz file in the cache, key)`` of real samples for a single-input model
            (calibration takes the first rows, evaluation the last); random when absent.
    """

    name: str
    file: str
    metric: str
    input_shapes: Mapping[str, Sequence[int]] | None = None
    freeze: Mapping[str, object] | None = None
    int_values: Mapping[str, Sequence[int]] = field(default_factory=dict)
    scale: float = 1.0
    description: str = ""
    data: tuple[str, str] | None = None

    def locate(self, search: Sequence[Path] = ()) -> Path | None:
        """The model file: an absolute path, else the cache, else the search folders."""
        if Path(self.file).is_absolute():
            return Path(self.file) if Path(self.file).is_file() else None
        found = models_cache.cached_model(self.file)
        if found is not None:
            return found
        for folder in search:
            if (Path(folder) / self.file).is_file():
                return Path(folder) / self.file
        return None


def _light(name: str, metric: str = "top1") -> ZooModel:
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    return ZooModel(f"light_{name}", str(path), metric,
                    description=f"onnx package light_{name} (real layers, synthetic weights)")


ZOO: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("zoo_vad_if", "zoo_vad_if.onnx", "cosine",
             int_values={"sr": (16000, 8000)}, scale=0.3,
             description="Silero-like VAD: If on int64 sr, conv encoder, LSTM state (onnx.helper)"),
    ZooModel("zoo_vit_tiny", "zoo_vit_tiny.onnx", "top1",
             description="ViT 2 layers dim 32, patch 8 on 32x32, class + saliency heads"),
    ZooModel("zoo_vit_dyn_tiny", "zoo_vit_dyn_tiny.onnx", "top1",
             description="the tiny ViT exported with a dynamic batch (shape arithmetic, "
                         "class token expanded to the batch)"),
    ZooModel("zoo_yolo_tiny", "zoo_yolo_tiny.onnx", "boxes",
             description="YOLOv8-style (C2f, Split, SPPF, Resize, Concat, DFL Softmax) 64x64"),
    ZooModel("zoo_crnn_tiny", "zoo_crnn_tiny.onnx", "ctc",
             description="CNN + bidirectional LSTM CTC reader 16x48"),
    ZooModel("zoo_crnn_unrolled_tiny", "zoo_crnn_unrolled_tiny.onnx", "ctc",
             description="CNN + step-by-step (unrolled) bidirectional LSTM CTC reader 16x48"),
    ZooModel("zoo_vit", "zoo_vit.onnx", "top1",
             description="ViT 4 layers dim 192, patch 16 on 64x64, class + saliency heads"),
    ZooModel("zoo_vit_s", "zoo_vit_s.onnx", "top1",
             description="ViT-S/16 at 224x224 (12 layers dim 384, 6 heads), dynamic batch"),
    ZooModel("zoo_yolo", "zoo_yolo.onnx", "boxes",
             description="YOLOv8n-style detector 128x128, 8 classes, DFL head"),
    ZooModel("zoo_crnn", "zoo_crnn.onnx", "ctc",
             description="CNN + bidirectional LSTM CTC reader 32x128, 37 classes"),
    ZooModel("zoo_crnn_unrolled", "zoo_crnn_unrolled.onnx", "ctc",
             description="CNN + unrolled bidirectional LSTM CTC reader 32x128, 37 classes"),
    ZooModel("silero_vad", "silero_vad.onnx", "cosine",
             input_shapes={"input": [1, 576], "state": [2, 1, 128]}, freeze={"sr": 16000},
             scale=0.3,
             description="Silero VAD as shipped by the silero-vad package (If, LSTM, int64 sr)"),
    ZooModel("ppocr_det", "ch_PP-OCRv4_det_infer.onnx", "cosine",
             input_shapes={"x": [1, 3, 64, 128]}, scale=1.0,
             description="PP-OCRv4 text detector (rapidocr-onnxruntime) at 64x128, text lines",
             data=("ocr_text.npz", "det")),
    ZooModel("ppocr_rec", "ch_PP-OCRv4_rec_infer.onnx", "ctc",
             input_shapes={"x": [1, 3, 48, 160]}, scale=1.0,
             description="PP-OCRv4 SVTR recognizer (rapidocr-onnxruntime) at 48x160, text lines",
             data=("ocr_text.npz", "rec")),
    ZooModel("ppocr_cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "top1",
             input_shapes={"x": [1, 3, 48, 192]}, scale=1.0,
             description="PP-OCR v2 text-angle classifier (rapidocr-onnxruntime)"),
    ZooModel("mobilenet_v2", "mobilenet_v2.onnx", "top1",
             description="torchvision MobileNetV2, ImageNet weights, photo crops",
             data=("imagenet_photos.npz", "x")),
    *[_light(n) for n in ("squeezenet", "bvlc_alexnet", "zfnet512", "vgg19", "resnet50",
                          "shufflenet", "inception_v1", "inception_v2")],
    _light("densenet121", "cosine"),
]}
"""Every zoo model by name; the tiny ones and the VAD are the CI subset."""

CI_MODELS = ("zoo_vad_if", "zoo_vit_tiny", "zoo_vit_dyn_tiny", "zoo_yolo_tiny", "zoo_crnn_tiny",
             "light_squeezenet")


# ------------------------------------------------------------------------- data


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def make_feeds(model: onnx.ModelProto, entry: ZooModel, count: int,
               seed: int, *, last: bool = False) -> list[dict[str, np.ndarray]]:
    """Samples for every (fixed-shape) input, of the input's own dtype.

    With the entry's real data: its first ``count`` rows (its last with ``last``, so
    calibration and evaluation samples are disjoint). Otherwise seeded: float inputs are normal
    with the entry's scale; integer inputs cycle through the entry's ``int_values`` (zeros when
    none are given); booleans are False.
    """
    from onnx.helper import tensor_dtype_to_np_dtype

    real = models_cache.cached_model(entry.data[0]) if entry.data else None
    if real is not None and entry.data is not None and len(_inputs(model)) == 1:
        with np.load(real) as npz:
            rows = npz[entry.data[1]]
        rows = rows[-count:] if last else rows[:count]
        name = _inputs(model)[0].name
        return [{name: np.ascontiguousarray(r[None])} for r in rows]
    rng = np.random.default_rng(seed)
    feeds = []
    for k in range(count):
        feed = {}
        for inp in _inputs(model):
            tt = inp.type.tensor_type
            dtype = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type))
            shape = [dim_size(d) or 1 for d in tt.shape.dim]
            if np.issubdtype(dtype, np.floating):
                feed[inp.name] = (rng.standard_normal(shape) * entry.scale).astype(dtype)
            elif dtype == np.bool_:
                feed[inp.name] = np.zeros(shape, dtype)
            else:
                values = entry.int_values.get(inp.name, (0,))
                feed[inp.name] = np.full(shape, values[k % len(values)], dtype)
        feeds.append(feed)
    return feeds


# ------------------------------------------------------------------------- metrics


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    noise = float(np.sum((ref - test) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (cx, cy, w, h) boxes, row by row."""
    def corners(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2, \
            x[:, 1] + x[:, 3] / 2
    ax1, ay1, ax2, ay2 = corners(a)
    bx1, by1, bx2, by2 = corners(b)
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = np.abs((ax2 - ax1) * (ay2 - ay1)) + np.abs((bx2 - bx1) * (by2 - by1)) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


def _ctc(logits: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding (blank 0) of ``[T, B, C]`` or ``[B, T, C]`` logits."""
    if logits.ndim == 3 and logits.shape[1] == 1 and logits.shape[0] != 1:
        logits = logits.transpose(1, 0, 2)
    out = []
    for row in logits.argmax(-1):
        seq, prev = [], -1
        for c in row.tolist():
            if c != prev and c != 0:
                seq.append(c)
            prev = c
        out.append(tuple(seq))
    return out


def agreement(metric: str, floats: list[list[np.ndarray]],
              npus: list[list[np.ndarray]]) -> tuple[float, str]:
    """The float-vs-NPU agreement of one model: (headline value, a readable detail).

    ``floats``/``npus`` hold, per sample, the outputs in graph-output order.
    """
    cos = min(_cosine(f, q) for fs, qs in zip(floats, npus, strict=True)
              for f, q in zip(fs, qs, strict=True))
    sqnr = min(_sqnr_db(f, q) for fs, qs in zip(floats, npus, strict=True)
               for f, q in zip(fs, qs, strict=True))
    common = f"min cosine {cos:.4f}, min SQNR {sqnr:.1f} dB"
    if metric == "top1":
        agree = float(np.mean([np.array_equal(f[0].reshape(len(f[0]), -1).argmax(-1),
                                              q[0].reshape(len(q[0]), -1).argmax(-1))
                               for f, q in zip(floats, npus, strict=True)]))
        return agree, f"top-1 agreement {agree:.3f}; {common}"
    if metric == "boxes":
        ious, same_cls, score_cos = [], [], []
        for f, q in zip(floats, npus, strict=True):
            fd, qd = f[0][0].T, q[0][0].T          # [anchors, 4 + nc]
            top = np.argsort(-fd[:, 4:].max(1))[:10]
            ious.append(_iou(fd[top, :4], qd[top, :4]))
            same_cls.append(fd[top, 4:].argmax(1) == qd[top, 4:].argmax(1))
            score_cos.append(_cosine(fd[:, 4:], qd[:, 4:]))
        iou, cls = np.concatenate(ious), np.concatenate(same_cls)
        matched = float(np.mean((iou >= 0.5) & cls))
        return matched, (f"box agreement (10 best float boxes: same class, IoU >= 0.5) "
                         f"{matched:.3f}, mean IoU {iou.mean():.3f}, class agreement "
                         f"{cls.mean():.3f}, class-score cosine {min(score_cos):.4f}; {common}")
    if metric == "ctc":
        same = float(np.mean([_ctc(f[0]) == _ctc(q[0])
                              for f, q in zip(floats, npus, strict=True)]))
        return same, f"decoded-string agreement {same:.3f}; {common}"
    return cos, common


# ------------------------------------------------------------------------- the pipeline


@dataclass
class ZooResult:
    """What one model on one preset did at each step, and what it measured."""

    model: str
    target: str
    steps: dict[str, str] = field(default_factory=dict)       # step -> "ok" or the error
    failed_step: str | None = None
    error: str | None = None            # an OrtNpuError's message (a clear, expected failure)
    crash: str | None = None            # any other exception: a defect
    mismatches: list[str] = field(default_factory=list)       # outputs that differ, per path
    cpu_evaluate: set[str] = field(default_factory=set)
    cpu_quantize: set[str] = field(default_factory=set)
    cpu_doc_strings: set[str] = field(default_factory=set)
    metric: float | None = None
    detail: str = ""
    seconds: float = 0.0
    compile_reports: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """Every step went through."""
        return self.failed_step is None

    @property
    def exact(self) -> bool:
        """The three execution paths agreed bit for bit (only meaningful when ``ran``)."""
        return self.ran and not self.mismatches

    @property
    def placement_agrees(self) -> bool:
        """evaluate's CPU nodes are quantize's (metadata and doc_strings alike)."""
        return self.cpu_evaluate == self.cpu_quantize == self.cpu_doc_strings

    def placement_diff(self) -> str:
        """A short description of where evaluate and quantize disagree."""
        only_e = sorted(self.cpu_evaluate - self.cpu_quantize)
        only_q = sorted(self.cpu_quantize - self.cpu_evaluate)
        meta_vs_doc = sorted(self.cpu_quantize ^ self.cpu_doc_strings)
        return (f"CPU only in evaluate: {len(only_e)} {only_e[:5]}; only in quantize: "
                f"{len(only_q)} {only_q[:5]}; metadata vs doc_string: {meta_vs_doc[:5]}")


def _step(result: ZooResult, name: str, fn: Callable[[], object]) -> object:
    """Run one step; record ok, an OrtNpuError, or any other exception (a crash)."""
    try:
        value = fn()
    except OrtNpuError as exc:
        result.steps[name] = f"{type(exc).__name__}: {exc}"
        result.failed_step, result.error = name, f"{type(exc).__name__}: {exc}"
        raise _StopError from None
    except Exception as exc:
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result.steps[name] = f"CRASH {tb}"
        result.failed_step, result.crash = name, tb
        raise _StopError from None
    result.steps[name] = "ok"
    return value


class _StopError(Exception):
    """A step failed; the pipeline stops there."""


def _run_all(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
             feeds: Iterable[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    return [list(run(feed)) for feed in feeds]


def _free_batch(model: onnx.ModelProto) -> bool:
    """True when every input of ``model`` has a dynamic axis 0 (a free batch)."""
    inputs = _inputs(model)
    return bool(inputs) and all(
        i.type.tensor_type.shape.dim and not dim_size(i.type.tensor_type.shape.dim[0])
        for i in inputs)


def run_pipeline(entry: ZooModel, target: str, *, search: Sequence[Path] = (),
                 calib_samples: int = 8, eval_samples: int = 3,
                 seed: int = 0) -> ZooResult:
    """optimize → evaluate → quantize → run (3 paths) → export, recording everything.

    Raises:
        FileNotFoundError: the model is not built (callers skip it).
    """
    import onnxruntime as ort

    import ortnpu
    from ortnpu.quant.quantizer import META_PLACEMENT, QuantizationResult

    path = entry.locate(search)
    if path is None:
        raise FileNotFoundError(f"{entry.file} is not built: run `python models/zoo.py`")
    result = ZooResult(entry.name, target)
    start = time.monotonic()
    try:
        model = _step(result, "load", lambda: onnx.load(str(path)))
        opt = _step(result, "optimize",
                    lambda: ortnpu.optimize(model, input_shapes=entry.input_shapes,
                                            freeze=entry.freeze))
        report = _step(result, "evaluate", lambda: ortnpu.evaluate(opt, target))
        result.cpu_evaluate = set(report.plan.cpu_nodes)
        calib = make_feeds(opt, entry, calib_samples, seed)
        feeds = make_feeds(opt, entry, eval_samples, seed + 1, last=True)
        placements = QuantizationResult()
        npu = _step(result, "quantize", lambda: ortnpu.quantize(
            opt, target, calib, optimize=False, result=placements))
        meta = {p.key: p.value for p in npu.metadata_props}
        result.cpu_quantize = {p["node"] for p in json.loads(meta.get(META_PLACEMENT, "[]"))
                               if p["device"] == "CPU"}
        result.cpu_doc_strings = {n.name for n in npu.graph.node
                                  if n.doc_string.startswith("CPU:")}
        out_names = [o.name for o in npu.graph.output]

        compiled: list[ortnpu.InferenceSession] = []   # the default session, for the batch run

        def run_paths() -> tuple[list, list]:
            sess = ortnpu.InferenceSession(npu)
            compiled.append(sess)
            result.compile_reports = [str(r) for r in getattr(sess, "compile_reports", [])]
            ref = ortnpu.InferenceSession(npu, fuse=False, native=False)
            return (_run_all(lambda f: sess.run(out_names, f), feeds),
                    _run_all(lambda f: ref.run(out_names, f), feeds))

        default_out, ref_out = _step(result, "run", run_paths)
        if _free_batch(npu) and len(feeds) > 1:
            # a dynamic batch: the samples in one batch give what they give one at a time
            stacked = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
            batched = _step(result, "run", lambda: compiled[0].run(out_names, stacked))
            for name, got, *per in zip(out_names, batched, *default_out, strict=True):
                if not np.array_equal(got, np.concatenate(per)):
                    result.mismatches.append(f"batched run {name!r}: {len(feeds)} samples in "
                                             "one batch differ from one at a time")

        def export_run() -> list:
            exported = ortnpu.export(npu, style="integer")
            stock = ort.InferenceSession(exported.SerializeToString(), quiet_session_options(),
                                         providers=["CPUExecutionProvider"])
            return _run_all(lambda f: stock.run(out_names, f), feeds)

        export_out = _step(result, "export", export_run)
    except _StopError:
        result.seconds = time.monotonic() - start
        return result
    for k in range(len(feeds)):
        for name, r, d, e in zip(out_names, ref_out[k], default_out[k], export_out[k],
                                 strict=True):
            for path_name, other in (("default session", d), ("integer export", e)):
                if other.dtype != r.dtype or not np.array_equal(other, r):
                    diff = (np.abs(other.astype(np.float64) - r.astype(np.float64)).max()
                            if other.shape == r.shape else "shape")
                    result.mismatches.append(f"{path_name} {name!r} sample {k}: max |diff| "
                                             f"{diff}")
    float_sess = ort.InferenceSession(opt.SerializeToString(), quiet_session_options(),
                                      providers=["CPUExecutionProvider"])
    float_out = _run_all(lambda f: float_sess.run(out_names, f), feeds)
    result.metric, result.detail = agreement(entry.metric, float_out, ref_out)
    result.seconds = time.monotonic() - start
    return result


# ------------------------------------------------------------------------- the table


def table(results: Sequence[ZooResult]) -> str:
    """A markdown table: per model and preset, the steps, exactness, placement, agreement."""
    lines = ["| model | target | steps | exact (3 paths) | placement evaluate = quantize "
             "(CPU nodes) | agreement with float | s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.ran:
            steps = "all ok"
        else:
            what = r.crash or r.error or ""
            kind = "CRASH" if r.crash else "error"
            steps = f"{r.failed_step}: {kind} {what[:90]}".replace("|", "/")
        exact = ("yes" if r.exact else f"NO ({len(r.mismatches)} outputs)") if r.ran else "-"
        if r.failed_step in (None, "run", "export"):
            same = "yes" if r.placement_agrees else "NO"
            place = f"{same} ({len(r.cpu_evaluate)} / {len(r.cpu_quantize)})"
        else:
            place = "-"
        agree = r.detail if r.metric is not None else "-"
        lines.append(f"| {r.model} | {r.target} | {steps} | {exact} | {place} | {agree} | "
                     f"{r.seconds:.0f} |")
    return "\n".join(lines)


def details(results: Sequence[ZooResult]) -> str:
    """Full messages behind the table: errors, mismatching outputs, placement differences."""
    lines = []
    for r in results:
        head = f"- {r.model} {r.target}:"
        if r.crash or r.error:
            lines.append(f"{head} {r.failed_step}: {r.crash or r.error}")
        if r.mismatches:
            lines.append(f"{head} not exact: {'; '.join(r.mismatches[:6])}")
        if r.failed_step in (None, "run", "export") and not r.placement_agrees:
            lines.append(f"{head} placement: {r.placement_diff()}")
    return "\n".join(lines)


def main(names: Sequence[str], targets: Sequence[str],
         search: Sequence[Path] = ()) -> list[ZooResult]:
    """Run the zoo and print the table (models that are not built are listed as skipped)."""
    results = []
    for name in names:
        entry = ZOO[name]
        if entry.locate(search) is None:
            print(f"# {name}: {entry.file} not built (python models/zoo.py); skipped",
                  flush=True)
            continue
        for target in targets:
            r = run_pipeline(entry, target, search=search)
            print(f"# {name} {target}: {r.failed_step or 'all steps'} "
                  f"{'ok' if r.ran else 'failed'}, {r.seconds:.1f} s", flush=True)
            results.append(r)
    print(table(results))
    print(details(results))
    return results


__all__ = [
    "CI_MODELS",
    "PRESETS",
    "ZOO",
    "ZooModel",
    "ZooResult",
    "agreement",
    "details",
    "main",
    "make_feeds",
    "run_pipeline",
    "table",
]
