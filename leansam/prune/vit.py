"""Structural pruning of SAM's ViT image encoder (:class:`~leansam.models.vit.ViTImageEncoder`).

Coupled channel groups (every tensor slice that must go together):

* **embedding** (one group for the whole encoder, C channels): ``patch_embed.proj`` rows,
  ``pos_embed``'s last axis, every block's ``norm1``/``norm2``, ``qkv`` and ``mlp.lin1``
  columns, ``attn.proj`` and ``mlp.lin2`` rows, ``neck.0`` columns;
* **q/k head dims** (per block, head_dim channels): dim d of every head in ``q`` and ``k``,
  and column d of the relative-position tables ``rel_pos_h``/``rel_pos_w`` (one table shared by
  all heads, so every head keeps the same dims); the head count is kept, as in SlimSAM;
* **v head dims** (per block and head): v rows of that head and the matching ``attn.proj`` columns;
* **MLP hidden units** (per block): ``mlp.lin1`` rows and ``mlp.lin2`` columns.

Kept widths are rounded down to a multiple of the head count (embedding, MLP) or taken per head
(q/k, v), so ``sam_vit_b`` at ratio 0.5 gives SlimSAM-50's widths (embed 384, MLP 1536, head dim
32) and at 0.77 SlimSAM-77's (168, 696, 14). Attention keeps its logits' scale: ``k`` is
multiplied by sqrt(new head dim / old head dim), compensating the new ``head_dim**-0.5``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.vit import ViTConfig, ViTImageEncoder

#: ``score(param, axis) -> 1-D importance per index along axis`` (see :mod:`.importance`).
Scorer = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class ViTWidths:
    """Target widths: embedding channels, q/k and v dims per head, MLP hidden units (every block)."""

    embed: int
    qk_head: int
    v_head: int
    mlp: int


def current_widths(cfg: ViTConfig) -> list[tuple[int, int, int]]:
    """(qk_dim, v_dim, mlp_dim) of every block."""
    if cfg.block_dims is not None:
        return [tuple(d) for d in cfg.block_dims]
    return [(cfg.embed_dim, cfg.embed_dim, cfg.mlp_dim)] * cfg.depth


def target_widths(
    base: ViTConfig, now: ViTConfig, ratio: float, bottleneck: bool, embedding: bool
) -> ViTWidths:
    """Widths after removing ``ratio`` of the chosen dimension kinds of ``base`` (the unpruned model);
    the other kinds keep their widths in ``now`` (the model being pruned).

    Embedding and MLP widths round down to a multiple of ``num_heads`` (at least one per head);
    head dims round down per head (at least 1).
    """
    h = base.num_heads
    keep = 1.0 - ratio
    qk, v, mlp = current_widths(base if bottleneck else now)[0]
    if bottleneck:
        qk_head, v_head = max(1, math.floor(qk // h * keep)), max(1, math.floor(v // h * keep))
        mlp = max(h, math.floor(mlp * keep / h) * h)
    else:
        qk_head, v_head = qk // h, v // h
    embed = max(h, math.floor(base.embed_dim * keep / h) * h) if embedding else now.embed_dim
    return ViTWidths(embed, qk_head, v_head, mlp)


def check_prunable(enc: ViTImageEncoder) -> None:
    """Raises ``ValueError`` for encoders this module cannot prune."""
    if enc.cfg.block_dims is not None and len({tuple(d) for d in enc.cfg.block_dims}) > 1:
        raise ValueError(
            "the ViT has non-uniform block widths (a globally pruned model); prune its base model"
        )


def _embed_scores(enc: ViTImageEncoder, score: Scorer) -> torch.Tensor:
    pe_axis = enc.pos_embed.dim() - 1
    s = score(enc.patch_embed.proj.weight, 0) + score(enc.patch_embed.proj.bias, 0)
    s = s + score(enc.pos_embed, pe_axis)
    for blk in enc.blocks:
        for norm in (blk.norm1, blk.norm2):
            s = s + score(norm.weight, 0) + score(norm.bias, 0)
        s = s + score(blk.attn.qkv.weight, 1) + score(blk.mlp.lin1.weight, 1)
        s = s + score(blk.attn.proj.weight, 0) + score(blk.attn.proj.bias, 0)
        s = s + score(blk.mlp.lin2.weight, 0) + score(blk.mlp.lin2.bias, 0)
    return s + score(enc.neck[0].weight, 1)


def _qkv_rows(attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-index tables of qkv: q, k (heads x head_dim) and v (heads x v_head_dim)."""
    h, d, dv = attn.num_heads, attn.head_dim, attn.v_head_dim
    q = torch.arange(h * d).reshape(h, d)
    return q, q + h * d, 2 * h * d + torch.arange(h * dv).reshape(h, dv)


def _block_scores(blk, score: Scorer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q/k dim scores [head_dim], v scores [heads x v_head_dim], MLP scores [hidden])."""
    attn = blk.attn
    rows = score(attn.qkv.weight, 0)
    if attn.qkv.bias is not None:
        rows = rows + score(attn.qkv.bias, 0)
    q, k, v = _qkv_rows(attn)
    qk = rows[q].sum(0) + rows[k].sum(0)
    if attn.use_rel_pos:
        qk = qk + score(attn.rel_pos_h, 1) + score(attn.rel_pos_w, 1)
    vs = rows[v] + score(attn.proj.weight, 1)[v - v.min()]
    mlp = score(blk.mlp.lin1.weight, 0) + score(blk.mlp.lin1.bias, 0) + score(blk.mlp.lin2.weight, 1)
    return qk, vs, mlp


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores along the last axis, in ascending index order."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


@torch.no_grad()
def prune_vit(enc: ViTImageEncoder, widths: ViTWidths, score: Scorer) -> ViTImageEncoder:
    """A new encoder with ``widths``, keeping the highest-scoring channels of every group of ``enc``.

    ``score`` sees ``enc``'s parameters (with their ``.grad`` when the scorer uses gradients).
    """
    check_prunable(enc)
    cfg = enc.cfg
    keep_e = _top(_embed_scores(enc, score), widths.embed)
    state = enc.state_dict()
    new = {}
    for key in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
        new[key] = state[key][keep_e]
    new["pos_embed"] = state["pos_embed"].index_select(enc.pos_embed.dim() - 1, keep_e)
    new["neck.0.weight"] = state["neck.0.weight"][:, keep_e]
    for key in state:
        if key.startswith("neck.") and key != "neck.0.weight":
            new[key] = state[key]
    for i, blk in enumerate(enc.blocks):
        new.update(_prune_block(blk, f"blocks.{i}.", keep_e, widths, score))
    block_dims = ((widths.qk_head * cfg.num_heads, widths.v_head * cfg.num_heads, widths.mlp),) * cfg.depth
    uniform = block_dims[0][:2] == (widths.embed, widths.embed)
    new_cfg = dataclasses.replace(
        cfg, embed_dim=widths.embed, mlp_dim=widths.mlp, block_dims=None if uniform else block_dims
    )
    out = ViTImageEncoder(new_cfg)
    out.load_state_dict(new, strict=True)
    return out.to(enc.pos_embed.device)


def _prune_block(blk, prefix: str, keep_e: torch.Tensor, widths: ViTWidths, score: Scorer) -> dict:
    attn = blk.attn
    qk_s, v_s, mlp_s = _block_scores(blk, score)
    keep_qk = _top(qk_s, widths.qk_head)
    keep_v = _top(v_s, widths.v_head)  # heads x v_head (own dims per head)
    keep_m = _top(mlp_s, widths.mlp)
    q, k, v = _qkv_rows(attn)
    rows = torch.cat([q[:, keep_qk].reshape(-1), k[:, keep_qk].reshape(-1), v.gather(1, keep_v).reshape(-1)])
    v_cols = (v.gather(1, keep_v) - v.min()).reshape(-1)
    n_qk = attn.num_heads * widths.qk_head
    # k scaled so that q.k * new_head_dim**-0.5 equals the old logits on the kept dims.
    k_scale = math.sqrt(widths.qk_head / attn.head_dim)
    rs = torch.ones(len(rows))
    rs[n_qk : 2 * n_qk] = k_scale
    out = {
        "norm1.weight": blk.norm1.weight[keep_e],
        "norm1.bias": blk.norm1.bias[keep_e],
        "norm2.weight": blk.norm2.weight[keep_e],
        "norm2.bias": blk.norm2.bias[keep_e],
        "attn.qkv.weight": attn.qkv.weight[rows][:, keep_e] * rs.to(attn.qkv.weight)[:, None],
        "attn.proj.weight": attn.proj.weight[keep_e][:, v_cols],
        "attn.proj.bias": attn.proj.bias[keep_e],
        "mlp.lin1.weight": blk.mlp.lin1.weight[keep_m][:, keep_e],
        "mlp.lin1.bias": blk.mlp.lin1.bias[keep_m],
        "mlp.lin2.weight": blk.mlp.lin2.weight[keep_e][:, keep_m],
        "mlp.lin2.bias": blk.mlp.lin2.bias[keep_e],
    }
    if attn.qkv.bias is not None:
        out["attn.qkv.bias"] = attn.qkv.bias[rows] * rs.to(attn.qkv.bias)
    if attn.use_rel_pos:
        out["attn.rel_pos_h"] = attn.rel_pos_h[:, keep_qk]
        out["attn.rel_pos_w"] = attn.rel_pos_w[:, keep_qk]
    return {prefix + k: v.detach().clone() for k, v in out.items()}
