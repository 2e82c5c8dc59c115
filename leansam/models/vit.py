"""Plain / windowed Vision Transformer image encoders (SAM ViT-B/L/H, SlimSAM, EfficientSAM).

One module serves every ViT-based family:

* SAM ViT-B/L/H: 64x64 absolute position embedding, 14x14 windows with a few
  global blocks, decomposed relative position in attention, SAM neck.
* SlimSAM: the same layout with pruned widths (``embed_dim``/``mlp_dim``; per block
  ``block_dims`` for the globally pruned checkpoints).
* EfficientSAM ViT-Ti/S: global attention everywhere, no relative position, an
  absolute embedding stored at pre-training size with a class token
  (``pos_embed_cls=True``), resized bicubically at run time.

State-dict keys follow segment-anything (``patch_embed.proj``, ``pos_embed``,
``blocks.N.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}``,
``neck.{0,1,2,3}``); other families are remapped by their checkpoint filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

# Upper bound on the size of one chunk of attention bias (bytes). Global
# attention at 1024x1024 has 4096 tokens: a full 4096x4096 bias per head would
# take 800 MB for ViT-B, so queries are processed in chunks instead.
_MAX_BIAS_BYTES = 96 * 2**20


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT image encoder.

    ``img_size`` is the encoder's square input side in pixels; the output is
    ``out_chans x (img_size/patch_size) x (img_size/patch_size)``.
    """

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    out_chans: int = 256
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    use_rel_pos: bool = True
    # EfficientSAM: pos_embed is (1, 1 + g*g, C) for a pre-training grid g, with a class slot.
    pos_embed_cls: bool = False
    pretrain_grid: int = 14
    neck_eps: float = 1e-6
    # Per-block widths of a non-uniformly pruned encoder (SlimSAM global pruning): one
    # (qk_dim, v_dim, mlp_dim) per block. q and k project to qk_dim, v to v_dim (num_heads
    # heads each; rel-pos tables are qk_dim // num_heads wide); proj maps v_dim back to
    # embed_dim. None: every block is (embed_dim, embed_dim, mlp_dim).
    block_dims: tuple[tuple[int, int, int], ...] | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.block_dims is not None:
            if len(self.block_dims) != self.depth:
                raise ValueError(f"block_dims has {len(self.block_dims)} entries for depth {self.depth}")
            if any(qk % self.num_heads or v % self.num_heads for qk, v, _ in self.block_dims):
                raise ValueError(f"block_dims q/k/v widths must be multiples of num_heads={self.num_heads}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


SAM_VIT_B = ViTConfig(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072, global_attn_indexes=(2, 5, 8, 11))
SAM_VIT_L = ViTConfig(
    embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096, global_attn_indexes=(5, 11, 17, 23)
)
SAM_VIT_H = ViTConfig(
    embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120, global_attn_indexes=(7, 15, 23, 31)
)


def _rel_pos_table(rel_pos: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Relative-position embeddings indexed for every (query, key) pair: q_size x k_size x C.

    ``rel_pos`` is (2*max(q,k)-1) x C; it is linearly resized when the run-time
    size differs from the one it was trained at (as segment-anything does).
    """
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        rel_pos = F.interpolate(rel_pos.T[None], size=max_dist, mode="linear")[0].T
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    idx = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[idx.long()]


class Attention(nn.Module):
    """Multi-head self-attention on B x H x W x C tokens, optional decomposed relative position.

    Runs on ``F.scaled_dot_product_attention``. The relative-position term
    (a sum of a per-row and a per-column bias) is added as an attention mask
    built chunk by chunk over queries, so neither the full attention matrix
    nor a full N x N bias is ever held in memory.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        use_rel_pos: bool,
        grid: tuple[int, int],
        qk_dim: int | None = None,
        v_dim: int | None = None,
    ) -> None:
        """``qk_dim`` / ``v_dim``: total q/k and v widths (default ``dim``; pruned encoders differ)."""
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = (dim if qk_dim is None else qk_dim) // num_heads
        self.v_head_dim = (dim if v_dim is None else v_dim) // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, (2 * self.head_dim + self.v_head_dim) * num_heads, bias=qkv_bias)
        self.proj = nn.Linear(self.v_head_dim * num_heads, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x)
        if self.v_head_dim == self.head_dim:
            q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        else:  # rows [q | k | v], v of another width
            qk_rows = 2 * self.num_heads * self.head_dim
            q, k = qkv[..., :qk_rows].reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            v = qkv[..., qk_rows:].reshape(b, n, self.num_heads, self.v_head_dim).transpose(1, 2)
        # q, k: B x heads x N x head_dim; v: B x heads x N x v_head_dim
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            rh = _rel_pos_table(self.rel_pos_h, h, h)  # h x h x hd
            rw = _rel_pos_table(self.rel_pos_w, w, w)  # w x w x hd
            qg = q.reshape(b, self.num_heads, h, w, self.head_dim)
            # rel_h[b, head, y, x, ky] = q(y, x) . Rh[y, ky]; likewise for columns. Unscaled q, as upstream.
            rel_h = torch.einsum("bnyxc,ykc->bnyxk", qg, rh).reshape(b, self.num_heads, n, h)
            rel_w = torch.einsum("bnyxc,xkc->bnyxk", qg, rw).reshape(b, self.num_heads, n, w)
            out = self._chunked_biased_attention(q, k, v, rel_h, rel_w)
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)

    def _chunked_biased_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
    ) -> torch.Tensor:
        b, heads, n, _ = q.shape
        kh, kw = rel_h.shape[-1], rel_w.shape[-1]
        rows = max(1, _MAX_BIAS_BYTES // (b * heads * n * q.element_size()))
        if rows >= n:
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, kh * kw)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        if torch.onnx.is_in_onnx_export():
            # The ONNX exporters cannot express writes into a reused buffer (``out=`` and slice
            # assignment); the same per-chunk arithmetic, concatenated instead.
            chunks = []
            for s in range(0, n, rows):
                e = min(n, s + rows)
                bias = (rel_h[:, :, s:e, :, None] + rel_w[:, :, s:e, None, :]).reshape(
                    b, heads, e - s, kh * kw
                )
                chunks.append(
                    F.scaled_dot_product_attention(
                        q[:, :, s:e], k, v, attn_mask=bias.to(q.dtype), scale=self.scale
                    )
                )
            return torch.cat(chunks, dim=2)
        out = q.new_empty(b, heads, n, v.shape[-1])
        # One bias buffer reused for every chunk: a fresh ~100 MB tensor per chunk would pay
        # for page faults and zeroing on first touch.
        buf = rel_h.new_empty(b, heads, rows, kh, kw)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            bias = buf[:, :, : e - s]
            torch.add(rel_h[:, :, s:e, :, None], rel_w[:, :, s:e, None, :], out=bias)
            out[:, :, s:e] = F.scaled_dot_product_attention(
                q[:, :, s:e],
                k,
                v,
                attn_mask=bias.view(b, heads, e - s, kh * kw).to(q.dtype),
                scale=self.scale,
            )
        return out


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B*nw) x window x window x C, zero-padding H, W up to multiples of ``window``.

    The zero tokens take part in attention as keys, exactly as in segment-anything.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nw) x window x window x C -> B x H x W x C."""
    hp, wp = padded
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1).transpose(2, 3)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1]].contiguous() if (hp, wp) != size else x


class Block(nn.Module):
    """Pre-norm transformer block on B x H x W x C tokens (windowed when ``window_size > 0``)."""

    def __init__(self, cfg: ViTConfig, window_size: int, dims: tuple[int, int, int] | None = None) -> None:
        """``dims``: this block's (qk_dim, v_dim, mlp_dim) (``ViTConfig.block_dims``); None: uniform."""
        super().__init__()
        grid = (window_size, window_size) if window_size > 0 else (cfg.grid, cfg.grid)
        qk_dim, v_dim, mlp_dim = dims if dims is not None else (cfg.embed_dim, cfg.embed_dim, cfg.mlp_dim)
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(
            cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.use_rel_pos, grid, qk_dim, v_dim
        )
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = MLPBlock(cfg.embed_dim, mlp_dim)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches: B x 3 x H x W -> B x H/p x W/p x C (channels last)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def sam_neck(in_chans: int, out_chans: int, eps: float = 1e-6) -> nn.Sequential:
    """The SAM neck: conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d (keys ``neck.{0,1,2,3}``).

    Shared by every family whose encoder ends in SAM's neck (ViT, TinyViT, RepViT, ...).
    """
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
        LayerNorm2d(out_chans, eps=eps),
        nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_chans, eps=eps),
    )


class ViTImageEncoder(nn.Module):
    """ViT image encoder: B x 3 x S x S (normalised, S = ``cfg.img_size``) -> B x out_chans x S/16 x S/16."""

    def __init__(self, cfg: ViTConfig = SAM_VIT_B) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.img_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        if cfg.pos_embed_cls:
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pretrain_grid**2, cfg.embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                cfg,
                0 if i in cfg.global_attn_indexes else cfg.window_size,
                cfg.block_dims[i] if cfg.block_dims is not None else None,
            )
            for i in range(cfg.depth)
        )
        self.neck = sam_neck(cfg.embed_dim, cfg.out_chans, cfg.neck_eps)

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        if not self.cfg.pos_embed_cls:
            pe = self.pos_embed
            if pe.shape[1:3] != (h, w):
                pe = F.interpolate(pe.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
                pe = pe.permute(0, 2, 3, 1)
            return pe
        g = math.isqrt(self.pos_embed.shape[1] - 1)
        pe = self.pos_embed[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)  # drop the class slot
        if (g, g) != (h, w):
            pe = F.interpolate(pe, size=(h, w), mode="bicubic", align_corners=False)
        return pe.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self._position_embedding(x.shape[1], x.shape[2])
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class EfficientTamImageEncoder(ViTImageEncoder):
    """ViT trunk + one-level neck + ``no_mem_embed``, image mode.

    ``forward``: B x 3 x 1024 x 1024 (squashed, ImageNet-normalised) -> B x 256 x 64 x 64, the
    embedding the official image predictor caches (neck output + ``no_mem_embed``).
    Keys: those of :class:`ViTImageEncoder` plus ``no_mem_embed`` (1 x 1 x 256, official
    top-level ``no_mem_embed``).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__(cfg)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, cfg.out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.no_mem_embed.view(1, -1, 1, 1)
