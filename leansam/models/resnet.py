"""ResNet image encoders: the default model's CNN with a light FPN neck, and NanoSAM's ResNet-18.

NanoSAM distils SAM into a ResNet-18 image encoder; :class:`ResNetEncoder` is that idea,
written from scratch (no torchvision): a stem (stride 4), four stages of basic residual
blocks (strides 4, 8, 16, 32), and a neck that projects stages 2..4 to ``neck_dim``
channels, upsamples them to the output stride, sums them, and maps the sum to
``out_chans`` (the decoder's width) with two 3x3 convolutions.

Shapes: input B x 3 x S x S (normalised, padded) -> B x out_chans x S/out_stride x S/out_stride.
With the leansam_tiny pipeline S = 256, out_stride = 16: a 16 x 16 x 128 embedding, 64 x 64
low-res masks, a 256 prompt frame.

:class:`NanoSamEncoder` is NanoSAM's image encoder (timm ``resnet18`` features, ``up_1``/``proj``
neck, learned position embedding): B x 3 x 1024 x 1024 -> B x 256 x 64 x 64.

The models built from them live in ``leansam/zoo/default.py`` and ``leansam/zoo/nanosam.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


def check_stages(name: str, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
    """Raises ``ValueError`` unless there are 4 stages of positive width and at least one block."""
    if len(widths) != 4 or len(depths) != 4:
        raise ValueError(f"{name}: widths and depths need 4 entries (one per stage)")
    if any(int(w) <= 0 for w in widths) or any(int(d) < 1 for d in depths):
        raise ValueError(f"{name}: widths must be > 0 and depths >= 1")


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of a :class:`ResNetEncoder`.

    Attributes:
        widths: channels of the four stages (ResNet-18: 64, 128, 256, 512).
        depths: basic blocks per stage (ResNet-18: 2, 2, 2, 2).
        stem_width: channels of the stride-4 stem.
        neck_dim: width of the FPN neck.
        out_chans: channels of the output embedding (the mask decoder's width).
        out_stride: stride of the output grid: 8 or 16 (stages below it are upsampled to it).
    """

    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    stem_width: int = 32
    neck_dim: int = 128
    out_chans: int = 256
    out_stride: int = 8

    def __post_init__(self) -> None:
        check_stages("ResNetConfig", self.widths, self.depths)
        if self.stem_width <= 0 or self.neck_dim <= 0 or self.out_chans <= 0:
            raise ValueError("ResNetConfig: stem_width, neck_dim and out_chans must be positive")
        if self.out_stride not in (8, 16):
            raise ValueError(f"ResNetConfig: out_stride must be 8 or 16, not {self.out_stride}")

    def to_dict(self) -> dict:
        return asdict(self)


#: ResNet-18 (NanoSAM's student) with an FPN neck.
RESNET18 = ResNetConfig()
#: Teacher of the bundled default model: ResNet-18 at half width.
TINY_TEACHER = ResNetConfig(
    widths=(32, 64, 128, 256), depths=(2, 2, 2, 2), stem_width=32, neck_dim=96, out_chans=128, out_stride=16
)
#: The bundled default student: one block per stage, quarter width.
TINY_STUDENT = ResNetConfig(
    widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), stem_width=16, neck_dim=64, out_chans=128, out_stride=16
)

PRESETS: dict[str, ResNetConfig] = {
    "resnet18": RESNET18,
    "tiny_teacher": TINY_TEACHER,
    "tiny_student": TINY_STUDENT,
}


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, ReLU, identity (or 1x1 stride-s) shortcut.

    ``mid``: channels between the two convolutions (default ``cout``; pruned blocks narrow it).
    """

    def __init__(self, cin: int, cout: int, stride: int, mid: int | None = None) -> None:
        super().__init__()
        mid = cout if mid is None else mid
        self.conv1 = _conv_bn(cin, mid, 3, stride)
        self.conv2 = _conv_bn(mid, cout, 3, 1)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


def resnet_trunk(
    stem_width: int,
    widths: tuple[int, ...],
    depths: tuple[int, ...],
    mids: tuple[tuple[int, ...], ...] | None = None,
) -> tuple[nn.Sequential, nn.ModuleList]:
    """The stride-4 stem (two conv-BN-ReLU) and four stages of basic blocks (strides 4, 8, 16, 32).

    ``mids[i][j]``: inner width of block j of stage i (None: every block's output width).
    """
    stem = nn.Sequential(
        _conv_bn(3, stem_width, 3, 2), nn.ReLU(), _conv_bn(stem_width, widths[0], 3, 2), nn.ReLU()
    )
    stages, cin = [], widths[0]
    for i, (w, d) in enumerate(zip(widths, depths)):
        m = mids[i] if mids is not None else (w,) * d
        blocks = [BasicBlock(cin, w, 1 if i == 0 else 2, m[0])]
        blocks += [BasicBlock(w, w, 1, m[j]) for j in range(1, d)]
        stages.append(nn.Sequential(*blocks))
        cin = w
    return stem, nn.ModuleList(stages)


class ResNetEncoder(nn.Module):
    """ResNet-style image encoder with an FPN neck (see module docstring).

    Args:
        config: a :class:`ResNetConfig`.
    """

    def __init__(self, config: ResNetConfig = RESNET18) -> None:
        super().__init__()
        c = config
        self.config = c
        self.stem, self.stages = resnet_trunk(c.stem_width, c.widths, c.depths)
        first = 1 if c.out_stride == 8 else 2  # stage index whose stride equals out_stride
        self._first = first
        self.lateral = nn.ModuleList(nn.Conv2d(c.widths[i], c.neck_dim, 1) for i in range(first, 4))
        self.head = nn.Sequential(
            nn.Conv2d(c.neck_dim, c.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(c.out_chans),
            nn.GELU(),
            nn.Conv2d(c.out_chans, c.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(c.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S -> B x out_chans x S/out_stride x S/out_stride."""
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        used = feats[self._first :]
        size = used[0].shape[-2:]
        y = self.lateral[0](used[0])
        for lat, f in zip(self.lateral[1:], used[1:]):
            y = y + F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
        return self.head(y)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier (timm ``features_only``; last level used).

    B x 3 x S x S -> B x 512 x S/32 x S/32. 7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages of
    two basic blocks (leansam's :class:`BasicBlock`, the same arithmetic
    and parameter count as torchvision's / timm's).
    """

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class NanoSamEncoder(nn.Module):
    """NanoSAM's image encoder: B x 3 x 1024 x 1024 (normalised, padded) -> B x 256 x 64 x 64.

    ResNet-18 (stride 32), then ``up_1`` (three 3x3 conv + GELU, one stride-2 transposed conv to
    stride 16), ``proj`` (3x3 conv, GELU, 1x1 conv) and a learned position embedding added to the output.
    """

    def __init__(self, feature_dim: int = 256, neck_channels: int = 256, grid: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet18Trunk()
        gelu = nn.GELU
        self.up_1 = nn.Sequential(
            nn.Conv2d(512, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.ConvTranspose2d(neck_channels, neck_channels, 3, 2, 1, 1),
            gelu(),
        )
        self.proj = nn.Sequential(
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, feature_dim, 1),
        )
        self.pos_embedding = nn.Parameter(torch.zeros(1, feature_dim, grid, grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.up_1(self.backbone(x))) + self.pos_embedding
