"""The image encoder of leansam's own default model: a small ResNet with a top-down FPN.

Four stages of basic residual blocks (strides 4, 8, 16, 32) feed a feature pyramid. The stride-16
level, refined by two 3x3 convolutions, is the image embedding the prompt encoder and mask decoder
work on; the stride-4 and stride-8 levels, layer-normalised, are returned as SAM 2-style skip features
(the mask decoder's ``conv_s0`` / ``conv_s1`` project them), so masks keep boundaries finer than
the 16-pixel embedding grid.

Shapes: input B x 3 x S x S (normalised, padded) -> (B x D x S/16 x S/16, [B x D x S/4 x S/4,
B x D x S/8 x S/8]) with D = ``out_chans`` (the decoder's width).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, eager
from .resnet import check_stages, resnet_trunk


def add_upsampled(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """``fine`` (B x C x H x W) + ``coarse`` nearest-upsampled to H x W. A 2x step is a broadcast add:
    channels-last, each coarse pixel is added to a 2 x 2 block of fine pixels without any copy;
    contiguous, the columns of ``coarse`` are doubled and each row is added to two rows of ``fine``."""
    b, c, h, w = fine.shape
    hc, wc = coarse.shape[-2:]
    if (h, w) == (2 * hc, 2 * wc) and eager():
        last = torch.channels_last
        if fine.is_contiguous(memory_format=last) and coarse.is_contiguous(memory_format=last):
            blocks = fine.permute(0, 2, 3, 1).reshape(b, hc, 2, wc, 2, c)
            pixels = coarse.permute(0, 2, 3, 1).reshape(b, hc, 1, wc, 1, c)
            return (blocks + pixels).reshape(b, h, w, c).permute(0, 3, 1, 2)
        if fine.is_contiguous() and coarse.is_contiguous():
            rows = coarse[..., None].expand(b, c, hc, wc, 2).reshape(b, c, hc, 1, w)  # columns doubled
            return (fine.view(b, c, hc, 2, w) + rows).view(b, c, h, w)
    return fine + F.interpolate(coarse, size=(h, w), mode="nearest")


@dataclass(frozen=True)
class TinyFPNConfig:
    """Shape of a :class:`TinyFPNEncoder`.

    Attributes:
        widths: channels of the four stages (strides 4, 8, 16, 32).
        depths: basic blocks per stage.
        stem_width: channels of the first (stride-2) stem convolution.
        out_chans: channels of every pyramid level (the mask decoder's width).
        grid: side of the embedding grid of the training input size (its positional embedding's
            size; other input sizes interpolate it).
        mids: inner width of every residual block, per stage (None: the stage width; pruned
            encoders narrow them).
    """

    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    depths: tuple[int, int, int, int] = (1, 2, 2, 1)
    stem_width: int = 24
    out_chans: int = 128
    grid: int = 16
    mids: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_stages("TinyFPNConfig", self.widths, self.depths)
        if self.mids is not None and (
            len(self.mids) != 4
            or any(len(m) != d for m, d in zip(self.mids, self.depths))
            or any(int(w) <= 0 for m in self.mids for w in m)
        ):
            raise ValueError("TinyFPNConfig: mids needs one positive width per block of every stage")
        if self.stem_width <= 0 or self.out_chans <= 0 or self.out_chans % 8:
            raise ValueError("TinyFPNConfig: stem_width > 0 and out_chans a positive multiple of 8")

    def to_dict(self) -> dict:
        return asdict(self)


class TinyFPNEncoder(nn.Module):
    """Small ResNet + FPN returning the stride-16 embedding and stride-4/8 skip features."""

    def __init__(self, config: TinyFPNConfig | None = None) -> None:
        super().__init__()
        c = config or TinyFPNConfig()
        self.config = c
        self.stem, self.stages = resnet_trunk(c.stem_width, c.widths, c.depths, c.mids)
        self.lateral = nn.ModuleList(nn.Conv2d(w, c.out_chans, 1) for w in c.widths)
        # The skip levels are normalised like the embedding, so the decoder sees unit-scale skip
        # inputs from the first step, whatever the scale of the stages' outputs.
        self.skip_norm = nn.ModuleList(LayerNorm2d(c.out_chans) for _ in range(2))
        # Absolute positions in the embedding, as a ViT encoder's carries them: without them the
        # decoder cannot tell where a box prompt's inside is (set up by ``init_pos_embed``).
        self.pos_embed = nn.Parameter(torch.zeros(1, c.out_chans, c.grid, c.grid))
        self.head = nn.Sequential(
            nn.Conv2d(c.out_chans, c.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(c.out_chans),
            nn.GELU(),
            nn.Conv2d(c.out_chans, c.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(c.out_chans),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """B x 3 x S x S -> (embedding B x D x S/16 x S/16, [B x D x S/4 x S/4, B x D x S/8 x S/8])."""
        feats = []
        if not torch.is_grad_enabled():
            # Inference runs channels-last: the convolutions are faster and the skip-level layer norms
            # become one fused pass (docs/performance.md); the embedding is returned contiguous, the
            # skips channels-last. Training stays contiguous: this torch's CPU backward can crash on
            # channels-last convolutions of heavily pruned widths.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        # Top-down pathway: each level adds the upsampled coarser level to its own projection.
        levels = [self.lateral[3](feats[3])]
        for i in (2, 1, 0):
            levels.insert(0, add_upsampled(self.lateral[i](feats[i]), levels[0]))
        embed = self.head(levels[2])
        pos = self.pos_embed
        if pos.shape[-2:] != embed.shape[-2:]:
            pos = F.interpolate(pos, size=embed.shape[-2:], mode="bilinear", align_corners=False)
        embed = (embed + pos).contiguous()
        return embed, [self.skip_norm[0](levels[0]), self.skip_norm[1](levels[1])]

    @torch.no_grad()
    def init_pos_embed(self, dense_pe: torch.Tensor) -> None:
        """Starts the positional embedding as the prompt encoder's dense positional encoding
        (1 x D x g' x g', resized to the embedding's grid when g' differs): the decoder can then relate
        image cells to prompt coordinates from step 0."""
        if dense_pe.shape[-2:] != self.pos_embed.shape[-2:]:
            dense_pe = F.interpolate(
                dense_pe, size=self.pos_embed.shape[-2:], mode="bilinear", align_corners=False
            )
        self.pos_embed.copy_(dense_pe.reshape(self.pos_embed.shape))


@torch.no_grad()
def deepen(encoder: TinyFPNEncoder, depths: tuple[int, int, int, int]) -> TinyFPNEncoder:
    """A deeper copy of ``encoder`` that computes the same function (net2net-style depth growth).

    Every stage keeps its blocks and gains ``depths[i] - current`` full-width basic blocks at its end.
    A new block's second batch norm starts at zero scale and shift, so the block passes its
    (non-negative, post-ReLU) input through unchanged until training moves it. ``depths`` may not
    be below the current depths; pruned encoders (``mids``) keep their inner widths.
    """
    c = encoder.config
    if any(d < cur for d, cur in zip(depths, c.depths)):
        raise ValueError(f"deepen: depths {tuple(depths)} must not be below the encoder's {c.depths}")
    mids = None
    if c.mids is not None:
        mids = tuple(tuple(m) + (w,) * (d - cur) for m, w, d, cur in zip(c.mids, c.widths, depths, c.depths))
    grown = TinyFPNEncoder(replace(c, depths=tuple(depths), mids=mids))
    grown.load_state_dict(encoder.state_dict(), strict=False)
    for stage, cur in zip(grown.stages, c.depths):
        for block in list(stage)[cur:]:
            bn = block.conv2[1]
            bn.weight.zero_()
            bn.bias.zero_()
    return grown.train(encoder.training)
