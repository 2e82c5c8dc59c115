"""The video memory of SAM 2 / SAM 2.1 / EfficientTAM: memory attention and memory encoder.

Key names follow the official checkpoints (``memory_attention.layers.N.{self_attn,cross_attn_image,
linear1,linear2,norm1..3}``, ``memory_attention.norm``, ``memory_encoder.{mask_downsampler,
pix_feat_proj,fuser,out_proj}``), so the official state_dict loads into these modules unchanged.

Shapes (1024 input): image tokens N = 64 x 64 = 4096 of C = 256 channels; memories of 64 channels,
one 64 x 64 map per remembered frame plus object pointers (each split into 4 tokens of 64).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import LayerNorm2d
from ..models.fast.bf16 import attention, cpu_bf16_autocast

CrossAttentionKind = Literal["rope", "pooled1", "pooled2"]


def sine_position_encoding(channels: int, h: int, w: int, temperature: float = 10000.0) -> torch.Tensor:
    """The normalised 2-D sine encoding of SAM 2's neck and memory encoder: 1 x channels x h x w.

    Channels are [y part | x part], each alternating sin / cos of the position scaled to (0, 2 pi].
    """
    half = channels // 2
    scale = 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32).view(h, 1).expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32).view(1, w).expand(h, w)
    y = y / (h + 1e-6) * scale
    x = x / (w + 1e-6) * scale
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / half)

    def encode(p: torch.Tensor) -> torch.Tensor:
        p = p[..., None] / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((encode(y), encode(x)), dim=-1).permute(2, 0, 1)[None]


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine encoding of (fractional) positions: ... -> ... x dim ([sin | cos] halves)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    p = positions[..., None] / dim_t
    return torch.cat([p.sin(), p.cos()], dim=-1)


def axial_rope_angles(dim: int, side: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of SAM 2's axial rotary encoding for a side x side grid: each side*side x dim/2.

    The first dim/4 rotation pairs turn with the column x, the last dim/4 with the row y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(side * side, dtype=torch.float32)
    tx, ty = t % side, torch.div(t, side, rounding_mode="floor")
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates consecutive channel pairs of x (... x N x D) by the angles (N x D/2)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class RoPEAttention(nn.Module):
    """Attention with axial rotary position encoding on queries and keys (memory attention).

    Keys: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``. ``kv_in_dim`` is the memory width (64)
    for the cross-attention. In the cross-attention the keys are several grids of N tokens each
    (one per remembered frame), rotated like the queries, followed by ``num_k_exclude_rope``
    object-pointer tokens that are not rotated.

    ``kind``: ``rope`` is plain attention; ``pooled1`` / ``pooled2`` are EfficientTAM's efficient
    cross-attention (``EfficientRoPEAttention1/2``): the rotated memory keys and values are
    average-pooled 2 x 2 per frame and each pooled key stands for 4 keys (+log 4 on its logit for
    ``pooled1``; ``pooled2`` adds log 4 to the pooled key vectors themselves, as upstream does).
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 1,
        kv_in_dim: int | None = None,
        feat_side: int = 64,
        kind: CrossAttentionKind = "rope",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kind = kind
        kv = kv_in_dim if kv_in_dim is not None else dim
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv, dim)
        self.v_proj = nn.Linear(kv, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.feat_side = feat_side
        self._angles: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        side = math.isqrt(n)
        if side not in self._angles:
            self._angles[side] = axial_rope_angles(self.q_proj.out_features // self.num_heads, side)
        cos, sin = self._angles[side]
        return cos.to(device), sin.to(device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """q: B x N x C (a square grid, row-major); k, v: B x (F*N + P) x Ck -> B x N x C.

        ``key_bias``: (per memory frame B x F, per pointer token B x P) added to the attention logits
        (0 keeps a key, a large negative value drops it: fixed-size memory banks with empty slots);
        plain (``rope``) attention only.
        """
        q, k = self._heads(self.q_proj(q)), self._heads(self.k_proj(k))
        n = q.shape[-2]
        n_rope = k.shape[-2] - num_k_exclude_rope
        plain = self.kind == "rope" or n_rope <= n
        # bf16 on CPU: project the values after the attention when they are narrower before (64 vs
        # 256 for the memory): the same result, as softmax rows sum to 1 (docs/performance.md).
        late_v = plain and self._late_values(q, v)
        v = v[:, None] if late_v else self._heads(self.v_proj(v))
        cos, sin = self._cos_sin(n, q.device)
        q = _rotate(q, cos, sin)
        reps = n_rope // n
        k_rope = _rotate(k[:, :, :n_rope], cos.repeat(reps, 1), sin.repeat(reps, 1))
        bias = None
        if key_bias is not None:
            if self.kind != "rope":
                raise ValueError(f"key_bias needs plain attention, not {self.kind!r}")
            frames, ptrs = key_bias
            bias = torch.cat([frames.repeat_interleave(n, dim=1), ptrs], dim=1)[:, None, None]
        if plain:
            out = attention(q, torch.cat([k_rope, k[:, :, n_rope:]], dim=-2), v, attn_mask=bias)
            out = self.v_proj(out) if late_v else out
        else:
            out = self._pooled(q, k_rope, k[:, :, n_rope:], v[:, :, :n_rope], v[:, :, n_rope:])
        b, h, _, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def _late_values(self, q: torch.Tensor, v: torch.Tensor) -> bool:
        return self.num_heads == 1 and v.shape[-1] < self.v_proj.out_features and cpu_bf16_autocast(q.device)

    def _pooled(
        self,
        q: torch.Tensor,
        k_mem: torch.Tensor,
        k_ptr: torch.Tensor,
        v_mem: torch.Tensor,
        v_ptr: torch.Tensor,
    ) -> torch.Tensor:
        """EfficientTAM's pooled cross-attention over memory frames (2 x 2 average pooling per frame)."""
        k_pool, v_pool = _pool_frames(k_mem, q.shape[-2]), _pool_frames(v_mem, q.shape[-2])
        log4 = 2 * math.log(2)
        if self.kind == "pooled2":
            return attention(q, torch.cat([k_pool + log4, k_ptr], dim=-2), torch.cat([v_pool, v_ptr], dim=-2))
        scale = 1 / math.sqrt(q.shape[-1])
        logits = torch.cat(
            [q @ k_pool.transpose(-2, -1) * scale + log4, q @ k_ptr.transpose(-2, -1) * scale], -1
        )
        return logits.softmax(dim=-1) @ torch.cat([v_pool, v_ptr], dim=-2)


def _pool_frames(x: torch.Tensor, n: int) -> torch.Tensor:
    """B x H x (F*n) x D tokens of F square grids -> B x H x (F*n/4) x D, 2 x 2 averages per grid.

    Reshapes exactly as EfficientTAM does (frames and heads folded together), so results agree
    for any head count.
    """
    b, h, _, d = x.shape
    side = math.isqrt(n)
    g = x.reshape(b, -1, n, d).transpose(-2, -1).reshape(b, -1, side, side)
    g = F.avg_pool2d(g, 2, stride=2)
    return g.reshape(b, -1, d, n // 4).transpose(-2, -1).reshape(b, h, -1, d)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory, ReLU MLP (keys as official)."""

    def __init__(self, dim: int, mem_dim: int, feat_side: int, kind: CrossAttentionKind) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim, feat_side=feat_side)
        self.cross_attn_image = RoPEAttention(dim, kv_in_dim=mem_dim, feat_side=feat_side, kind=kind)
        self.linear1 = nn.Linear(dim, 2048)
        self.linear2 = nn.Linear(2048, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_ptr_tokens: int,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory + memory_pos, memory, num_ptr_tokens, key_bias)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class MemoryAttention(nn.Module):
    """Conditions the current frame's tokens on the memory bank. Keys ``layers.N.*``, ``norm``."""

    def __init__(
        self,
        dim: int = 256,
        mem_dim: int = 64,
        num_layers: int = 4,
        feat_side: int = 64,
        kind: CrossAttentionKind = "rope",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(dim, mem_dim, feat_side, kind) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_ptr_tokens: int,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """curr, curr_pos: B x N x C; memory, memory_pos: B x M x mem_dim (pointer tokens last) -> B x N x C.

        ``key_bias``: see :meth:`RoPEAttention.forward`.
        """
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_ptr_tokens, key_bias)
        return self.norm(x)


class CXBlock(nn.Module):
    """ConvNeXt block of the memory fuser: depthwise 7x7, LayerNorm, MLP x4, layer scale."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MaskDownSampler(nn.Module):
    """1 x S x S mask -> dim x S/16 x S/16: four (conv 3x3 stride 2, LayerNorm2d, GELU), then conv 1x1.

    Keys ``encoder.{0,1,3,4,6,7,9,10,12}`` as official.
    """

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(4):
            c_out = c_in * 4
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(c_out),
                nn.GELU(),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class MemoryEncoder(nn.Module):
    """Fuses a frame's features with its (scaled) mask into a memory: B x mem_dim x h x w."""

    def __init__(self, dim: int = 256, mem_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, mem_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pix_feat B x C x h x w (raw features), mask B x 1 x 16h x 16w (already sigmoid-scaled)."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)
        return self.out_proj(self.fuser(x))
