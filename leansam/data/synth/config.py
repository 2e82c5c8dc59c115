"""Settings of the synthetic generator (:class:`SynthConfig`) and what it renders (:class:`SynthSample`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: COCO categories, id -> name. One per shape kind.
CATEGORIES: dict[int, str] = {
    1: "ellipse",
    2: "polygon",
    3: "blob",
    4: "thin",
    5: "holed",
    6: "letter",
    7: "parts",
}
KIND_IDS = {name: cid for cid, name in CATEGORIES.items()}

#: COCO area range boundaries (pixels): small < 32², large > 96².
SMALL_MAX = 32**2
LARGE_MIN = 96**2

#: Version 2 added letters, objects with parts, dead-leaves layouts, fractal and 1/f textures,
#: lighting, JPEG artefacts and shared colours (all but the two shape kinds off by default).
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. Validated on construction; ``dataclasses.asdict`` gives a JSON-able dict.

    Image size: the long side is uniform in ``[min_side, max_side]``, the aspect
    ratio log-uniform in ``[1, max_aspect]`` (short side clamped to ``min_side``),
    orientation random. ``size_mix`` are the relative odds of drawing a small /
    medium / large object (COCO ranges); ``kind_weights`` the odds of each of
    ``CATEGORIES`` in id order (5 entries: letters and part-objects never drawn).
    ``large_max_frac`` caps a large object's area as a fraction of the image area.

    Appearance and layout options (each a per-image or per-object probability, 0 = off; an option
    that is off draws no random numbers, so turning it on never changes other settings' images):
    ``dead_leaves_prob`` (the image is a dead-leaves layout: ``dead_leaves_objects`` x the object
    count, sizes from a power law, covering most of the frame), ``fractal_prob`` (a textured fill
    is fractal value noise or 1/f noise), ``lighting_prob`` (a smooth illumination field and
    vignette over the finished image), ``jpeg_prob`` (a JPEG round trip at quality 30..90),
    ``shared_colour_prob`` (an object takes the colour of the object painted before it).
    """

    min_side: int = 320
    max_side: int = 1024
    max_aspect: float = 2.0
    min_objects: int = 4
    max_objects: int = 16
    size_mix: tuple[float, float, float] = (0.4, 0.35, 0.25)
    kind_weights: tuple[float, ...] = (0.18, 0.22, 0.22, 0.12, 0.12, 0.07, 0.07)
    small_min_area: int = 40
    large_max_frac: float = 0.3
    min_area: int = 16
    min_visible_fraction: float = 0.08
    min_distractors: int = 2
    max_distractors: int = 8
    textured_fill_prob: float = 0.6
    shadow_prob: float = 0.3
    cluster_prob: float = 0.5
    contrast_prob: float = 0.85
    min_contrast: float = 40.0
    noise_std: float = 4.0
    blur_prob: float = 0.3
    jpeg_quality: int = 90
    dead_leaves_prob: float = 0.0
    dead_leaves_objects: float = 4.0
    fractal_prob: float = 0.0
    lighting_prob: float = 0.0
    jpeg_prob: float = 0.0
    shared_colour_prob: float = 0.0

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"SynthConfig: {msg}")

        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int":
                check(isinstance(v, int) and not isinstance(v, bool), f"{f.name} must be an int, got {v!r}")
            elif f.type == "float":
                check(isinstance(v, int | float) and not isinstance(v, bool), f"{f.name} must be a number")
        check(32 <= self.min_side <= self.max_side <= 8192, "need 32 <= min_side <= max_side <= 8192")
        check(1.0 <= self.max_aspect <= 8.0, "max_aspect must be in [1, 8]")
        check(0 <= self.min_objects <= self.max_objects <= 200, "need 0 <= min_objects <= max_objects <= 200")
        check(
            0 <= self.min_distractors <= self.max_distractors <= 200, "need 0 <= min/max_distractors <= 200"
        )
        check(len(self.size_mix) == 3, "size_mix must have 3 entries (small, medium, large)")
        check(
            len(self.kind_weights) in (5, len(CATEGORIES)),
            f"kind_weights must have 5 or {len(CATEGORIES)} entries (one per kind of CATEGORIES)",
        )
        check(1.0 <= self.dead_leaves_objects <= 10.0, "dead_leaves_objects must be in [1, 10]")
        for name in ("size_mix", "kind_weights"):
            w = getattr(self, name)
            check(all(float(x) >= 0 for x in w) and sum(w) > 0, f"{name} must be >= 0 with a positive sum")
        check(self.min_area >= 1, "min_area must be >= 1")
        check(self.min_area <= self.small_min_area < SMALL_MAX, "need min_area <= small_min_area < 32**2")
        check(0.0 < self.large_max_frac <= 1.0, "large_max_frac must be in (0, 1]")
        for name in [f.name for f in dataclasses.fields(self) if f.name.endswith("_prob")]:
            check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        check(0.0 <= self.min_visible_fraction <= 1.0, "min_visible_fraction must be in [0, 1]")
        check(0.0 <= self.min_contrast <= 255.0, "min_contrast must be in [0, 255]")
        check(0.0 <= self.noise_std <= 50.0, "noise_std must be in [0, 50]")
        check(1 <= self.jpeg_quality <= 100, "jpeg_quality must be in [1, 100]")

    def kind_probabilities(self) -> np.ndarray:
        """Probabilities of the kinds of :data:`CATEGORIES` in id order (missing kinds: 0)."""
        w = np.zeros(len(CATEGORIES))
        w[: len(self.kind_weights)] = self.kind_weights
        return w / w.sum()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        """Inverse of ``dataclasses.asdict`` (lists from JSON become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class SynthSample:
    """One rendered image: ``image`` is ``(H, W, 3)`` uint8 RGB (before JPEG);
    ``masks[k]`` the ``(H, W)`` bool visible mask of object k (non-overlapping),
    with its ``category_ids[k]``, shape ``variants[k]`` and ``visible_fractions[k]``
    (visible / in-frame pixels). Objects are listed back to front."""

    image: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    visible_fractions: list[float] = field(default_factory=list)
