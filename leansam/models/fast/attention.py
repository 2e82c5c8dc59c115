"""Attention of a few prompt tokens with thousands of image tokens, without projecting the image.

The decoder's cross attentions pair T prompt tokens (~5-12) with N image tokens (64 x 64). Projecting
every image token (N x C x D) dominates the decoder's cost, so when T is small the projections are
folded into the token side::

    (W_q q) . (W_k x) = (W_k^T W_q q) . x      and      sum_n p_n (W_v x_n) = W_v sum_n p_n x_n

which is the same arithmetic reassociated (equal up to float rounding). Functions here take the
reference :class:`~leansam.models.transformer.Attention` modules and read their weights.
See docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..transformer import Attention


def bmm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched x @ y for Bx x M x K and By x K x N where Bx or By may be 1 (broadcast).

    ``torch.matmul`` materialises the broadcast operand for every batch entry; here a
    batch-1 operand is folded into one plain matrix product instead (no copies).
    """
    bx, by = x.shape[0], y.shape[0]
    if bx == by:
        return torch.bmm(x, y)
    if by == 1:
        return (x.reshape(-1, x.shape[-1]) @ y[0]).view(bx, x.shape[1], y.shape[-1])
    k, n = y.shape[1], y.shape[2]
    out = x[0] @ y.transpose(0, 1).reshape(k, by * n)  # M x (By * N)
    return out.view(x.shape[1], by, n).transpose(0, 1)


def softmax_short_rows(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Softmax over a short last dimension (a few prompt tokens).

    ``Tensor.softmax`` is slow on CPU for rows this short; this is the same formula (max-subtracted,
    so as stable), computed in place on a fresh tensor (on ``x`` itself with ``inplace``).
    """
    x = x.sub_(x.amax(dim=-1, keepdim=True)) if inplace else x - x.amax(dim=-1, keepdim=True)
    x.exp_()
    return x.div_(x.sum(dim=-1, keepdim=True))


def folds(attn: Attention, n_tokens: int) -> bool:
    """Whether the folded form is cheaper than projecting the image tokens."""
    return n_tokens * attn.num_heads < attn.internal_dim


def attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` where either side may still be the shared image (batch 1): projected once."""
    h = attn.num_heads

    def heads(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, h, c // h).transpose(1, 2)

    q, k, v = heads(attn.q_proj(q)), heads(attn.k_proj(k)), heads(attn.v_proj(v))
    b = max(q.shape[0], k.shape[0])
    q, k, v = q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
    out = F.scaled_dot_product_attention(q, k, v)
    b, h, n, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def tokens_to_image(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pe: torch.Tensor | None = None
) -> torch.Tensor:
    """Tokens attend to the image. q: B x T x C; k, v: Bi x N x C (Bi = 1 or B); keys = k + k_pe.

    Same result as ``attn(q, k + k_pe, v)`` without projecting the N image tokens.
    """
    b, t, c = q.shape
    h, d = attn.num_heads, attn.internal_dim // attn.num_heads
    qp = attn.q_proj(q).view(b, t, h, d) * d**-0.5
    wk = attn.k_proj.weight.view(h, d, c)
    q_img = torch.einsum("bthd,hdc->bthc", qp, wk).reshape(b, t * h, c)  # queries in image space
    q_bias = torch.einsum("bthd,hd->bth", qp, attn.k_proj.bias.view(h, d)).reshape(b, t * h, 1)
    logits = bmm(q_img, k.transpose(1, 2))
    if k_pe is not None:
        logits = logits + bmm(q_img, k_pe.transpose(1, 2))
    p = (logits + q_bias).softmax(dim=-1)  # B x T*H x N
    mixed = bmm(p, v).view(b, t, h, c)  # attention-weighted image tokens
    wv = attn.v_proj.weight.view(h, d, c)
    out = torch.einsum("bthc,hdc->bthd", mixed, wv) + attn.v_proj.bias.view(h, d)
    return attn.out_proj(out.reshape(b, t, h * d))


def image_to_tokens(
    attn: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pe: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The image attends to the tokens. q: Bi x N x C (queries = q + q_pe); k, v: B x T x C -> B x N x C.

    Same result as ``attn(q + q_pe, k, v)`` (plus ``residual``, Bi x N x C, when given) without
    projecting the N image tokens in or out.
    """
    b, t, c = k.shape
    h, d = attn.num_heads, attn.internal_dim // attn.num_heads
    kp = attn.k_proj(k).view(b, t, h, d) * d**-0.5
    vp = attn.v_proj(v).view(b, t, h, d)
    k_img = torch.einsum("bthd,hdc->bhtc", kp, attn.q_proj.weight.view(h, d, c)).reshape(b, h * t, c)
    k_bias = torch.einsum("bthd,hd->bht", kp, attn.q_proj.bias.view(h, d)).reshape(b, 1, h * t)
    if q_pe is not None and q.shape[0] == 1:
        q, q_pe = q + q_pe, None  # still the shared image: one small add
    logits = bmm(q, k_img.transpose(1, 2))
    if q_pe is not None:
        logits = logits + bmm(q_pe, k_img.transpose(1, 2))
    n = logits.shape[1]
    p = softmax_short_rows((logits + k_bias).view(b, n, h, t), inplace=True).view(b, n, h * t)
    w_out = attn.out_proj.weight.view(c, h, d)
    v_out = torch.einsum("bthd,chd->bhtc", vp, w_out).reshape(b, h * t, c)  # values already out-projected
    if residual is None:
        return torch.baddbmm(attn.out_proj.bias.expand(b, n, c), p, v_out)
    # Each of the h heads' attention rows sums to 1, so adding bias / h to every value row adds the
    # output bias exactly once: the residual add and the bias ride on the one product.
    return torch.baddbmm(residual.expand(b, n, c), p, v_out + attn.out_proj.bias / h)
