"""Channel pruning of the default model's convolutional encoder (:class:`~leansam.models.tiny_fpn.TinyFPNEncoder`).

Coupled channel groups:

* **stem** (``stem_width``): the first stem conv-BN's outputs, the second stem conv's inputs;
* **stage width** (one group per stage, the residual stream): the outputs of every block's
  ``conv2``-BN, of the stage's shortcut conv-BN (or, for the identity shortcut of stage 1, of the
  second stem conv-BN), the inputs of the blocks reading that stream (``conv1`` and the next
  stage's shortcut) and of the FPN ``lateral`` conv;
* **block inner width** (per block, the "bottleneck"): ``conv1``-BN outputs and ``conv2`` inputs.

The FPN width (``out_chans``, the mask decoder's width) is kept. Alternate slimming prunes the
inner widths first (``bottleneck``), then the stem and stage widths (``embedding``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder
from .vit import Scorer

_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass
class _Group:
    """Tensors of one coupled group: conv-BN modules whose outputs and convs whose inputs it indexes."""

    n: int
    outs: list[str] = dataclasses.field(default_factory=list)  # conv-BN prefixes (Sequential(conv, bn))
    ins: list[str] = dataclasses.field(default_factory=list)  # conv weight keys (column axis)


def _groups(enc: TinyFPNEncoder) -> tuple[_Group, list[_Group], list[list[_Group]]]:
    """(stem group, stage-width groups, per-stage per-block inner-width groups)."""
    c = enc.config
    stem = _Group(c.stem_width, ["stem.0"], ["stem.2.0.weight"])
    res = [_Group(w) for w in c.widths]
    res[0].outs.append("stem.2")
    mids: list[list[_Group]] = []
    for i, stage in enumerate(enc.stages):
        mids.append([])
        for j, blk in enumerate(stage):
            p = f"stages.{i}.{j}."
            mids[i].append(_Group(blk.conv1[0].out_channels, [p + "conv1"], [p + "conv2.0.weight"]))
            res[i].outs.append(p + "conv2")
            reader = res[i - 1] if (j == 0 and i > 0) else res[i]
            reader.ins.append(p + "conv1.0.weight")
            if isinstance(blk.shortcut, nn.Sequential):
                res[i].outs.append(p + "shortcut")
                reader.ins.append(p + "shortcut.0.weight")
        res[i].ins.append(f"lateral.{i}.weight")
    return stem, res, mids


def _score(enc: nn.Module, g: _Group, score: Scorer) -> torch.Tensor:
    s = torch.zeros(g.n)
    for p in g.outs:
        m = enc.get_submodule(p)
        s = s + score(m[0].weight, 0) + score(m[1].weight, 0) + score(m[1].bias, 0)
    for key in g.ins:
        s = s + score(enc.get_parameter(key), 1)
    return s


def _keep(n: int, ratio: float) -> int:
    return max(1, round(n * (1.0 - ratio)))


@torch.no_grad()
def prune_tiny_fpn(
    enc: TinyFPNEncoder, ratio: float, bottleneck: bool, embedding: bool, score: Scorer, base: TinyFPNConfig
) -> TinyFPNEncoder:
    """A new encoder with ``ratio`` of the chosen channel kinds of ``base`` (the unpruned config) removed,
    keeping the highest-scoring channels of every group of ``enc``."""
    stem, res, mids = _groups(enc)
    plan: list[tuple[_Group, torch.Tensor]] = []

    def choose(g: _Group, n_new: int) -> int:
        s = _score(enc, g, score)
        plan.append((g, s.topk(n_new).indices.sort().values))
        return n_new

    c = enc.config
    base_mids = base.mids or tuple((w,) * d for w, d in zip(base.widths, base.depths))
    new_mids = tuple(
        tuple(choose(g, _keep(base_mids[i][j], ratio)) if bottleneck else g.n for j, g in enumerate(row))
        for i, row in enumerate(mids)
    )
    if embedding:
        new_stem = choose(stem, _keep(base.stem_width, ratio))
        new_widths = tuple(choose(g, _keep(w, ratio)) for g, w in zip(res, base.widths))
    else:
        new_stem, new_widths = c.stem_width, c.widths
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    for g, idx in plan:
        for p in g.outs:
            state[f"{p}.0.weight"] = state[f"{p}.0.weight"][idx]
            for b in _BN:
                state[f"{p}.1.{b}"] = state[f"{p}.1.{b}"][idx]
        for key in g.ins:
            state[key] = state[key][:, idx]
    cfg = dataclasses.replace(c, stem_width=new_stem, widths=new_widths, mids=new_mids)
    out = TinyFPNEncoder(cfg)
    out.load_state_dict(state, strict=True)
    return out.to(enc.pos_embed.device)
