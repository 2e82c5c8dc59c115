"""Mask clean-up shared by the predictor and the mask generator."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _remove_small_regions(mask: np.ndarray, area: float, mode: str) -> np.ndarray:
    """Removes connected components below ``area`` pixels: ``holes`` (background) or ``islands``.

    mask: H x W bool. Connectivity 8, as segment_anything's ``remove_small_regions``.
    """
    fill = mode == "holes"
    work = (fill ^ mask).astype(np.uint8)
    _, regions, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask
    return np.where(np.isin(regions, small), fill, mask)


def fill_holes_and_remove_sprinkles(
    masks: torch.Tensor, max_hole_area: float, max_sprinkle_area: float
) -> torch.Tensor:
    """B x C x H x W bool masks with small holes filled and small specks removed (SAM 2 semantics)."""
    out = masks.cpu().numpy().copy()
    for idx in np.ndindex(out.shape[:-2]):
        m = out[idx]
        if max_hole_area > 0:
            m = _remove_small_regions(m, max_hole_area, "holes")
        if max_sprinkle_area > 0:
            m = _remove_small_regions(m, max_sprinkle_area, "islands")
        out[idx] = m
    return torch.from_numpy(out).to(masks.device)
