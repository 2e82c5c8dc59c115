"""Fixtures shared by the video tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import parity as P
from tests.video import cases as C


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray, Path, np.ndarray]:
    """(folder of 3 PNG frames, the frames, stand-in checkpoint of ``C.CLIP_MODEL``, the box on frame 0)."""
    root = tmp_path_factory.mktemp("clip")
    z, _ = C.load(C.CLIP_CASE)
    frames = z["frames"][:3]
    (root / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{i:05d}.png")
    ckpt = P.write_stand_in_checkpoint(C.CLIP_WEIGHTS, root / f"{C.CLIP_WEIGHTS}.pt")
    return root / "frames", frames, ckpt, z["c1_box"]
