"""SAM 2 / SAM 2.1 image encoder: Hiera trunk + FPN neck, image mode.

Key names follow the official checkpoints (``image_encoder.trunk.*``,
``image_encoder.neck.convs.N.conv.*``), so ``sub_state_dict(ckpt, "image_encoder.")``
loads unchanged. The encoder additionally owns ``no_mem_embed`` (a *top-level*
key in the official checkpoint): in image mode SAM 2 adds it to the lowest-res
feature map, so carrying it here makes the encoder output exactly what the
official ``SAM2ImagePredictor.set_image`` caches. A checkpoint loader maps the
top-level ``no_mem_embed`` to ``image_encoder.no_mem_embed``.

The image encoder is identical in SAM 2 and SAM 2.1 (their yaml configs differ
only in memory-module options), so both share the configs in ``HIERA_CONFIGS``.

Conventions: the trunk works channels-last (B x H x W x C) like the official
code, because its LayerNorms and Linears act on the last dimension; the neck and
all outputs are channels-first (B x C x H x W).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP
from .fast.bf16 import attention

__all__ = [
    "HIERA_CONFIGS",
    "FpnNeck",
    "Hiera",
    "HieraBlock",
    "HieraConfig",
    "HieraImageEncoder",
    "Sam2ImageFeatures",
    "build_hiera_image_encoder",
]


@dataclass(frozen=True)
class HieraConfig:
    """Architecture of one SAM 2 image encoder (trunk + neck).

    Defaults are the official ``Hiera`` constructor defaults, which is what the
    base_plus yaml relies on (it only sets ``embed_dim``/``num_heads``).
    """

    embed_dim: int = 96  # channels of stage 1; doubled at each stage change
    num_heads: int = 1  # heads of stage 1; doubled at each stage change
    stages: tuple[int, ...] = (2, 3, 16, 3)  # blocks per stage
    global_att_blocks: tuple[int, ...] = (12, 16, 20)  # block indices with full (unwindowed) attention
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # attention window per stage
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)  # size of the stored ``pos_embed``
    q_pool: int = 3  # number of stage changes that halve the resolution by pooling queries
    q_stride: int = 2
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    d_model: int = 256  # FPN output channels
    fpn_top_down_levels: tuple[int, ...] = (2, 3)  # levels (0 = highest res) that receive top-down features
    scalp: int = 1  # number of lowest-res FPN levels dropped

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Trunk output channels per stage, highest resolution first."""
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages)))


# Learnt from facebookresearch/sam2 sam2/configs/sam2{,.1}/sam2{,.1}_hiera_{t,s,b+,l}.yaml
# (identical image_encoder sections in SAM 2 and SAM 2.1).
HIERA_CONFIGS: dict[str, HieraConfig] = {
    "tiny": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base_plus": HieraConfig(embed_dim=112, num_heads=2),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}


class Sam2ImageFeatures(NamedTuple):
    """What the SAM 2 image predictor caches per image (before the decoder's conv_s0/conv_s1).

    ``image_embed``: B x d_model x H/16 x W/16, lowest-res kept FPN level + ``no_mem_embed``.
    ``high_res_feats``: (B x d_model x H/4 x W/4, B x d_model x H/8 x W/8).
    """

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, torch.Tensor]


def _max_pool_hw(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max-pools a channels-last N x H x W x C map by ``stride`` (floor, like MaxPool2d)."""
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return x.permute(0, 2, 3, 1)


def _to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B*nWin) x window x window x C, zero-padding bottom/right.

    Returns the windows and the padded size (Hp, Wp). Padding happens after the
    block's norm1, so padded tokens are exact zeros (their keys/values then
    equal the qkv bias, which the official model lets take part in attention).
    """
    b, h, w, c = x.shape
    # Ceil division without negative operands: the TorchScript ONNX exporter turns a traced
    # floor division of a negative number into a truncating Div, so ``-(-h // window)`` would
    # round down there (64 -> 56 instead of 70 for window 14).
    hp, wp = (h + window - 1) // window * window, (w + window - 1) // window * window
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def _from_windows(
    windows: torch.Tensor, window: int, padded: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``_to_windows``: (B*nWin) x window x window x C -> B x H x W x C (padding cropped)."""
    hp, wp = padded
    nh, nw = hp // window, wp // window
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window, window, c).transpose(2, 3).reshape(-1, hp, wp, c)
    h, w = hw
    if (hp, wp) != (h, w):
        x = x[:, :h, :w]
    return x


class HieraAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (stage changes).

    Keys: ``qkv`` (dim -> 3*dim_out), ``proj`` (dim_out -> dim_out).
    Input N x h x w x dim (N = batch x windows); output N x h' x w' x dim_out with
    (h', w') = (h, w) // q_stride. Pooling only the queries shrinks the token grid
    while keys/values still see the full-resolution window.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each N x h x w x dim_out, heads contiguous per channel
        if self.q_stride:
            # The pool acts per channel, so the head split does not matter here.
            q = _max_pool_hw(q, self.q_stride)
            h, w = q.shape[1:3]

        def heads(t: torch.Tensor) -> torch.Tensor:  # N x ... x C -> N x heads x tokens x C/heads
            return t.reshape(n, -1, self.num_heads, t.shape[-1] // self.num_heads).transpose(1, 2)

        out = attention(heads(q), heads(k), heads(v))
        out = out.transpose(1, 2).reshape(n, h, w, -1)
        return self.proj(out)


class HieraBlock(nn.Module):
    """One Hiera (multi-scale) transformer block; channels-last B x H x W x dim.

    ``window_size`` 0 means global attention. With ``q_stride`` the block halves
    the resolution and changes the width to ``dim_out`` (first block of a stage);
    its residual is then ``pool(proj(norm1(x)))``. Keys: ``norm1``, ``attn``,
    ``norm2``, ``mlp.layers.{0,1}``, and ``proj`` when ``dim != dim_out``.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int = 0,
        q_stride: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if (dim != dim_out) and not q_stride:
            # The residual path would need pooling to match; no official config does this.
            raise ValueError("a width change is only supported together with query pooling")
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = HieraAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, act=F.gelu)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = _max_pool_hw(self.proj(normed), self.q_stride)

        if self.window_size > 0:
            windows, padded = _to_windows(normed, self.window_size)
            out = self.attn(windows)
            # Query pooling shrank every window (and the padded grid) by q_stride.
            stride = self.q_stride or 1
            out_window = self.window_size // stride
            out = _from_windows(
                out, out_window, (padded[0] // stride, padded[1] // stride), shortcut.shape[1:3]
            )
        else:
            out = self.attn(normed)

        x = shortcut + out
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    """7x7 stride-4 conv stem. Key ``proj``. B x 3 x H x W -> B x H/4 x W/4 x C (channels-last)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """Hiera trunk (hierarchical ViT with windowed + a few global attention blocks).

    Input B x 3 x H x W (normalised; H, W multiples of 32 and H/4, W/4 multiples
    of ``window_spec[0]``). Returns the last block of each stage, channels-first,
    highest resolution first: [B x C x H/4 x W/4, B x 2C x H/8 x W/8, ...].
    Keys: ``patch_embed.proj``, ``pos_embed``, ``pos_embed_window``, ``blocks.N``.
    """

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        if len(cfg.stages) != len(cfg.window_spec):
            raise ValueError("stages and window_spec must have the same length")
        if not 0 <= cfg.q_pool < len(cfg.stages):
            raise ValueError("q_pool must be in [0, number of stages - 1]")
        self.patch_embed = _PatchEmbed(cfg.embed_dim)
        # Positional embedding = a coarse background table, bicubic-resized to the
        # token grid, plus a per-window table tiled over it (https://arxiv.org/abs/2311.05613).
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, cfg.window_spec[0], cfg.window_spec[0])
        )

        ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self.stage_ends = tuple(ends)
        pool_blocks = {e + 1 for e in ends[:-1][: cfg.q_pool]}

        blocks = []
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            # The first block of a stage still attends within the previous stage's
            # window size (it runs before the downsampling of its queries takes effect).
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in ends:  # first block of a new stage
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            blocks.append(
                HieraBlock(
                    dim,
                    dim_out,
                    heads,
                    window_size=window,
                    q_stride=cfg.q_stride if i in pool_blocks else None,
                    mlp_ratio=cfg.mlp_ratio,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """1 x h x w x C positional embedding for an h x w token grid."""
        bkg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        bkg = bkg + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
        return bkg.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class FpnNeck(nn.Module):
    """SAM 2's FPN without output convs: 1x1 lateral convs + nearest 2x top-down sums.

    Input: trunk features, highest resolution first, channels ``channel_list``.
    Output: ``d_model``-channel maps, same order and sizes. Only the levels in
    ``top_down_levels`` add the upsampled coarser level; the others are purely
    lateral. Keys: ``convs.N.conv`` where N = 0 is the LOWEST resolution level
    (official ordering). The sine position encodings of the official neck are not
    computed: image mode never uses them (and they have no weights).
    """

    def __init__(self, channel_list: tuple[int, ...], d_model: int, top_down_levels: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, d_model, kernel_size=1)))
            for c in reversed(channel_list)
        )
        self.top_down_levels = tuple(top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.convs)
        if len(xs) != n:
            raise ValueError(f"expected {n} feature maps, got {len(xs)}")
        outs: list[torch.Tensor] = [xs[0]] * n
        prev = None
        for level in range(n - 1, -1, -1):  # coarse to fine
            lateral = self.convs[n - 1 - level](xs[level])
            if prev is not None and level in self.top_down_levels:
                lateral = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            outs[level] = prev = lateral
        return outs


class HieraImageEncoder(nn.Module):
    """SAM 2 image encoder in image mode: trunk -> neck -> drop ``scalp`` levels -> + no_mem_embed.

    ``forward``: B x 3 x 1024 x 1024 (resized + ImageNet-normalised) ->
    ``Sam2ImageFeatures(image_embed B x 256 x 64 x 64, (B x 256 x 256 x 256, B x 256 x 128 x 128))``.
    The high-res maps are returned BEFORE the mask decoder's conv_s0/conv_s1.
    Keys: ``trunk.*``, ``neck.*`` (= official ``image_encoder.*``) and ``no_mem_embed``
    (1 x 1 x d_model, official top-level ``no_mem_embed``).
    """

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        if len(cfg.stages) - cfg.scalp != 3:
            raise ValueError("image mode needs exactly 3 FPN levels after the scalp")
        self.cfg = cfg
        self.trunk = Hiera(cfg)
        self.neck = FpnNeck(cfg.channel_list, cfg.d_model, cfg.fpn_top_down_levels)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, cfg.d_model))

    def forward(self, x: torch.Tensor) -> Sam2ImageFeatures:
        feats = self.neck(self.trunk(x))
        if self.cfg.scalp:
            feats = feats[: -self.cfg.scalp]
        high0, high1, low = feats
        # "No memory" token: what SAM 2 adds to the lowest-res map of a frame without memories.
        image_embed = low + self.no_mem_embed.view(1, -1, 1, 1)
        return Sam2ImageFeatures(image_embed, (high0, high1))


def build_hiera_image_encoder(size: str) -> HieraImageEncoder:
    """Encoder for ``size`` in {"tiny", "small", "base_plus", "large"} (same for SAM 2 and SAM 2.1)."""
    try:
        cfg = HIERA_CONFIGS[size]
    except KeyError:
        raise ValueError(f"unknown Hiera size {size!r}; choose from {sorted(HIERA_CONFIGS)}") from None
    return HieraImageEncoder(cfg)
