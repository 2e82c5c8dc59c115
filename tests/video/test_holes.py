"""Hole filling equals the official ``fill_holes_in_mask_scores`` with its connected-components op.

The official op is a CUDA kernel; ``tests.oracles`` provides an independent CPU implementation of its
contract (8-connected labels and per-pixel component areas), and the official Python function runs
on top of it. leansam labels with OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch

from leansam.video.holes import fill_holes
from tests import oracles


def _logits(seed: int) -> torch.Tensor:
    """2 x 1 x 64 x 64 logits with many small background specks (some touching only diagonally)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 1.0, (2, 1, 64, 64)).astype(np.float32)
    x[rng.random(x.shape) < 0.25] *= -1
    x[:, :, 40:, :24] = -3.0  # one large background region (not a hole)
    return torch.from_numpy(x)


def test_fill_holes_matches_the_official_function() -> None:
    misc = oracles.sam2().utils.misc
    for seed in range(3):
        x = _logits(seed)
        for area in (1, 3, 8):
            expected = misc.fill_holes_in_mask_scores(x.clone(), area)
            got = fill_holes(x, area)
            assert torch.equal(got, expected)
            assert not torch.equal(got, x)  # something was filled
    assert torch.equal(fill_holes(x, 0), x)
