"""TinyViT image encoder as used by MobileSAM and TinySAM (registry names ``mobile_sam``, ``tinysam``).

TinyViT is a four-stage hierarchy: a conv stem (stride 4), one stage of MBConv
blocks, then three stages of windowed-attention blocks, with a conv
"patch merging" block between stages. The SAM variants keep the whole network
at stride 16 for the last two stages (the last merge has stride 1, so the
feature map stays 64 x 64 for a 1024 x 1024 input) and append SAM's neck
(conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d) to reach 256 channels.

State-dict keys match the official checkpoints (``mobile_sam.pt``,
``tinysam_42.3.pth``) under the ``image_encoder.`` prefix, including the unused
ImageNet classifier (``norm_head``, ``head``) and BatchNorm
``num_batches_tracked`` counters, so those files load with ``strict=True``.
The relative-position index ``attention_bias_idxs`` is a non-persistent buffer
(the checkpoints do not carry it).

Unlike the official code, the per-window bias ``attention_biases[:, idxs]`` is
gathered in every forward instead of being cached on ``eval()``: the official
cache is filled when ``eval()`` is called and goes stale if weights are loaded
afterwards. The gather is a few hundred kilobytes of indexing per block.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, fuse_conv_bn

__all__ = ["TINY_VIT_5M", "TinyViT", "TinyViTConfig"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT SAM image encoder.

    Stage 0 is convolutional (MBConv); stages 1.. are windowed attention.
    ``num_heads[0]`` and ``window_sizes[0]`` are therefore unused, but kept so
    the tuples line up with the official constructor arguments.
    ``merge_strides[i]`` is the stride of the patch merging after stage ``i``
    (the official code hard-wires stride 1 when the output width is 320, 448
    or 576, i.e. the last merge of the 5M/11M/21M models).
    ``num_classes`` sizes the ImageNet head that the SAM checkpoints still
    carry; it is never used in ``forward``.
    """

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    in_chans: int = 3
    out_chans: int = 256
    num_classes: int = 1000

    def __post_init__(self) -> None:
        n = len(self.embed_dims)
        if not (len(self.depths) == len(self.num_heads) == len(self.window_sizes) == n):
            raise ValueError("embed_dims, depths, num_heads and window_sizes must have the same length")
        if len(self.merge_strides) != n - 1:
            raise ValueError("merge_strides needs one entry per stage transition")
        for dim, heads in zip(self.embed_dims[1:], self.num_heads[1:]):
            if dim % heads:
                raise ValueError(f"embed dim {dim} is not divisible by {heads} heads")


#: TinyViT-5M as configured by MobileSAM / TinySAM (``vit_t``).
TINY_VIT_5M = TinyViTConfig()


class ConvBN(nn.Module):
    """Bias-free Conv2d followed by BatchNorm2d. Keys: ``c.weight``, ``bn.*``.

    ``fuse()`` folds the (eval-mode) BatchNorm into a single biased Conv2d.
    """

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.c, self.bn)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 ConvBNs with GELU between. B x 3 x H x W -> B x C x H/4 x W/4.

    Kept as ``seq`` (indices 0 and 2 hold weights) to match the checkpoint keys.
    """

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, stride=2),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU.

    B x C x H x W -> B x C x H x W. The activation after the residual sum is
    part of TinyViT's design (unlike MobileNetV2).
    """

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(x + self.conv3(y))


class PatchMerging(nn.Module):
    """Stage transition: 1x1 ConvBN, GELU, depthwise 3x3 ConvBN (stride 1 or 2), GELU, 1x1 ConvBN.

    B x C_in x H x W -> B x C_out x H/stride x W/stride (rounded up).
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


def _relative_offset_index(window: int) -> tuple[torch.Tensor, int]:
    """N x N index (N = window²) of the offset (|dy|, |dx|) between two window positions.

    Offsets are numbered in the order they are first met while scanning all
    (query, key) position pairs row-major; the checkpoint's
    ``attention_biases`` columns follow that numbering, so the order matters.
    Returns (index, number of distinct offsets).
    """
    positions = list(itertools.product(range(window), range(window)))
    numbering: dict[tuple[int, int], int] = {}
    index = []
    for qy, qx in positions:
        for ky, kx in positions:
            index.append(numbering.setdefault((abs(qy - ky), abs(qx - kx)), len(numbering)))
    n = len(positions)
    return torch.tensor(index, dtype=torch.long).view(n, n), len(numbering)


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention inside one window, with a learned relative-position bias.

    Input/output: B' x N x C tokens of one window each (N = window²).
    Keys: ``norm``, ``qkv``, ``proj``, ``attention_biases`` (heads x offsets).
    The fused ``qkv`` output is laid out per head as [q | k | v], not as
    [all q | all k | all v] like most ViTs.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        index, num_offsets = _relative_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)
        # heads x N x N, broadcast over windows. Gathered on every call (see module docstring).
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Pre-norm MLP: LayerNorm -> fc1 -> GELU -> fc2. ... x C -> ... x C.

    Not ``common.MLPBlock``: the checkpoint names its layers ``norm``/``fc1``/``fc2``.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (+residual) -> depthwise ConvBN (no residual) -> MLP (+residual).

    Works on channels-last maps: B x H x W x C -> B x H x W x C.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        # The map is zero-padded BEFORE the attention's LayerNorm and the padded
        # tokens are not masked out: they act as real keys (LayerNorm(0) = its
        # bias). The official model does this, so parity requires it too.
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        windows = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        windows = self.attn(windows)
        x = windows.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then an optional patch merging. B x C x H x W in and out."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..: TinyViT blocks then an optional patch merging. B x C x H x W in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT SAM image encoder.

    ``forward``: B x 3 x H x W image, already normalised and padded by the SAM
    preprocessing (1024 x 1024 for MobileSAM/TinySAM) -> B x 256 x H/16 x W/16
    embedding (64 x 64 for 1024 input). Any H, W work (windows are padded), but
    the official models are only ever run at 1024 x 1024.

    Load an official checkpoint with
    ``model.load_state_dict(sub_state_dict(sd, "image_encoder."), strict=True)``.
    """

    def __init__(self, config: TinyViTConfig = TINY_VIT_5M) -> None:
        super().__init__()
        self.config = cfg = config
        dims = cfg.embed_dims
        last = len(dims) - 1
        self.patch_embed = PatchEmbed(cfg.in_chans, dims[0])
        stages: list[nn.Module] = []
        for i, dim in enumerate(dims):
            merge = PatchMerging(dim, dims[i + 1], cfg.merge_strides[i]) if i < last else None
            if i == 0:
                stages.append(ConvStage(dim, cfg.depths[0], cfg.mbconv_expand_ratio, merge))
            else:
                stages.append(
                    AttentionStage(
                        dim,
                        cfg.depths[i],
                        cfg.num_heads[i],
                        cfg.window_sizes[i],
                        cfg.mlp_ratio,
                        cfg.local_conv_size,
                        merge,
                    )
                )
        self.layers = nn.ModuleList(stages)
        # ImageNet classifier of the TinyViT backbone: unused by SAM, but its
        # weights are in the checkpoints, so it must exist for a strict load.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], cfg.num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W (normalised) -> B x out_chans x H/16 x W/16."""
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)

    @torch.no_grad()
    def reparameterize(self) -> TinyViT:
        """Folds every ConvBN into a single Conv2d (inference only; in place; returns self).

        Uses the BatchNorm running statistics, so the result equals the
        eval-mode model. Afterwards the state dict no longer has the official
        ``c``/``bn`` keys; load checkpoints before calling this.
        """
        for module in list(self.modules()):
            for name, child in module.named_children():
                if isinstance(child, ConvBN):
                    setattr(module, name, child.fuse())
        return self.eval()
