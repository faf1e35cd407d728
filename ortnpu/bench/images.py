"""Two disjoint sources of ImageNet-style crops: scikit-image photos and Debian's wallpapers.

Calibrating and evaluating on crops of the same few photos flatters every quantizer, so the
accuracy benchmark calibrates on one source (the scikit-image photos that
``models/mobilenet_v2.py`` cut into crops) and evaluates on another: the desktop background
pictures of Debian's ``gnome-backgrounds mate-backgrounds lomiri-wallpapers
plasma-workspace-wallpapers`` packages (photos and artwork, no labels). Nothing is downloaded: a
missing source is reported by :class:`MissingSourceError` with the command that installs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
WALLPAPER_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
WALLPAPER_PACKAGES = ("gnome-backgrounds mate-backgrounds lomiri-wallpapers "
                      "plasma-workspace-wallpapers")
RASTER = {".jpg", ".jpeg", ".png", ".webp"}
#: short sides the pictures are resized to before cropping (256 is the usual resize-then-crop)
SHORT_SIDES = (256, 320, 448)
SIZE = 224


class MissingSourceError(Exception):
    """An image source is not installed; the message says how to install it."""


def wallpaper_files(dirs: tuple[Path, ...] = WALLPAPER_DIRS) -> list[Path]:
    """One file per distinct picture (a KDE wallpaper ships one picture at many sizes: the
    largest file of each ``contents/images*`` folder stands for it)."""
    best: dict[Path, Path] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in RASTER or not path.is_file():
                continue
            key = path.parent if "contents" in path.parts else path
            if key not in best or path.stat().st_size > best[key].stat().st_size:
                best[key] = path
    return sorted(best.values())


def _crops_of(img: np.ndarray) -> list[np.ndarray]:
    """224x224 crops at several scales and positions (start, middle, end of each axis)."""
    from PIL import Image

    h, w = img.shape[:2]
    out: list[np.ndarray] = []
    for side in SHORT_SIDES:
        scale = side / min(h, w)
        nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
        scaled = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR,
                                                        reducing_gap=3.0))
        seen: set[tuple[int, int]] = set()
        for fy in (0.0, 0.5, 1.0):
            for fx in (0.0, 0.5, 1.0):
                top, left = round((nh - SIZE) * fy), round((nw - SIZE) * fx)
                if (top, left) not in seen:
                    seen.add((top, left))
                    out.append(scaled[top:top + SIZE, left:left + SIZE])
    return out


def normalise(crops: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB crops -> float32 NCHW, ImageNet mean/std normalised."""
    x = (crops.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def wallpaper_crops(limit: int = 1200, cache: Path | None = None) -> np.ndarray:
    """Up to ``limit`` uint8 NHWC crops of the wallpapers, spread evenly over every picture.

    Decoding ~100 large pictures takes a minute, so the crops are cached (``cache``, keyed by
    the file list and ``limit``).
    """
    files = wallpaper_files()
    if not files:
        raise MissingSourceError("no desktop background pictures under "
                            f"{', '.join(map(str, WALLPAPER_DIRS))}: "
                            f"`apt-get install {WALLPAPER_PACKAGES}`")
    try:
        from PIL import Image
    except ImportError:
        raise MissingSourceError("decoding the wallpapers needs Pillow: "
                            "`pip install 'ortnpu[images]'`") from None
    key = f"{len(files)}-{sum(p.stat().st_size for p in files)}-{limit}"
    if cache is not None and cache.is_file():
        with np.load(cache) as f:
            if str(f["key"]) == key:
                return f["crops"]
    per_file: list[list[np.ndarray]] = []
    for path in files:
        with Image.open(path) as im:
            im.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced size, much faster
            img = np.asarray(im.convert("RGB"))
        per_file.append(_crops_of(img))
    # round-robin over pictures so a limit keeps every picture represented
    crops: list[np.ndarray] = []
    depth = 0
    while len(crops) < limit and any(depth < len(c) for c in per_file):
        crops += [c[depth] for c in per_file if depth < len(c)]
        depth += 1
    out = np.stack(crops[:limit])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, crops=out, key=np.array(key))
    return out
