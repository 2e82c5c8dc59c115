"""Prompt sampling and losses of leansam.train."""

from __future__ import annotations

import torch

from leansam.train.losses import dice_loss, focal_loss, mask_iou, segmentation_loss
from leansam.train.prompts import (
    background_region,
    boxes_from_masks,
    correction_points,
    jitter_boxes,
    sample_points,
)


def _square(n: int, y0: int, y1: int, x0: int, x1: int, size: int = 32) -> torch.Tensor:
    m = torch.zeros(n, size, size)
    m[:, y0:y1, x0:x1] = 1
    return m


def test_boxes_from_masks_frame_coordinates() -> None:
    m = _square(1, 4, 8, 2, 10)  # L = 32 over a 128 frame: 4 px per cell
    assert boxes_from_masks(m, 128).tolist() == [[8.0, 16.0, 40.0, 32.0]]
    assert boxes_from_masks(torch.zeros(1, 32, 32), 128).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_jitter_is_seeded_and_capped() -> None:
    b = torch.tensor([[10.0, 10.0, 200.0, 200.0]])
    a1 = jitter_boxes(b, torch.Generator().manual_seed(1), 0.1, 20.0, 256)
    a2 = jitter_boxes(b, torch.Generator().manual_seed(1), 0.1, 20.0, 256)
    assert torch.equal(a1, a2)
    assert (a1 - b).abs().max() <= 20.0
    assert (a1[:, 2:] > a1[:, :2]).all()


def test_points_inside_region() -> None:
    m = _square(8, 4, 8, 2, 10) > 0
    c, valid = sample_points(m, torch.Generator().manual_seed(0), 128)
    assert valid.all()
    assert ((c[:, 0] >= 8) & (c[:, 0] < 40) & (c[:, 1] >= 16) & (c[:, 1] < 32)).all()
    _, valid = sample_points(torch.zeros(2, 32, 32, dtype=torch.bool), torch.Generator(), 128)
    assert not valid.any()


def test_background_region_is_the_image_outside_every_instance() -> None:
    masks = torch.cat([_square(1, 0, 4, 0, 4, size=8), _square(1, 2, 6, 3, 5, size=8)])
    bg = background_region(masks, (6, 7))  # rows 6-7 and column 7 are padding
    want = torch.zeros(8, 8)
    want[:6, :7] = 1
    want[0:4, 0:4] = 0
    want[2:6, 3:5] = 0
    assert bg.shape == (1, 8, 8) and torch.equal(bg[0], want)
    assert torch.equal(background_region(torch.zeros(0, 8, 8), (8, 8)), torch.ones(1, 8, 8))


def test_correction_point_labels() -> None:
    gt = _square(3, 0, 16, 0, 16)
    pred = torch.zeros_like(gt)  # all misses -> positive clicks inside gt
    c, lab = correction_points(pred, gt, torch.Generator().manual_seed(0), 32)
    assert lab[:, 0].tolist() == [1, 1, 1]
    assert (c[:, 0] < 16).all()
    fp = torch.ones_like(gt)  # false positives outside gt -> negative clicks
    _, lab = correction_points(fp, gt, torch.Generator().manual_seed(0), 32)
    assert (lab == 0).all()
    _, lab = correction_points(gt, gt, torch.Generator().manual_seed(0), 32)  # perfect -> padding
    assert (lab == -1).all()


def test_losses_and_multimask_selection() -> None:
    target = _square(2, 0, 16, 0, 16)
    good = target * 20 - 10
    bad = -good
    logits = torch.stack([bad, good, bad], 1)  # B x 3 x L x L
    iou_pred = torch.zeros(2, 3)
    loss, parts, best = segmentation_loss(logits, iou_pred, target, multimask=True)
    assert best.tolist() == [1, 1]
    assert parts["iou"].tolist() == [1.0, 1.0]
    single, _, best0 = segmentation_loss(logits, iou_pred, target, multimask=False)
    assert best0.tolist() == [0, 0] and (single > loss).all()
    assert focal_loss(good, target).max() < 1e-3 and dice_loss(good, target).max() < 1e-3
    assert mask_iou(torch.full((1, 4, 4), -1.0), torch.zeros(1, 4, 4)).item() == 1.0
