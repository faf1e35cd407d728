"""Build the model zoo (``ortnpu.bench.zoo``) into the model cache.

- ``zoo_vit``, ``zoo_yolo``, ``zoo_crnn``, ``zoo_crnn_unrolled`` and their ``_tiny`` CI variants:
  seeded torch modules (``models/zoo_torch.py``) exported through ``ortnpu.from_torch`` (fixed
  shapes, opset 17, not yet optimized: that is the pipeline's first step); each export is
  checked against torch. ``zoo_vit_s`` (ViT-S/16 at 224) and ``zoo_vit_dyn_tiny`` are exported
  with a dynamic batch, as deployment exports are.
- ``zoo_vad_if``: the Silero-like VAD with ``If`` subgraphs, written with onnx.helper (no torch).
- ``silero_vad.onnx``: copied from the ``silero-vad`` package when it is installed
  (``pip install --no-deps silero-vad``).
- PP-OCR and MobileNetV2 have their own scripts (``ppocr.py``, ``mobilenet_v2.py``).

Needs torch and ortnpu in the venv for the torch models (``pip install torch==2.13.0 .``).
``--ci`` builds only the CI subset (tiny models and the VAD), e.g. into ``tests/data/zoo``.

Run: ``python models/zoo.py [--force] [--out DIR] [--ci]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache
import zoo_graphs

CI = ("zoo_vad_if", "zoo_vit_tiny", "zoo_vit_dyn_tiny", "zoo_yolo_tiny", "zoo_crnn_tiny",
      "zoo_crnn_unrolled_tiny")
FULL = ("zoo_vit", "zoo_vit_s", "zoo_yolo", "zoo_crnn", "zoo_crnn_unrolled")


def build_torch(name: str, path: Path) -> None:
    """Export one torch zoo model with ortnpu.from_torch and check it against torch."""
    import torch
    import zoo_torch

    import ortnpu

    entry = zoo_torch.TORCH_MODELS[name]
    module, example = zoo_torch.build(name)
    # the raw export (optimize=False): the zoo pipeline's own optimize step then does the
    # folding, and the cached file stays small (no per-step weight copies in unrolled LSTMs)
    model = ortnpu.from_torch(module, example, input_names=entry.input_names,
                              output_names=entry.output_names, optimize=False,
                              dynamic_batch=entry.dynamic_batch)
    model.producer_name = "ortnpu-models"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    with torch.no_grad():
        ref = module(example)
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {entry.input_names[0]: example.numpy()})
    err = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, ref, strict=True))
    if entry.dynamic_batch:   # a batch of two other samples runs too
        pair = torch.cat([example, -example])
        with torch.no_grad():
            ref2 = module(pair)
        ref2 = ref2 if isinstance(ref2, tuple) else (ref2,)
        outs2 = sess.run(None, {entry.input_names[0]: pair.numpy()})
        err = max(err, *(float(np.abs(o - r.numpy()).max())
                         for o, r in zip(outs2, ref2, strict=True)))
    if err > 1e-3:
        raise SystemExit(f"error: {name}: onnxruntime differs from torch by {err}")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB), max |ort - torch| {err:.1e}")


def copy_silero(path: Path) -> bool:
    """Copy the VAD shipped by ``silero-vad`` (MIT); False when the package is absent."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        print("silero-vad not installed (pip install --no-deps silero-vad): silero_vad skipped")
        return False
    for folder in spec.submodule_search_locations:
        src = Path(folder) / "data" / "silero_vad.onnx"
        if src.is_file():
            shutil.copyfile(src, path)
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) from {src}")
            return True
    print("silero-vad has no data/silero_vad.onnx: skipped")
    return False


def main(argv: list[str] | None = None) -> int:
    """Build what is missing (everything with ``--force``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: cache)")
    parser.add_argument("--ci", action="store_true", help="only the CI subset")
    args = parser.parse_args(argv)
    out = _cache.output_dir(args)
    names = CI if args.ci else CI + FULL
    for name in names:
        path = out / f"{name}.onnx"
        if path.is_file() and not args.force:
            print(f"already built: {path}")
            continue
        if name in zoo_graphs.BUILDERS:
            onnx.save(zoo_graphs.BUILDERS[name](), str(path))
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
        else:
            build_torch(name, path)
    if not args.ci and (args.force or not (out / "silero_vad.onnx").is_file()):
        copy_silero(out / "silero_vad.onnx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
