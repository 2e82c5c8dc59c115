"""Tiny registered models for fast evaluation and benchmark tests.

* ``tiny_test`` (:func:`build_tiny`): a seeded pooling encoder (B x 3 x 1024 x 1024 ->
  B x 32 x 16 x 16) with the shared prompt encoder and a 32-dim mask decoder; random but
  deterministic weights, real decode path, meaningless masks. For the benchmark harness.
* ``tiny_scripted`` (:func:`build_scripted`): the same encoder, but a scripted ``decode`` whose
  masks follow the prompts: a box gives its rectangle; clicks give disks (radius 16 / 48 / 96
  px of the 1024 frame for the 3 candidates, predicted IoU 0.6 / 0.9 / 0.3, single-mask output
  = the 48 px disk). mIoU and AP then take non-trivial values. For the evaluation harness.

:func:`register` adds both to the registry for the duration of a test (``monkeypatch``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leansam.models.mask_decoder import MaskDecoder
from leansam.models.prompt_encoder import PromptEncoder
from leansam.models.sam import ImageFeatures, Sam
from leansam.registry import ModelInfo, _registry

NAME = "tiny_test"
SCRIPTED = "tiny_scripted"
DIM, GRID = 32, 16
RADII = (16.0, 48.0, 96.0)  # click-disk radii in prompt-frame pixels, per candidate
IOU_PRED = (0.6, 0.9, 0.3)


class PooledEncoder(nn.Module):
    """B x 3 x 1024 x 1024 -> B x 32 x 16 x 16: average pooling and two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, 1)
        self.mix = nn.Conv2d(DIM, DIM, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.tanh(self.proj(F.adaptive_avg_pool2d(x, GRID))))


def _seeded(model: Sam) -> Sam:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def build_tiny() -> Sam:
    return _seeded(Sam(PooledEncoder(), PromptEncoder(DIM, (GRID, GRID), (1024, 1024)), MaskDecoder(DIM)))


class ScriptedSam(Sam):
    """``decode`` draws the prompt: a box's rectangle, or disks around the clicks (see module doc)."""

    def decode(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coords, labels = points
        b = coords.shape[0]
        side = 256  # low-res logits cover the 1024 prompt frame, 4 px per cell
        c = (torch.arange(side, dtype=torch.float32) + 0.5) * (1024 / side)
        yy, xx = c.view(1, side, 1), c.view(1, 1, side)
        radii = RADII if multimask_output else RADII[1:2]
        out = torch.full((b, len(radii), side, side), -8.0)
        for i in range(b):
            is_box = (labels[i] == 2).any()
            if is_box:
                x0, y0 = coords[i][labels[i] == 2][0].tolist()
                x1, y1 = coords[i][labels[i] == 3][0].tolist()
                inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
                out[i, :] = torch.where(inside, 8.0, -8.0)
                continue
            pos = coords[i][labels[i] == 1]
            for k, r in enumerate(radii):
                d2 = ((xx[..., None] - pos[:, 0]) ** 2 + (yy[..., None] - pos[:, 1]) ** 2).amin(-1)
                out[i, k] = torch.where(d2[0] <= r * r, 8.0, -8.0)
        ious = IOU_PRED if multimask_output else IOU_PRED[1:2]
        iou = torch.tensor(ious).expand(b, -1).clone()
        return out, iou, torch.ones(b, 1)


def build_scripted() -> Sam:
    return _seeded(
        ScriptedSam(PooledEncoder(), PromptEncoder(DIM, (GRID, GRID), (1024, 1024)), MaskDecoder(DIM))
    )


INFO = ModelInfo(name=NAME, family="test", builder=build_tiny, weights=None)
SCRIPTED_INFO = ModelInfo(name=SCRIPTED, family="test", builder=build_scripted, weights=None)


def register(monkeypatch) -> None:
    """Adds ``tiny_test`` and ``tiny_scripted`` to the registry (undone by ``monkeypatch``)."""
    monkeypatch.setitem(_registry(), NAME, INFO)
    monkeypatch.setitem(_registry(), SCRIPTED, SCRIPTED_INFO)
