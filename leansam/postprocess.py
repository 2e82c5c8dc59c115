"""Mask clean-up of the predictor (SAM 2's ``max_hole_area`` / ``max_sprinkle_area`` options)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _small_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """H x W bool -> pixels of the 8-connected components of ``mask`` with area <= ``max_area``."""
    _, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] <= max_area)
    small = small[small > 0]  # label 0 is the complement of ``mask``
    return np.isin(regions, small)


def fill_holes_and_remove_sprinkles(
    logits: torch.Tensor, mask_threshold: float, max_hole_area: float, max_sprinkle_area: float
) -> torch.Tensor:
    """SAM 2's clean-up of B x C x h x w (low-res) mask logits; returns new float logits.

    As ``SAM2Transforms.postprocess_masks``: every 8-connected background component
    (logit <= ``mask_threshold``) of area <= ``max_hole_area`` pixels is set to
    ``mask_threshold + 10``, and every foreground component (logit > ``mask_threshold``) of
    area <= ``max_sprinkle_area`` to ``mask_threshold - 10``. Both sets of components are those
    of the INPUT logits (SAM 2 labels the sprinkles on the mask from before hole filling, so a
    filled hole inside a removed speck stays foreground). Components touching the border count
    too. An area of 0 turns a step off.
    """
    out = logits.detach().float().cpu().numpy().copy()
    for idx in np.ndindex(out.shape[:-2]):
        m = out[idx]
        fg = m > mask_threshold
        holes = _small_components(~fg, max_hole_area) if max_hole_area > 0 else None
        specks = _small_components(fg, max_sprinkle_area) if max_sprinkle_area > 0 else None
        if holes is not None:
            m[holes] = mask_threshold + 10.0
        if specks is not None:
            m[specks] = mask_threshold - 10.0
    return torch.from_numpy(out).to(logits.device)
