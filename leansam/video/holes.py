"""Small-hole filling of SAM 2's video predictor, on every device.

The official predictor fills holes with a CUDA connected-components extension and silently skips
the step where the extension is missing (CPU). This is the same operation with OpenCV's labelling:
8-connected components of the background (logits <= 0) whose area is at most ``max_area`` pixels
become foreground with logit 0.1.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """B x 1 x h x w logits -> the same with small background components set to 0.1 (new tensor)."""
    if max_area <= 0:
        return logits
    background = (logits <= 0).to(torch.uint8).cpu().numpy()
    holes = np.zeros(background.shape, dtype=bool)
    for i in range(background.shape[0]):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background[i, 0], connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] <= max_area
        small[0] = False  # label 0 is the foreground (not a background component)
        if n > 1 and small.any():
            holes[i, 0] = small[labels]
    if not holes.any():
        return logits
    return torch.where(
        torch.from_numpy(holes).to(logits.device), torch.tensor(0.1, dtype=logits.dtype), logits
    )
