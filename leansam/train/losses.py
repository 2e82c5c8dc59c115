"""Losses of promptable-segmentation training and distillation.

All mask losses take logits and targets of shape ... x L x L and return one value per mask
(shape ...), so callers can select (multimask min-loss) or weight (hard prompts) per mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: ... x L x L -> ...."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss: ... x L x L -> ...."""
    p = torch.sigmoid(logits).flatten(-2)
    t = target.flatten(-2)
    num = 2 * (p * t).sum(-1) + eps
    den = p.sum(-1) + t.sum(-1) + eps
    return 1 - num / den


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with binary ``target``: ... x L x L -> ... (1 where both are empty)."""
    p = (logits > 0).flatten(-2)
    t = (target > 0.5).flatten(-2)
    inter = (p & t).sum(-1).float()
    union = (p | t).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def segmentation_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    multimask: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """SAM's loss: 20 x focal + 1 x dice on the masks, + MSE of the IoU head vs the true IoU.

    Args:
        logits: B x M x L x L mask logits (M candidates per prompt).
        iou_pred: B x M predicted IoUs.
        target: B x L x L binary ground truth.
        multimask: only the candidate with the lowest mask loss gets the mask gradient
            (ambiguous prompts); the IoU head is trained on every candidate.

    Returns:
        (loss per prompt B, parts {focal, dice, iou_mse} per prompt, index of the chosen candidate B).
    """
    t = target[:, None].expand_as(logits)
    focal = focal_loss(logits, t)
    dice = dice_loss(logits, t)
    mask_loss = focal_weight * focal + dice_weight * dice
    if multimask:
        best = mask_loss.argmin(1)
    else:
        best = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    rows = torch.arange(len(logits), device=logits.device)
    with torch.no_grad():
        true_iou = mask_iou(logits, t)
    iou_mse = ((iou_pred.float() - true_iou) ** 2).mean(1)
    loss = mask_loss[rows, best] + iou_weight * iou_mse
    parts = {
        "focal": focal[rows, best],
        "dice": dice[rows, best],
        "iou_mse": iou_mse,
        "iou": true_iou[rows, best],
    }
    return loss, parts, best
