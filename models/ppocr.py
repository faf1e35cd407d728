"""Copy the PP-OCR ONNX models shipped by ``rapidocr-onnxruntime`` into the model cache.

Text detection (DB, with HardSigmoid, Resize, ConvTranspose), recognition (SVTR: convolutions
plus transformer parts: MatMul, Softmax, LayerNorm pieces) and the angle classifier are real
production models whose ops a typical NPU does not all run: the partitioner's test bench.
The files are copied unchanged (their input shapes stay dynamic). No torch needed.

Run: ``python models/ppocr.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache

PACKAGE = "rapidocr_onnxruntime"
FILES = (
    "ch_PP-OCRv4_det_infer.onnx",
    "ch_PP-OCRv4_rec_infer.onnx",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx",
)


def package_models_dir() -> Path:
    """Find the ``models`` folder inside the installed package without importing it.

    Importing ``rapidocr_onnxruntime`` would load OpenCV and friends just to locate data files.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        print(f"error: {PACKAGE} is not installed: `pip install rapidocr-onnxruntime`")
        raise SystemExit(1)
    for folder in spec.submodule_search_locations:
        if (Path(folder) / "models" / FILES[0]).is_file():
            return Path(folder) / "models"
    print(f"error: {PACKAGE} has no models/{FILES[0]} (a different version?)")
    raise SystemExit(1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe(path: Path) -> str:
    """One line per model: inputs, outputs and its op types, to see what partitioning faces."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = ", ".join(f"{i.name} {i.shape}" for i in sess.get_inputs())
    outs = ", ".join(f"{o.name} {o.shape}" for o in sess.get_outputs())
    model = onnx.load(str(path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    ops = Counter(n.op_type for n in model.graph.node)
    op_list = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
    return f"    opset {opset}; in: {ins}; out: {outs}\n    ops: {op_list}"


def main(argv: list[str] | None = None) -> int:
    """Copy the three models (verifying the copies) and describe them."""
    args = _cache.parse_args(__doc__.splitlines()[0], argv)
    out = _cache.output_dir(args)
    targets = [out / name for name in FILES]
    if _cache.up_to_date(targets, args.force):
        return 0
    src_dir = package_models_dir()
    for name, dst in zip(FILES, targets, strict=True):
        src = src_dir / name
        shutil.copyfile(src, dst)
        if _sha256(src) != _sha256(dst):
            print(f"error: copy of {src} is corrupt")
            return 1
        onnx.checker.check_model(str(dst))
        print(f"wrote {dst}  ({dst.stat().st_size / 1e6:.2f} MB)")
        print(describe(dst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
