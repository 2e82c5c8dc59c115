"""The bundled example image ``leansam/assets/example.jpg`` (``make demo``) and its ground truth.

A rendered ``leansam.data.synth`` scene with one shaded ellipse painted on top; the demo prompts
it with the ellipse's box (60, 60, 330, 300) and a click at (200, 180).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .data import TINY_SYNTH


def example_alpha(shape: tuple[int, int]):
    """The anti-aliased coverage (H x W uint8, 0..255) of the ellipse painted into example.jpg;
    ``>= 128`` is its ground-truth mask (bounding box (60, 60, 330, 300), contains (200, 180))."""
    import cv2
    import numpy as np

    sub = 16  # 4 bits of subpixel precision
    alpha = np.zeros(shape, np.uint8)
    cv2.ellipse(alpha, (195 * sub, 180 * sub), (135 * sub, 120 * sub), 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    return alpha


def _example_scene(seed: int):
    """The rendered scene under example.jpg: (sample, (h, w) of the image)."""
    from ..data.synth import render_sample

    cfg = dataclasses.replace(
        TINY_SYNTH, min_side=400, max_side=400, max_aspect=1.12, min_objects=6, max_objects=9
    )
    for i in range(50):  # first landscape 400 x 360-ish scene
        s = render_sample(i, seed, cfg)
        if s.image.shape[1] == 400 and 340 <= s.image.shape[0] <= 380:
            return s, s.image.shape[:2]
    s = render_sample(0, seed, cfg)
    return s, s.image[:360, :400].shape[:2]


def example_objects(seed: int = 11, min_area: int = 100):
    """The ground-truth objects of example.jpg: N x H x W bool, the scene's visible masks less
    the painted ellipse (those keeping at least ``min_area`` pixels), then the ellipse."""
    import numpy as np

    s, (h, w) = _example_scene(seed)
    ellipse = example_alpha((h, w)) >= 128
    masks = [m[:h, :w] & ~ellipse for m in s.masks]
    return np.stack([m for m in masks if m.sum() >= min_area] + [ellipse])


def make_example(dest: str | Path | None = None, seed: int = 11) -> Path:
    """Writes ``leansam/assets/example.jpg``: a 400 x 360 synthetic scene for ``make demo``.

    A rendered ``leansam.data.synth`` scene (seed ``seed``, image 0) with one shaded ellipse
    painted on top whose bounding box is (60, 60, 330, 300) and which contains the demo click
    (200, 180): ``leansam segment leansam/assets/example.jpg --box 60,60,330,300 --point 200,180``.
    """
    import numpy as np
    from PIL import Image

    s, (h, w) = _example_scene(seed)
    img = s.image[:h, :w].copy()
    a = example_alpha((h, w)).astype(np.float32)[..., None] / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = np.clip(1.15 - 0.5 * ((xx - 150) ** 2 + (yy - 130) ** 2) ** 0.5 / 200, 0.55, 1.15)[..., None]
    colour = np.array([222, 120, 40], np.float32) * shade
    out = img.astype(np.float32) * (1 - a) + colour * a
    rng = np.random.default_rng(seed)
    out = np.clip(out + rng.normal(0, 3, out.shape), 0, 255).astype(np.uint8)
    dest = Path(dest) if dest else Path(__file__).resolve().parent.parent / "assets" / "example.jpg"
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(dest, quality=90)
    return dest
