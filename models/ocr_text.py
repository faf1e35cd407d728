"""Render text-line images for PP-OCR det/rec into ``ocr_text.npz`` in the model cache.

The zoo scores PP-OCR on real inputs, not noise: on noise the detector's map is all but zero
(float max 1e-4 on photo crops too) and the recognizer reads nothing, so an agreement figure
says nothing. Each sample is a word or two of Pillow's default FreeType font, dark on a light
background with a little noise, preprocessed as PaddleOCR does:

- ``det`` ``[48, 3, 64, 128]``: one or two lines, ImageNet mean/std (DB detector);
- ``rec`` ``[48, 3, 48, 160]``: one line filling about half the height, ``(x - 0.5) / 0.5``.

Seeded, so the file is the same on every machine with the same Pillow. Needs Pillow.

Run: ``python models/ocr_text.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache

WORDS = ("ortnpu", "Hello world", "NPU 2026", "int8 scale", "Concat", "DETECT", "text line",
         "PP-OCRv4", "quantize", "float32", "cosine 0.99", "SVTR rec", "12:45 PM", "Berlin",
         "Total: 42.50", "invoice", "zoo model", "ONNX", "Softmax", "sigmoid")
SAMPLES = 48


def render(h: int, w: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """One ``[h, w]`` grey image in [0, 1]: dark words on a light background."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (w, h), int(rng.integers(200, 256)))
    fg = int(rng.integers(0, 70))
    draw = ImageDraw.Draw(img)
    lines = 1 if h <= 48 else int(rng.integers(1, 3))
    for j in range(lines):
        size = int(rng.integers(int(h * 0.45), int(h * 0.7))) if lines == 1 else \
            int(rng.integers(14, 22))
        y = (h - size) // 2 if lines == 1 else 4 + j * (h // 2)
        draw.text((int(rng.integers(2, 12)), y), WORDS[(k + 7 * j) % len(WORDS)], fill=fg,
                  font=ImageFont.load_default(size=size))
    grey = np.asarray(img, np.float32) / 255.0 + rng.normal(0, 0.02, (h, w))
    return np.clip(grey, 0, 1).astype(np.float32)


def batch(h: int, w: int, seed: int, mean: tuple[float, ...], std: tuple[float, ...]
          ) -> np.ndarray:
    """``SAMPLES`` rendered RGB images ``[n, 3, h, w]``, normalized with ``mean``/``std``."""
    rng = np.random.default_rng(seed)
    x = np.stack([np.stack([render(h, w, k, rng)] * 3) for k in range(SAMPLES)])
    m = np.array(mean, np.float32)[:, None, None]
    s = np.array(std, np.float32)[:, None, None]
    return ((x - m) / s).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Write ``ocr_text.npz`` unless it is there (``--force`` rewrites it)."""
    args = _cache.parse_args(__doc__.splitlines()[0], argv)
    path = _cache.output_dir(args) / "ocr_text.npz"
    if _cache.up_to_date([path], args.force):
        return 0
    det = batch(64, 128, 0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rec = batch(48, 160, 1, (0.5,) * 3, (0.5,) * 3)
    np.savez_compressed(path, det=det, rec=rec, words=np.array(WORDS))
    print(f"wrote {path}: det {det.shape}, rec {rec.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
