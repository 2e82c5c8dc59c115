"""Prompt sampling from masks, as in SAM's training (boxes with jitter, clicks, correction clicks).

Conventions: masks are N x L x L tensors at the loss resolution L covering the padded
prompt frame of side ``frame`` (pixel (i, j) of the mask covers frame coordinates
``[j * s, (j + 1) * s) x [i * s, (i + 1) * s)``, ``s = frame / L``). Every function returns
prompts in prompt-frame coordinates (x, y), ready for ``Sam.prepare_prompts`` with
``original_size = (frame, frame)`` (scale 1). Randomness comes only from the ``torch.Generator``
passed in, so a run is reproducible from its per-step seeds.
"""

from __future__ import annotations

import torch


def boxes_from_masks(masks: torch.Tensor, frame: int) -> torch.Tensor:
    """N x L x L masks -> N x 4 tight XYXY boxes in frame coordinates (empty masks: zeros)."""
    _n, lh, lw = masks.shape
    s = frame / lw
    m = masks > 0.5
    rows, cols = m.any(2), m.any(1)
    ar_h = torch.arange(lh, device=masks.device)
    ar_w = torch.arange(lw, device=masks.device)
    big = 10**9
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float() * s
    return torch.where(m.flatten(1).any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def background_region(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The background as one segment: the pixels of the image that no instance covers.

    masks: N x L x L instance masks at the loss resolution L (padded prompt frame); size: (rows,
    cols) of the loss grid that the image fills (the rest is padding, never background).
    Returns 1 x L x L float {0, 1}.
    """
    lh, lw = size
    bg = torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
    bg[:lh, :lw] = True
    if len(masks):
        bg &= ~(masks > 0.5).any(0)
    return bg[None].float()


def jitter_boxes(
    boxes: torch.Tensor,
    gen: torch.Generator,
    frac: float = 0.1,
    max_px: float = 20.0,
    frame: int | None = None,
) -> torch.Tensor:
    """Adds N(0, (frac * box side)^2) noise to each coordinate, capped at ``max_px`` (SAM's recipe).

    boxes: N x 4 XYXY. ``max_px`` is in frame pixels; coordinates are clamped to [0, frame].
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=gen) * frac * wh
    out = boxes + noise.clamp(-max_px, max_px)
    x0 = torch.minimum(out[:, 0], out[:, 2] - 1)
    y0 = torch.minimum(out[:, 1], out[:, 3] - 1)
    out = torch.stack([x0, y0, out[:, 2], out[:, 3]], 1)
    if frame is not None:
        out = out.clamp(0, frame)
    return out


def sample_points(
    region: torch.Tensor, gen: torch.Generator, frame: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One point drawn uniformly from each N x L x L ``region`` (jittered inside its pixel).

    Returns (coords N x 2 in frame coordinates, valid N bool; False where the region is empty).
    """
    n, _lh, lw = region.shape
    w = region.flatten(1).float()
    valid = w.sum(1) > 0
    w = torch.where(valid[:, None], w, torch.ones_like(w))
    # Inverse-CDF sampling: the same distribution as torch.multinomial, an order of magnitude cheaper.
    cdf = w.cumsum(1)
    u = torch.rand((n, 1), generator=gen) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True)[:, 0].clamp(max=w.shape[1] - 1)
    ys, xs = idx // lw, idx % lw
    off = torch.rand((n, 2), generator=gen)
    s = frame / lw
    coords = torch.stack([xs.float() + off[:, 0], ys.float() + off[:, 1]], 1) * s
    return coords, valid


def correction_points(
    pred: torch.Tensor, gt: torch.Tensor, gen: torch.Generator, frame: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's iterative-training click: one point from the error region of each prediction.

    pred, gt: N x L x L binary. The point is drawn uniformly from ``pred XOR gt``; its label is
    1 where the error is a missed foreground pixel (false negative), 0 for a false positive.
    Predictions without error get a padding point (label -1).

    Returns (coords N x 1 x 2 in frame coordinates, labels N x 1 int64).
    """
    p, g = pred > 0.5, gt > 0.5
    err = p ^ g
    coords, valid = sample_points(err, gen, frame)
    lh, lw = gt.shape[-2:]
    s = frame / lw
    ix = (coords[:, 0] / s).long().clamp(0, lw - 1)
    iy = (coords[:, 1] / s).long().clamp(0, lh - 1)
    lab = g[torch.arange(len(g)), iy, ix].long()
    lab = torch.where(valid, lab, torch.full_like(lab, -1))
    coords = torch.where(valid[:, None], coords, torch.zeros_like(coords))
    return coords[:, None], lab[:, None]
