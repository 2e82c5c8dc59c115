"""RepViT image encoders: RepViT-SAM (RepViT-M2.3) and EdgeSAM (RepViT-M1 + feature fusion).

Both families put the same mobile-CNN backbone (RepViT) in front of SAM's
prompt encoder and mask decoder; they differ in three places, each a field of
:class:`RepViTConfig`:

* the re-parameterisable depthwise mixer (``RepDWConv``):
  RepViT-SAM computes ``BN(conv3x3_bn(x) + conv1x1(x) + x)`` (the 1x1 branch is
  a plain biased conv and a BatchNorm follows the sum), EdgeSAM computes
  ``conv3x3_bn(x) + conv1x1_bn(x) + x``;
* the stride of each stage's opening (transition) block: RepViT-SAM keeps the
  last stage at stride 16 so its output is already 64 x 64 for a 1024 input;
  EdgeSAM downsamples to stride 32 and instead
* fuses features: ``fuse_stage2(stride-16 features) + upsample2x(fuse_stage3(stride-32 features))``
  (1x1 convs without bias, bicubic upsampling), before the SAM neck.

Module and attribute names follow the official checkpoints' state_dict keys
(``features.N.token_mixer.0.conv.c.weight``, ``...channel_mixer.m.0.bn.running_var``,
``fuse_stage3.op_list.0.weight``, ``neck.K.weight``), so ``image_encoder.*`` of
``repvit_sam.pt`` / ``edge_sam.pth`` / ``edge_sam_3x.pth`` loads with ``strict=True``.
BatchNorms run on their stored running statistics (the models are used in eval mode).

Tensor conventions: inputs are B x 3 x H x W images already resized, normalised
with SAM's pixel mean/std and zero-padded (B x 3 x 1024 x 1024 for SAM); the
output is the B x 256 x H/16 x W/16 image embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, bicubic_as_matmuls, fuse_conv_bn

__all__ = [
    "EDGE_SAM",
    "REPVIT_CONFIGS",
    "REPVIT_SAM",
    "ConvBN",
    "RepDWConv",
    "RepViTBlock",
    "RepViTConfig",
    "RepViTImageEncoder",
    "SqueezeExcite",
]


@dataclass(frozen=True)
class RepViTConfig:
    """Architecture of one RepViT image encoder.

    Attributes:
        stage_channels: output channels of each stage (four stages).
        stage_depths: blocks per stage; every stage but the first opens with a
            transition block (depthwise conv + 1x1 channel change), the rest are
            re-parameterisable blocks. Squeeze-excite sits on every other
            re-parameterisable block of a stage, starting with the first, never on
            its last block (the rule behind the official per-block tables).
        stage_strides: stride of each stage's transition block (stage 0 has none:
            must be 1). The stem adds a fixed stride of 4.
        dw_post_bn: RepViT-SAM's depthwise mixer (biased 1x1 branch, BatchNorm
            after the three-branch sum) instead of EdgeSAM's (BatchNorm in both
            conv branches, none after the sum).
        fuse_features: EdgeSAM's multi-scale fusion of the last two stages into
            ``out_channels`` before the neck (otherwise the neck reads the last stage).
        upsample_mode: ``F.interpolate`` mode of the fusion's 2x upsampling.
        out_channels: embedding channels (SAM: 256).
        expansion: hidden width factor of the channel mixer MLP.
        se_ratio: squeeze-excite reduction ratio (hidden width rounded to multiples of 8).
    """

    stage_channels: tuple[int, ...]
    stage_depths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    dw_post_bn: bool
    fuse_features: bool
    upsample_mode: str = "bicubic"
    out_channels: int = 256
    expansion: int = 2
    se_ratio: float = 0.25

    def __post_init__(self) -> None:
        n = len(self.stage_channels)
        if not (len(self.stage_depths) == len(self.stage_strides) == n):
            raise ValueError("stage_channels, stage_depths and stage_strides must have equal length")
        if self.stage_strides[0] != 1:
            raise ValueError("the first stage has no transition block; its stride must be 1")
        if self.fuse_features and (n < 2 or self.stage_strides[-1] != 2):
            # The fusion upsamples the last stage 2x onto the penultimate stage's grid.
            raise ValueError("feature fusion needs >= 2 stages and a stride-2 last stage")

    @property
    def total_stride(self) -> int:
        """Downsampling factor of the embedding (stem 4 x transition strides)."""
        stride = 4
        for s in self.stage_strides:
            stride *= s
        # With fusion the last stage is upsampled 2x back to the penultimate stage's grid.
        return stride // 2 if self.fuse_features else stride

    def block_specs(self) -> Iterator[tuple[int, int, int, bool, bool]]:
        """Yields ``(stage, in_channels, out_channels, stride, use_se)`` per block;
        ``stride`` is 0 for re-parameterisable (non-transition) blocks."""
        in_ch = self.stage_channels[0]
        for stage, (ch, depth, stride) in enumerate(
            zip(self.stage_channels, self.stage_depths, self.stage_strides)
        ):
            if stage > 0:
                yield stage, in_ch, ch, stride, False
            n_body = depth if stage == 0 else depth - 1
            for j in range(n_body):
                yield stage, ch, ch, 0, j % 2 == 0 and j != n_body - 1
            in_ch = ch


# RepViT-SAM's timm 'repvit' model: RepViT-M2.3 widths, last stage kept at stride 16.
REPVIT_SAM = RepViTConfig(
    stage_channels=(80, 160, 320, 640),
    stage_depths=(7, 8, 36, 3),
    stage_strides=(1, 2, 2, 1),
    dw_post_bn=True,
    fuse_features=False,
)

# EdgeSAM's RepViT 'm1' with fuse=True (edge_sam.pth and edge_sam_3x.pth share it).
EDGE_SAM = RepViTConfig(
    stage_channels=(48, 96, 192, 384),
    stage_depths=(3, 4, 16, 3),
    stage_strides=(1, 2, 2, 2),
    dw_post_bn=False,
    fuse_features=True,
)

REPVIT_CONFIGS: dict[str, RepViTConfig] = {
    "repvit_sam": REPVIT_SAM,
    "edge_sam": EDGE_SAM,
    "edge_sam_3x": EDGE_SAM,
}


def _round_to_8(v: float) -> int:
    """Nearest multiple of 8, at least 8 (timm's make_divisible with no round-up limit)."""
    return max(8, int(v + 4) // 8 * 8)


class ConvBN(nn.Sequential):
    """Bias-free Conv2d followed by BatchNorm2d. Keys: ``c.weight``, ``bn.*``.

    B x in x H x W -> B x out x H' x W'. ``fused()`` folds the BatchNorm into the conv.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def fused(self) -> nn.Conv2d:
        return fuse_conv_bn(self.c, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gate ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` (timm's SEModule).

    Keys: ``fc1``, ``fc2`` (1x1 convs with bias). B x C x H x W -> same shape.
    """

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = _round_to_8(channels * ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # ONNX Runtime sums a ReduceMean over all H*W pixels sequentially in fp32 (1e-4 relative
            # error at 256 x 256, 100x PyTorch's); a mean of row means stays at PyTorch's accuracy.
            pooled = x.mean(3, keepdim=True).mean(2, keepdim=True)
        else:
            pooled = x.mean((2, 3), keepdim=True)
        gate = self.fc2(F.relu(self.fc1(pooled)))
        return x * torch.sigmoid(gate)


class RepDWConv(nn.Module):
    """Three-branch depthwise mixer (3x3 + 1x1 + identity), re-parameterisable into one 3x3.

    ``post_bn=False`` (EdgeSAM): ``conv(x) + conv1(x) + x`` with ``conv``/``conv1``
    both :class:`ConvBN`. ``post_bn=True`` (RepViT-SAM): ``bn(conv(x) + conv1(x) + x)``
    where ``conv1`` is a plain depthwise 1x1 conv with bias.
    B x C x H x W -> B x C x H x W.
    """

    def __init__(self, channels: int, post_bn: bool) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels, 3, groups=channels)
        self.conv1: nn.Module
        self.bn: nn.BatchNorm2d | None
        if post_bn:
            self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels)
            self.bn = nn.BatchNorm2d(channels)
        else:
            self.conv1 = ConvBN(channels, channels, 1, groups=channels)
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Summation order as in the official code: (3x3 + 1x1) + identity.
        y = self.conv(x) + self.conv1(x) + x
        return self.bn(y) if self.bn is not None else y

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """One depthwise 3x3 conv with bias equal to this block in eval mode.

        All three branches are linear and per-channel, so they add up as kernels:
        the 1x1 kernel and the identity (a 1 at the 3x3 centre) are padded to 3x3.
        """
        merged = self.conv.fused()
        one = self.conv1.fused() if isinstance(self.conv1, ConvBN) else self.conv1
        merged.weight[:, :, 1:2, 1:2] += one.weight + 1.0
        merged.bias += one.bias
        return fuse_conv_bn(merged, self.bn) if self.bn is not None else merged


class Residual(nn.Module):
    """``x + m(x)``. Key prefix ``m`` (matches the official wrapper)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """MetaFormer-style block: spatial ``token_mixer`` then residual channel MLP.

    ``stride == 0`` builds a re-parameterisable block (``RepDWConv`` [+ SE], in == out);
    ``stride >= 1`` builds a transition block (depthwise 3x3 ConvBN with that stride
    [+ SE], then 1x1 ConvBN in -> out). The channel mixer is
    ``x + ConvBN(GELU(ConvBN(x)))`` with hidden width ``expansion * out``.
    B x in x H x W -> B x out x H/s x W/s.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        use_se: bool,
        config: RepViTConfig,
    ) -> None:
        super().__init__()
        se: nn.Module = SqueezeExcite(in_ch, config.se_ratio) if use_se else nn.Identity()
        if stride == 0:
            if in_ch != out_ch:
                raise ValueError("a re-parameterisable block keeps its width")
            self.token_mixer = nn.Sequential(RepDWConv(in_ch, config.dw_post_bn), se)
        else:
            self.token_mixer = nn.Sequential(
                ConvBN(in_ch, in_ch, 3, stride=stride, groups=in_ch), se, ConvBN(in_ch, out_ch, 1)
            )
        hidden = config.expansion * out_ch
        self.channel_mixer = Residual(
            nn.Sequential(ConvBN(out_ch, hidden), nn.GELU(), ConvBN(hidden, out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class _UpsampledProjection(nn.Module):
    """1x1 conv (no bias) then fixed 2x upsampling. Key: ``op_list.0.weight`` (EdgeSAM's layout)."""

    def __init__(self, in_ch: int, out_ch: int, mode: str) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(
            [
                nn.Conv2d(in_ch, out_ch, 1, bias=False),
                nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            if torch.onnx.is_in_onnx_export() and isinstance(op, nn.Upsample) and op.mode == "bicubic":
                x = bicubic_as_matmuls(x, (2 * x.shape[-2], 2 * x.shape[-1]))  # ONNX Runtime: fast path
            else:
                x = op(x)
        return x


class RepViTImageEncoder(nn.Module):
    """RepViT backbone + optional EdgeSAM feature fusion + SAM neck.

    Keys: ``features.0`` (stem: ConvBN s2, GELU, ConvBN s2), ``features.1..N``
    (:class:`RepViTBlock`), ``fuse_stage2`` / ``fuse_stage3`` (fusion only), ``neck``
    (conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d, convs without bias, eps 1e-6).

    forward: B x 3 x H x W (normalised, padded; 1024 x 1024 for SAM) ->
    B x ``out_channels`` x H/16 x W/16. H and W must be multiples of 32 when fusing
    (the stride-32 stage is upsampled back onto the stride-16 grid).
    """

    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.stage_channels[0]
        stem = nn.Sequential(ConvBN(3, c0 // 2, 3, stride=2), nn.GELU(), ConvBN(c0 // 2, c0, 3, stride=2))
        layers: list[nn.Module] = [stem]
        # Index in `features` of the last block of every stage: their outputs feed the fusion.
        self.stage_ends: list[int] = []
        for stage, in_ch, out_ch, stride, use_se in config.block_specs():
            layers.append(RepViTBlock(in_ch, out_ch, stride, use_se, config))
            if stage == len(self.stage_ends):
                self.stage_ends.append(len(layers) - 1)
            else:
                self.stage_ends[stage] = len(layers) - 1
        self.features = nn.ModuleList(layers)

        out = config.out_channels
        if config.fuse_features:
            self.fuse_stage2 = nn.Conv2d(config.stage_channels[-2], out, 1, bias=False)
            self.fuse_stage3 = _UpsampledProjection(config.stage_channels[-1], out, config.upsample_mode)
            neck_in = out
        else:
            neck_in = config.stage_channels[-1]
        self.neck = nn.Sequential(
            nn.Conv2d(neck_in, out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W normalised image -> B x 256 x H/16 x W/16 embedding."""
        penultimate_end = self.stage_ends[-2]
        penultimate = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == penultimate_end:
                penultimate = x
        if self.config.fuse_features:
            x = self.fuse_stage2(penultimate) + self.fuse_stage3(x)
        return self.neck(x)

    @torch.no_grad()
    def reparameterize(self) -> RepViTImageEncoder:
        """Folds every BatchNorm into its conv and merges each ``RepDWConv`` into one 3x3 conv.

        Uses the BatchNorm running statistics, so the result equals the eval-mode
        model (up to float rounding) and is switched to eval mode. Load the
        checkpoint first: the fused model has different state_dict keys. Idempotent.
        Returns ``self``.
        """
        self.eval()
        _fuse_children(self)
        return self


def _fuse_children(module: nn.Module) -> None:
    """Replaces each ConvBN / RepDWConv below ``module`` by its fused conv, in place."""
    for name, child in module.named_children():
        if isinstance(child, (ConvBN, RepDWConv)):
            setattr(module, name, child.fused())
        else:
            _fuse_children(child)
