"""EfficientViT-SAM image encoders (L0, L1, L2, XL0, XL1).

An EfficientViT "large" backbone (conv stages followed by ReLU linear-attention
stages) feeds a SamNeck: three backbone stages are projected to ``head_width``
channels, resized to 64 x 64, summed, refined by a stack of residual fused-MBConv
blocks and projected to 256 channels; a channel LayerNorm2d closes the encoder.

Conventions
-----------
* Input: B x 3 x S x S, already resized (long side S), normalised with the
  ImageNet mean/std and zero-padded. S is 512 for the L series and 1024 for the
  XL series (``EfficientViTSamConfig.img_size``). Output: B x 256 x 64 x 64.
* Module and parameter names follow the official checkpoints
  (``backbone.stages.N.op_list.M...``, ``neck.input_ops/middle/output_ops``,
  ``norm``), so their ``image_encoder.*`` entries load with ``strict=True``,
  BatchNorm ``num_batches_tracked`` included.
* Every BatchNorm / LayerNorm uses eps 1e-6: the official factory calls
  ``set_norm_eps(model, 1e-6)`` after construction. Activations are GELU with
  the tanh approximation. Linear attention uses eps 1e-15.
* ``reparameterize()`` folds every conv + BatchNorm pair into one conv for
  inference; the outputs stay equal up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from leansam.models.common import LayerNorm2d, bicubic_as_matmuls, fuse_conv_bn

__all__ = [
    "EFFICIENTVIT_SAM_CONFIGS",
    "EfficientViTLargeBackbone",
    "EfficientViTSamConfig",
    "EfficientViTSamImageEncoder",
    "LiteMLA",
    "SamNeck",
    "build_efficientvit_sam_encoder",
]

BlockKind = Literal["res", "fmb", "mb", "att"]


@dataclass(frozen=True)
class EfficientViTSamConfig:
    """Architecture of one EfficientViT-SAM image encoder.

    Stage ``i`` of the backbone has ``widths[i]`` channels. Stage 0 is a stride-2
    3x3 stem conv followed by ``depths[0]`` residual blocks of kind ``blocks[0]``;
    every later stage opens with a stride-2 block (kind ``blocks[i]``, or MBConv
    for attention stages) whose expansion is ``4 * expands[i]``, followed by
    ``depths[i]`` blocks of kind ``blocks[i]`` with expansion ``expands[i]``.
    ``fewer_norm[i]`` means only the last conv of a block is BatchNorm-ed (the
    others carry a bias instead).
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    blocks: tuple[BlockKind, ...]
    expands: tuple[float, ...]
    fewer_norm: tuple[bool, ...]
    neck_stages: tuple[int, ...]  # backbone stages fed to the neck, deepest first
    head_depth: int
    head_expand: float
    img_size: int  # encoder input side S
    attn_scale: int = 5  # kernel of the multi-scale token aggregation in LiteMLA
    qkv_dim: int = 32  # per-head q/k/v width
    head_width: int = 256
    out_dim: int = 256
    embed_size: int = 64  # side of the output embedding grid
    norm_eps: float = 1e-6
    attn_eps: float = 1e-15


_L_WIDTHS = (32, 64, 128, 256, 512)
_L_BLOCKS: tuple[BlockKind, ...] = ("res", "fmb", "fmb", "mb", "att")
_XL_WIDTHS = (32, 64, 128, 256, 512, 1024)
_XL_BLOCKS: tuple[BlockKind, ...] = ("res", "fmb", "fmb", "fmb", "att", "att")


def _l_config(depths: tuple[int, ...], head_depth: int) -> EfficientViTSamConfig:
    return EfficientViTSamConfig(
        widths=_L_WIDTHS,
        depths=depths,
        blocks=_L_BLOCKS,
        expands=(1, 4, 4, 4, 6),
        fewer_norm=(False, False, False, True, True),
        neck_stages=(4, 3, 2),
        head_depth=head_depth,
        head_expand=1,
        img_size=512,
        attn_scale=5,
    )


def _xl_config(depths: tuple[int, ...], head_depth: int) -> EfficientViTSamConfig:
    return EfficientViTSamConfig(
        widths=_XL_WIDTHS,
        depths=depths,
        blocks=_XL_BLOCKS,
        expands=(1, 4, 4, 4, 4, 6),
        fewer_norm=(False, False, False, False, True, True),
        neck_stages=(5, 4, 3),
        head_depth=head_depth,
        head_expand=4,
        img_size=1024,
        attn_scale=3,
    )


EFFICIENTVIT_SAM_CONFIGS: dict[str, EfficientViTSamConfig] = {
    "efficientvit_sam_l0": _l_config((1, 1, 1, 4, 4), head_depth=4),
    "efficientvit_sam_l1": _l_config((1, 1, 1, 6, 6), head_depth=8),
    "efficientvit_sam_l2": _l_config((1, 2, 2, 8, 8), head_depth=12),
    "efficientvit_sam_xl0": _xl_config((0, 1, 1, 2, 3, 3), head_depth=6),
    "efficientvit_sam_xl1": _xl_config((1, 2, 2, 4, 6, 6), head_depth=12),
}


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #


class ConvNormAct(nn.Module):
    """Conv2d ("same" padding) -> optional BatchNorm2d -> optional GELU(tanh).

    Keys: ``conv.weight`` (+ ``conv.bias``), ``norm.*``. After ``fuse()`` the
    BatchNorm is folded into the conv (which then has a bias) and ``norm`` is None.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)
        self.norm: nn.BatchNorm2d | None = nn.BatchNorm2d(out_ch, eps=eps) if norm else None
        self.act: nn.Module | None = nn.GELU(approximate="tanh") if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x

    def fuse(self) -> None:
        """Folds the (eval-mode) BatchNorm into the conv; no-op without one."""
        if self.norm is not None:
            self.conv = fuse_conv_bn(self.conv, self.norm)
            self.norm = None


class OpList(nn.Module):
    """Applies ``op_list`` in order (the official ``OpSequential`` key layout)."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class Residual(nn.Module):
    """``main(x) + x`` when ``skip`` (shape-preserving blocks), else ``main(x)``.

    The stride-2 block opening a stage is wrapped without a skip so that it still
    lives under the ``main.`` key prefix, as in the checkpoints.
    """

    def __init__(self, main: nn.Module, skip: bool) -> None:
        super().__init__()
        self.main = main
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        return out + x if self.skip else out


class _ConvChain(nn.Module):
    """Base for blocks that are a fixed, named chain of ConvNormAct layers."""

    _names: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._names:
            x = getattr(self, name)(x)
        return x


def _norm_bias(n_convs: int, fewer_norm: bool) -> list[tuple[bool, bool]]:
    """(norm, bias) per conv: all BatchNorm-ed, or ("fewer norm") only the last,
    the others then carrying a bias."""
    if not fewer_norm:
        return [(True, False)] * n_convs
    return [(False, True)] * (n_convs - 1) + [(True, False)]


class ResConv(_ConvChain):
    """Two 3x3 convs (``conv1`` with GELU and the stride, ``conv2`` linear)."""

    _names = ("conv1", "conv2")

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        (n1, b1), (n2, b2) = _norm_bias(2, fewer_norm)
        self.conv1 = ConvNormAct(in_ch, mid, 3, stride, bias=b1, norm=n1, act=True, eps=eps)
        self.conv2 = ConvNormAct(mid, out_ch, 3, 1, bias=b2, norm=n2, eps=eps)


class FusedMBConv(_ConvChain):
    """Fused inverted residual: full 3x3 expansion conv (GELU) -> linear 1x1 projection."""

    _names = ("spatial_conv", "point_conv")

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        (n1, b1), (n2, b2) = _norm_bias(2, fewer_norm)
        self.spatial_conv = ConvNormAct(in_ch, mid, 3, stride, bias=b1, norm=n1, act=True, eps=eps)
        self.point_conv = ConvNormAct(mid, out_ch, 1, bias=b2, norm=n2, eps=eps)


class MBConv(_ConvChain):
    """Inverted residual: 1x1 expansion (GELU) -> 3x3 depthwise (GELU, stride) -> linear 1x1."""

    _names = ("inverted_conv", "depth_conv", "point_conv")

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        (n1, b1), (n2, b2), (n3, b3) = _norm_bias(3, fewer_norm)
        self.inverted_conv = ConvNormAct(in_ch, mid, 1, bias=b1, norm=n1, act=True, eps=eps)
        self.depth_conv = ConvNormAct(mid, mid, 3, stride, groups=mid, bias=b2, norm=n2, act=True, eps=eps)
        self.point_conv = ConvNormAct(mid, out_ch, 1, bias=b3, norm=n3, eps=eps)


_CONV_BLOCKS: dict[str, type[_ConvChain]] = {"res": ResConv, "fmb": FusedMBConv, "mb": MBConv}


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (EfficientViT's context module).

    A 1x1 conv makes q/k/v (``heads = channels // dim`` heads of width ``dim``);
    a depthwise ``scale`` x ``scale`` conv + grouped 1x1 conv ("aggreg") derive a
    second, spatially aggregated set of q/k/v heads. Every head attends with
    ``ReLU(k)^T ReLU(q)`` kernels in linear (matmul) form; heads are concatenated
    and projected back by a 1x1 conv + BatchNorm. Input/output B x C x H x W.
    """

    def __init__(self, channels: int, dim: int, scale: int, eps: float, norm_eps: float) -> None:
        super().__init__()
        heads = channels // dim
        qkv_ch = 3 * heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvNormAct(channels, qkv_ch, 1, norm=False)
        self.aggreg = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(qkv_ch, qkv_ch, scale, padding=scale // 2, groups=qkv_ch, bias=False),
                    # one group per (q, k or v) of each head: mixes channels within it only
                    nn.Conv2d(qkv_ch, qkv_ch, 1, groups=3 * heads, bias=False),
                )
            ]
        )
        self.proj = ConvNormAct(2 * heads * dim, channels, 1, norm=True, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        # Channel layout per head: [q (dim) | k (dim) | v (dim)]; the aggregated
        # heads follow the original ones.
        qkv = torch.cat([qkv, *(agg(qkv) for agg in self.aggreg)], dim=1)
        return self.proj(self._linear_attention(qkv))

    def _linear_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """B x 3*h*dim x H x W -> B x h*dim x H x W.

        out_i = sum_j v_j (k_j . q_i) / (sum_j k_j . q_i + eps), computed as
        (v k^T) q: cost linear in the number of tokens. v gets an extra row of
        ones so that the same two matmuls also produce the denominator (this
        matches the official summation order). The official code switches to the
        explicit N x N form when H*W <= dim; both are the same expression, so the
        linear form is used throughout. Reduced-precision inputs are computed in
        float32 (the tiny eps and the division need it) and cast back.
        """
        b, _, h, w = qkv.shape
        in_dtype = qkv.dtype
        if in_dtype in (torch.float16, torch.bfloat16):
            qkv = qkv.float()
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w)  # B x heads x 3*dim x N (a view)
        q, k, v = qkv.split(self.dim, dim=2)
        q = F.relu(q)
        k = F.relu(k)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # B x heads x (dim+1) x N
        out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)  # B x heads x (dim+1) x N
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.reshape(b, -1, h, w).to(in_dtype)


class EfficientViTBlock(nn.Module):
    """Residual LiteMLA (``context_module``) then residual MBConv (``local_module``)."""

    def __init__(self, channels: int, cfg: EfficientViTSamConfig, expand: float) -> None:
        super().__init__()
        attn = LiteMLA(channels, cfg.qkv_dim, cfg.attn_scale, cfg.attn_eps, cfg.norm_eps)
        self.context_module = Residual(attn, skip=True)
        local = MBConv(channels, channels, 1, expand, fewer_norm=True, eps=cfg.norm_eps)
        self.local_module = Residual(local, skip=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


# --------------------------------------------------------------------------- #
# Backbone, neck, encoder
# --------------------------------------------------------------------------- #


class EfficientViTLargeBackbone(nn.Module):
    """EfficientViT-L / XL backbone. Keys: ``stages.N.op_list.M...``.

    ``forward`` maps B x 3 x S x S to the list of every stage's output; stage i
    has ``widths[i]`` channels at stride ``2 ** (i + 1)``.
    """

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        eps = cfg.norm_eps
        w0 = cfg.widths[0]
        stem: list[nn.Module] = [ConvNormAct(3, w0, 3, 2, act=True, eps=eps)]
        for _ in range(cfg.depths[0]):
            block = _CONV_BLOCKS[cfg.blocks[0]](w0, w0, 1, cfg.expands[0], cfg.fewer_norm[0], eps)
            stem.append(Residual(block, skip=True))
        stages = [OpList(stem)]

        in_ch = w0
        for i in range(1, len(cfg.widths)):
            width, kind, expand, fewer = cfg.widths[i], cfg.blocks[i], cfg.expands[i], cfg.fewer_norm[i]
            # Downsampling block: attention stages downsample with an MBConv.
            down_kind = "mb" if kind == "att" else kind
            down = _CONV_BLOCKS[down_kind](in_ch, width, 2, 4 * expand, fewer, eps)
            ops: list[nn.Module] = [Residual(down, skip=False)]
            for _ in range(cfg.depths[i]):
                if kind == "att":
                    ops.append(EfficientViTBlock(width, cfg, expand))
                else:
                    ops.append(Residual(_CONV_BLOCKS[kind](width, width, 1, expand, fewer, eps), skip=True))
            stages.append(OpList(ops))
            in_ch = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class SamNeck(nn.Module):
    """Fuses backbone stages into the SAM embedding. Keys: ``input_ops``, ``middle``, ``output_ops``.

    Each input (B x C_i x H_i x W_i, deepest first) -> 1x1 conv + BatchNorm to
    ``head_width`` -> bicubic resize (align_corners=False) to ``embed_size``² ->
    sum -> ``head_depth`` residual fused-MBConvs -> 1x1 conv (with bias) to
    ``out_dim``. Output B x out_dim x embed_size x embed_size.
    """

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        eps, hw = cfg.norm_eps, cfg.head_width
        self.embed_size = cfg.embed_size
        self.input_ops = nn.ModuleList(
            [OpList([ConvNormAct(cfg.widths[s], hw, 1, eps=eps)]) for s in cfg.neck_stages]
        )
        self.middle = OpList(
            [
                Residual(FusedMBConv(hw, hw, 1, cfg.head_expand, fewer_norm=False, eps=eps), skip=True)
                for _ in range(cfg.head_depth)
            ]
        )
        self.output_ops = nn.ModuleList([OpList([ConvNormAct(hw, cfg.out_dim, 1, bias=True, norm=False)])])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = (self.embed_size, self.embed_size)
        resized = []
        for op, f in zip(self.input_ops, feats, strict=True):
            y = op(f)
            if tuple(y.shape[-2:]) != size:
                if torch.onnx.is_in_onnx_export():
                    y = bicubic_as_matmuls(y, size)
                else:
                    y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
            resized.append(y)
        # Summed right to left, x0 + (x1 + x2), the official association order.
        x = resized[-1]
        for y in reversed(resized[:-1]):
            x = y + x
        return self.output_ops[0](self.middle(x))


class EfficientViTSamImageEncoder(nn.Module):
    """EfficientViT-SAM image encoder: backbone -> SamNeck -> LayerNorm2d.

    Input B x 3 x S x S (normalised, padded; S = ``img_size``: 512 for L0-L2,
    1024 for XL0/XL1). Output B x 256 x 64 x 64.
    """

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        self.config = cfg
        self.img_size = cfg.img_size
        self.backbone = EfficientViTLargeBackbone(cfg)
        self.neck = SamNeck(cfg)
        self.norm = LayerNorm2d(cfg.out_dim, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return self.norm(self.neck([feats[i] for i in self.config.neck_stages]))

    @torch.no_grad()
    def reparameterize(self) -> EfficientViTSamImageEncoder:
        """Folds every conv + BatchNorm pair for inference (in place; returns self).

        Uses the BatchNorm running statistics, so call it on an eval-mode model;
        the result no longer loads the official checkpoint keys.
        """
        for module in list(self.modules()):
            if isinstance(module, ConvNormAct):
                module.fuse()
        return self


def build_efficientvit_sam_encoder(name: str) -> EfficientViTSamImageEncoder:
    """Builds the (randomly initialised) encoder of a registry name such as ``efficientvit_sam_l0``."""
    try:
        cfg = EFFICIENTVIT_SAM_CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown EfficientViT-SAM variant {name!r}; known: {sorted(EFFICIENTVIT_SAM_CONFIGS)}"
        ) from None
    return EfficientViTSamImageEncoder(cfg)
