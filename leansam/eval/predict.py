"""Batched mask prediction for the evaluators: one encoder call per image, chunked decoder calls."""

from __future__ import annotations

import numpy as np
import torch

from ..predictor import SamPredictor
from .gt_prompts import InstancePrompts


@torch.inference_mode()
def predict_instances(
    predictor: SamPredictor, prompts: InstancePrompts, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Masks for B prompts on the image already set in ``predictor``.

    Prompts are decoded ``batch_size`` at a time (one ``model.decode`` call per chunk), which
    bounds the memory of the full-size masks to ``batch_size x (3) x H x W``.

    Args:
        predictor: a :class:`SamPredictor` after ``set_image``.
        prompts: B prompts in pixels of the original image.
        batch_size: prompts per decoder call.

    Returns:
        masks B x H x W bool, predicted IoU B float32 (of the returned mask). With
        ``prompts.multimask`` the returned mask is the candidate with the highest predicted IoU.
    """
    h, w = predictor.original_size
    n = len(prompts)
    masks = np.zeros((n, h, w), dtype=bool)
    scores = np.zeros(n, dtype=np.float32)
    dev = predictor.device
    for start in range(0, n, batch_size):
        chunk = prompts.select(slice(start, start + batch_size))
        boxes = torch.from_numpy(chunk.boxes).to(dev) if chunk.boxes is not None else None
        points = torch.from_numpy(chunk.points).to(dev) if chunk.points is not None else None
        labels = torch.from_numpy(chunk.labels).to(dev) if chunk.labels is not None else None
        m, iou, _ = predictor.predict_torch(
            points, labels, boxes, multimask_output=chunk.multimask, original_coords=True
        )
        best = iou.float().argmax(dim=1)
        rows = torch.arange(m.shape[0], device=m.device)
        masks[start : start + len(chunk)] = m[rows, best].cpu().numpy()
        scores[start : start + len(chunk)] = iou.float()[rows, best].cpu().numpy()
    return masks, scores
