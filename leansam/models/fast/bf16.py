"""Attention in bfloat16 on CPU: bf16 matrix products, an unnormalised softmax, query blocks.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)``, ``F.scaled_dot_product_attention`` runs its
fused CPU kernel, which computes in float32 and is no faster than in float32. Matrix products in
bfloat16 are (AVX512-BF16 / AMX). :func:`attention` uses them under CPU bf16 autocast and the fused
kernel otherwise, so float32 results are unchanged. See docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Queries per block: the block's logits (block x keys, bf16) stay in cache-friendly sizes.
BLOCK = 512


def cpu_bf16_autocast(device: torch.device) -> bool:
    """Whether CPU autocast to bfloat16 is on and ``device`` is the CPU."""
    return (
        device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + attn_mask) v for q: ... x Nq x d, k: ... x Nk x d, v: ... x Nk x dv.

    ``attn_mask``: additive, broadcastable to ... x Nq x Nk. bf16 blocks under CPU bf16 autocast,
    ``F.scaled_dot_product_attention`` otherwise.
    """
    if cpu_bf16_autocast(q.device):
        return blocked_bf16_attention(q, k, v, attn_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def blocked_bf16_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    block: int = BLOCK,
) -> torch.Tensor:
    """The same attention in bfloat16, ``block`` queries at a time; returns ... x Nq x dv in bf16.

    Each block's logits are exponentiated in place after subtracting their row maximum (as a
    softmax does); the row sums come out of the second product through a column of ones appended
    to v, and the division happens on the Nq x dv output instead of the Nq x Nk probabilities.
    """
    dv = v.shape[-1]
    qs = (q * q.shape[-1] ** -0.5).to(torch.bfloat16)
    kt = k.to(torch.bfloat16).transpose(-2, -1).contiguous()  # products with a transposed view are slower
    pad = -(dv + 1) % 16  # keeps the product's width a multiple of 16
    ones = v.new_ones(*v.shape[:-1], 1)
    v1 = torch.cat([v, ones, v.new_zeros(*v.shape[:-1], pad)], dim=-1).to(torch.bfloat16)
    mask = None if attn_mask is None else attn_mask.to(torch.bfloat16)
    outs = []
    for i in range(0, qs.shape[-2], block):
        x = qs[..., i : i + block, :] @ kt
        if mask is not None:
            x = x + (mask if mask.shape[-2] == 1 else mask[..., i : i + block, :])
        x.sub_(x.amax(dim=-1, keepdim=True)).exp_()
        o = x @ v1
        outs.append((o[..., :dv].float() / o[..., dv : dv + 1].float()).to(torch.bfloat16))
    return torch.cat(outs, dim=-2)
