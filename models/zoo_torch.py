"""The zoo's torch-built architectures: small, seeded, fixed-shape versions of real designs.

Each class reproduces the op structure of a real network family (not its trained weights):
what matters to ortnpu is which ONNX ops appear, in which arrangement, and at which shapes.
The weights are torch's default initialisation under a fixed seed, with BatchNorm statistics
set to seeded non-trivial values so folding is exercised. ``ortnpu.from_torch`` exports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# ---------------------------------------------------------------- ViT (ViT-S-like, tiny)


class Attention(nn.Module):
    """Multi-head self-attention written out (qkv Linear, MatMul, Softmax, MatMul, proj)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: LayerNorm, attention, LayerNorm, GELU MLP, residual Adds."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Vision transformer: Conv patch embedding, class token, position embedding, blocks,
    final LayerNorm, a classifier head on the class token and a sigmoid saliency map on the
    patch tokens (the two kinds of head real ViT deployments carry)."""

    def __init__(self, image: int = 64, patch: int = 16, dim: int = 192, depth: int = 4,
                 heads: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.grid = image // patch
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.saliency = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        logits = self.head(x[:, 0])
        sal = torch.sigmoid(self.saliency(x[:, 1:])).reshape(b, 1, self.grid, self.grid)
        return logits, sal


# ---------------------------------------------------------------- YOLOv8-style detector


class ConvBnSiLU(nn.Module):
    """YOLOv8's Conv: Conv (no bias) + BatchNorm + SiLU (exported as Sigmoid and Mul)."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 convs with a residual Add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(c, c, 3)
        self.cv2 = ConvBnSiLU(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 conv, Split in two, a chain of bottlenecks, Concat of all, 1x1."""

    def __init__(self, cin: int, cout: int, n: int = 1) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBnSiLU(cin, 2 * self.c)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, cout)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 MaxPools, Concat, 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(cin, cin // 2)
        self.cv2 = ConvBnSiLU(cin * 2, cout)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class DFL(nn.Module):
    """Distribution focal loss decoding: Softmax over 16 bins, then their expectation (a
    1x1 Conv with weights 0..15), as YOLOv8 exports it."""

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        x = x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)
        return self.conv(x).view(b, 4, a)


class YoloDetector(nn.Module):
    """YOLOv8n-like: C2f backbone, SPPF, FPN/PAN neck (Upsample=Resize, Concat), decoupled
    head per level, DFL box decoding and sigmoid class scores; output ``[1, 4 + nc, anchors]``
    with boxes as (cx, cy, w, h) in pixels, like the exported ultralytics model."""

    def __init__(self, image: int = 128, nc: int = 8, w: int = 16, bins: int = 16) -> None:
        super().__init__()
        self.nc, self.bins = nc, bins
        self.stem = ConvBnSiLU(3, w, 3, 2)                                     # /2
        self.d1 = nn.Sequential(ConvBnSiLU(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))      # /4
        self.d2 = nn.Sequential(ConvBnSiLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))  # /8  P3
        self.d3 = nn.Sequential(ConvBnSiLU(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w))  # /16 P4
        self.d4 = nn.Sequential(ConvBnSiLU(8 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w),
                                SPPF(8 * w, 8 * w))                               # /32 P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = C2f(16 * w, 8 * w)
        self.n2 = C2f(12 * w, 4 * w)
        self.down1 = ConvBnSiLU(4 * w, 4 * w, 3, 2)
        self.n3 = C2f(12 * w, 8 * w)
        self.down2 = ConvBnSiLU(8 * w, 8 * w, 3, 2)
        self.n4 = C2f(16 * w, 8 * w)
        chans = (4 * w, 8 * w, 8 * w)
        self.box = nn.ModuleList(nn.Sequential(ConvBnSiLU(c, 4 * w, 3), ConvBnSiLU(4 * w, 4 * w, 3),
                                               nn.Conv2d(4 * w, 4 * bins, 1)) for c in chans)
        self.cls = nn.ModuleList(nn.Sequential(ConvBnSiLU(c, 4 * w, 3), ConvBnSiLU(4 * w, 4 * w, 3),
                                               nn.Conv2d(4 * w, nc, 1)) for c in chans)
        self.dfl = DFL(bins)
        anchors, strides = [], []
        for stride in (8, 16, 32):
            g = image // stride
            ys, xs = torch.meshgrid(torch.arange(g) + 0.5, torch.arange(g) + 0.5, indexing="ij")
            anchors.append(torch.stack([xs.flatten(), ys.flatten()]))
            strides.append(torch.full((1, g * g), float(stride)))
        self.register_buffer("anchors", torch.cat(anchors, 1).unsqueeze(0))
        self.register_buffer("strides", torch.cat(strides, 1).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.d2(self.d1(self.stem(x)))
        p4 = self.d3(p3)
        p5 = self.d4(p4)
        t4 = self.n1(torch.cat([self.up(p5), p4], 1))
        o3 = self.n2(torch.cat([self.up(t4), p3], 1))
        o4 = self.n3(torch.cat([self.down1(o3), t4], 1))
        o5 = self.n4(torch.cat([self.down2(o4), p5], 1))
        b = x.shape[0]
        feats = [torch.cat([self.box[i](f), self.cls[i](f)], 1).view(b, 4 * self.bins + self.nc, -1)
                 for i, f in enumerate((o3, o4, o5))]
        y = torch.cat(feats, 2)
        box, cls = y.split((4 * self.bins, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((xywh, cls.sigmoid()), 1)


# ---------------------------------------------------------------- CRNN (CNN + BiLSTM, CTC)


class UnrolledBiLSTM(nn.Module):
    """A bidirectional LSTM written step by step, as many exporters emit it: per time step a
    Gather of the input column, Linear layers for the gates, Split, Sigmoid/Tanh, Mul, Add."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fw_x, self.fw_h = nn.Linear(cin, 4 * hidden), nn.Linear(hidden, 4 * hidden)
        self.bw_x, self.bw_h = nn.Linear(cin, 4 * hidden), nn.Linear(hidden, 4 * hidden)

    def _step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, lin_x: nn.Linear,
              lin_h: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = (lin_x(x) + lin_h(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, seq: torch.Tensor) -> tuple[torch.Tensor, None]:
        steps, batch = seq.shape[0], seq.shape[1]
        zeros = seq.new_zeros(batch, self.hidden)
        h, c, fw = zeros, zeros, []
        for t in range(steps):
            h, c = self._step(seq[t], h, c, self.fw_x, self.fw_h)
            fw.append(h)
        h, c, bw = zeros, zeros, []
        for t in reversed(range(steps)):
            h, c = self._step(seq[t], h, c, self.bw_x, self.bw_h)
            bw.append(h)
        bw.reverse()
        return torch.stack([torch.cat([a, b], 1) for a, b in zip(fw, bw, strict=True)]), None


class CRNN(nn.Module):
    """Text-line reader: VGG-ish conv stack squeezing the height to 1, a bidirectional LSTM
    over the width (the ONNX ``LSTM`` op, or unrolled step by step), and a per-column Linear
    over the alphabet (+ CTC blank at index 0)."""

    def __init__(self, height: int = 32, classes: int = 37, hidden: int = 48,
                 unrolled: bool = False) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.MaxPool2d(pool, pool)]

        self.cnn = nn.Sequential(*block(1, 16, (2, 2)), *block(16, 32, (2, 2)),
                                 *block(32, 64, (2, 1)), *block(64, 64, (2, 1)))
        self.collapse = nn.Conv2d(64, 64, (height // 16, 1))
        self.rnn: nn.Module = (UnrolledBiLSTM(64, hidden) if unrolled
                               else nn.LSTM(64, hidden, bidirectional=True))
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.collapse(self.cnn(x)).squeeze(2).permute(2, 0, 1)   # [T, B, C]
        y, _ = self.rnn(f)
        return self.fc(y)                                            # [T, B, classes]


# ---------------------------------------------------------------- registry


def _seed_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm trained-looking statistics (folding must use them)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


@dataclass(frozen=True)
class TorchEntry:
    """How to make one torch zoo model: constructor, example input shape, ONNX names."""

    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    #: exported with a dynamic batch axis (the reshape targets computed from Shape at run
    #: time, as deployment exports write them)
    dynamic_batch: bool = False


TORCH_MODELS: dict[str, TorchEntry] = {
    "zoo_vit": TorchEntry(ViT, (1, 3, 64, 64), ("image",), ("logits", "saliency")),
    # ViT-S/16 at 224 (the size issue 15's speed table asks for), dynamic batch
    "zoo_vit_s": TorchEntry(lambda: ViT(image=224, patch=16, dim=384, depth=12, heads=6,
                                        classes=1000),
                            (1, 3, 224, 224), ("image",), ("logits", "saliency"),
                            dynamic_batch=True),
    "zoo_yolo": TorchEntry(YoloDetector, (1, 3, 128, 128), ("image",), ("detections",)),
    "zoo_crnn": TorchEntry(CRNN, (1, 1, 32, 128), ("image",), ("logits",)),
    "zoo_crnn_unrolled": TorchEntry(lambda: CRNN(unrolled=True), (1, 1, 32, 128), ("image",),
                                    ("logits",)),
    # CI-sized variants of the same code (kilobytes, built in a second)
    "zoo_vit_tiny": TorchEntry(lambda: ViT(image=32, patch=8, dim=32, depth=2, heads=2),
                               (1, 3, 32, 32), ("image",), ("logits", "saliency")),
    "zoo_vit_dyn_tiny": TorchEntry(lambda: ViT(image=32, patch=8, dim=32, depth=2, heads=2),
                                   (1, 3, 32, 32), ("image",), ("logits", "saliency"),
                                   dynamic_batch=True),
    "zoo_yolo_tiny": TorchEntry(lambda: YoloDetector(image=64, nc=4, w=4),
                                (1, 3, 64, 64), ("image",), ("detections",)),
    "zoo_crnn_tiny": TorchEntry(lambda: CRNN(height=16, classes=11, hidden=16),
                                (1, 1, 16, 48), ("image",), ("logits",)),
    "zoo_crnn_unrolled_tiny": TorchEntry(
        lambda: CRNN(height=16, classes=11, hidden=16, unrolled=True),
        (1, 1, 16, 48), ("image",), ("logits",)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The seeded eval-mode module and its example input."""
    entry = TORCH_MODELS[name]
    torch.manual_seed(seed)
    module = entry.make()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        _seed_batchnorm(module, gen)
    module.eval()
    example = torch.randn(*entry.input_shape, generator=gen)
    assert math.prod(entry.input_shape) > 0
    return module, example
