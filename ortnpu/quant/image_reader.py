"""Calibration data from a folder of images, with a small preprocessing spec.

The CLI calibrates from a folder of photos like the vendor toolchains do. Images are decoded
with Pillow (``pip install "ortnpu[images]"``); ``.npy`` files (one sample each, already
preprocessed) need nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortnpu.errors import CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes a model input.

    ``x = (pixels / scale - mean) / std`` per channel after resizing to ``size`` (height, width);
    ``layout`` NCHW or NHWC; ``channels`` 1 (grayscale) or 3 (RGB).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 255.0
    layout: str = "NCHW"
    channels: int = 3

    @classmethod
    def parse(cls, spec: str) -> Preprocess:
        """Parse ``"size=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225;layout=NCHW"``."""
        values: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            key, _, raw = part.partition("=")
            key = key.strip()
            try:
                if key in ("size", "mean", "std"):
                    nums = tuple(float(v) for v in raw.split(","))
                    values[key] = tuple(int(v) for v in nums) if key == "size" else nums
                elif key in ("scale",):
                    values[key] = float(raw)
                elif key == "channels":
                    values[key] = int(raw)
                elif key == "layout":
                    values[key] = raw.strip().upper()
                else:
                    raise CalibrationError(f"preprocessing spec: unknown key {key!r}; use size, "
                                           "mean, std, scale, layout, channels")
            except ValueError:
                raise CalibrationError(f"preprocessing spec: bad value {raw!r} for {key!r}") \
                    from None
        p = cls(**values)  # type: ignore[arg-type]
        if p.layout not in ("NCHW", "NHWC") or p.channels not in (1, 3) or len(p.size) != 2:
            raise CalibrationError(f"preprocessing spec {spec!r}: layout must be NCHW or NHWC, "
                                   "channels 1 or 3, size H,W")
        return p

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """[H, W, C] uint8 (already resized) → one float32 sample [1, ...] in ``layout``."""
        x = rgb.astype(np.float32) / self.scale
        mean = np.asarray(self.mean[: self.channels], np.float32)
        std = np.asarray(self.std[: self.channels], np.float32)
        x = (x - mean) / std
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None])


class ImageFolderReader:
    """A ``CalibrationDataReader`` over the images (or ``.npy`` samples) of a folder."""

    def __init__(self, folder: str | Path, input_name: str, preprocess: Preprocess | None = None,
                 limit: int | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CalibrationError(f"{self.folder}: not a folder of calibration images")
        files = sorted(p for p in self.folder.rglob("*")
                       if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy"))
        if not files:
            raise CalibrationError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) or "
                                   ".npy files found")
        self.files = files[:limit] if limit else files
        self.input_name = input_name
        self.preprocess = preprocess or Preprocess()
        self._next = 0

    def __len__(self) -> int:
        return len(self.files)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        return {self.input_name: self._load(path)}

    def rewind(self) -> None:
        self._next = 0

    def _load(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".npy":
            x = np.load(path).astype(np.float32)
            return x if x.ndim == 4 else x[None]
        try:
            from PIL import Image
        except ImportError:
            raise CalibrationError("decoding images needs Pillow: pip install 'ortnpu[images]' "
                                   "(or give preprocessed .npy files)") from None
        try:
            with Image.open(path) as img:
                mode = "RGB" if self.preprocess.channels == 3 else "L"
                h, w = self.preprocess.size
                img = img.convert(mode).resize((w, h), Image.BILINEAR)
                arr = np.asarray(img)
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot decode the image: {exc}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return self.preprocess.apply(arr)
