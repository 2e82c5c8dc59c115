"""Procedural synthetic instance-segmentation data in COCO format.

``generate(n, out_dir, seed)`` writes::

    out_dir/images/000000.jpg, 000001.jpg, ...
    out_dir/annotations.json        # COCO instances, RLE masks (counts as str)

Each image is a cluttered textured background (noise, gradients, a "stuff"
region with a hard straight edge, soft texture patches and faint scribbles that
are *not* objects) with 4..16 objects painted back to front. Objects come in
five categories (``CATEGORIES``): ellipses; polygons (convex, rectangles,
concave, stars); smooth random blobs; thin structures 2..6 px wide (curves,
wiggles, arcs, branching twigs); and shapes with holes (annuli, frames, holed
blobs, thin hoops). Fills are flat colours, linear/radial gradients, stripes,
checkerboards or value noise, with shading, optional drop shadows and
anti-aliased edges; the image gets sensor noise and JPEG compression.

Annotations are the **visible** part of each object after occlusion by later
(front) objects and truncation by the image border, so the masks of one image
never overlap. Objects whose visible area is below ``min_area`` pixels or below
``min_visible_fraction`` of their in-frame area are dropped. Object sizes are
drawn from the COCO area ranges (small < 32², medium, large > 96²) by
``size_mix``; occlusion and truncation shift some objects to a smaller range.
A mask pixel is a pixel where the object's anti-aliased coverage is >= 50 %.

Determinism: image ``i`` is rendered from ``numpy.random.default_rng(
SeedSequence([seed, i]))`` only, so it is independent of ``n`` and of the
other images (``generate(10, ...)`` and ``generate(5, ...)`` share their first
five images). Image ids are ``i + 1`` (file ``f"{i:06d}.jpg"``); annotation ids
are ``1, 2, ...`` in image order (COCOeval treats id 0 as "unmatched"). Same
seed and config -> byte-identical JPEGs and JSON, on the same platform with the same
numpy/OpenCV/Pillow version.

Writing is atomic: everything goes to a hidden temporary sibling directory that
is renamed onto ``out_dir`` at the end; on any error it is removed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from leansam.data.coco import encode_mask, rle_area, rle_bbox, write_json_atomic

__all__ = ["CATEGORIES", "SynthConfig", "SynthSample", "generate", "render_sample", "synth_command"]

#: COCO categories, id -> name. One per shape kind.
CATEGORIES: dict[int, str] = {1: "ellipse", 2: "polygon", 3: "blob", 4: "thin", 5: "holed"}
_KIND_IDS = {name: cid for cid, name in CATEGORIES.items()}

#: COCO area range boundaries (pixels): small < 32², large > 96².
SMALL_MAX = 32**2
LARGE_MIN = 96**2

GENERATOR_VERSION = 1

_SUB = 16  # cv2 subpixel shift=4 -> 1/16 px


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. Validated on construction; ``dataclasses.asdict`` gives a JSON-able dict.

    Image size: the long side is uniform in ``[min_side, max_side]``, the aspect
    ratio log-uniform in ``[1, max_aspect]`` (short side clamped to ``min_side``),
    orientation random. ``size_mix`` are the relative odds of drawing a small /
    medium / large object (COCO ranges); ``kind_weights`` the odds of each of
    ``CATEGORIES`` in id order. ``large_max_frac`` caps a large object's area as
    a fraction of the image area.
    """

    min_side: int = 320
    max_side: int = 1024
    max_aspect: float = 2.0
    min_objects: int = 4
    max_objects: int = 16
    size_mix: tuple[float, float, float] = (0.4, 0.35, 0.25)
    kind_weights: tuple[float, float, float, float, float] = (0.2, 0.25, 0.25, 0.15, 0.15)
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
        check(len(self.kind_weights) == len(CATEGORIES), f"kind_weights must have {len(CATEGORIES)} entries")
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


# --------------------------------------------------------------------------- shapes
# A shape is a list of drawing ops in local pixel coordinates centred near (0, 0):
# ("fill", pts, value, 0) fills a polygon with 255 (solid) or 0 (hole);
# ("line", pts, 255, thickness) draws an open polyline.


@dataclass
class _Shape:
    kind: str
    variant: str
    ops: list[tuple[str, np.ndarray, int, int]]

    def bounds(self) -> tuple[float, float, float, float]:
        x0 = y0 = math.inf
        x1 = y1 = -math.inf
        for _, p, _, t in self.ops:
            r = t / 2.0
            x0, y0 = min(x0, p[:, 0].min() - r), min(y0, p[:, 1].min() - r)
            x1, y1 = max(x1, p[:, 0].max() + r), max(y1, p[:, 1].max() + r)
        return x0, y0, x1, y1


def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ellipse_pts(a: float, b: float, n: int | None = None) -> np.ndarray:
    if n is None:
        n = int(np.clip(2.0 * math.pi * max(a, b) / 2.0, 16, 256))
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=1)


def _radial_pts(rng: np.random.Generator, n_harm: int, amp: float, n: int = 128) -> np.ndarray:
    """Smooth star-shaped closed curve r(t) = 1 + sum a_k cos(k t + phi_k), min radius >= 0.3."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 2 + n_harm):
        r += rng.uniform(0.0, amp) / k**0.7 * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    lo = r.min()
    if lo < 0.3:  # squash amplitudes so the curve stays star-shaped with a solid core
        r = 1.0 + (r - 1.0) * (0.7 / (1.0 - lo))
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _finish(pts: np.ndarray, rng: np.random.Generator, target: float, squash: float = 0.5) -> np.ndarray:
    """Random anisotropic squash + rotation, then scale so the polygon area is ``target``."""
    pts = pts * np.array([1.0, rng.uniform(squash, 1.0)])
    pts = _rot(pts, rng.uniform(0, 2 * math.pi))
    return pts * math.sqrt(target / max(_poly_area(pts), 1e-9))


def _make_ellipse(rng: np.random.Generator, area: float) -> _Shape:
    r = math.exp(rng.uniform(math.log(0.3), 0.0))
    a = math.sqrt(area / (math.pi * r))
    pts = _rot(_ellipse_pts(a, a * r), rng.uniform(0, 2 * math.pi))
    return _Shape("ellipse", "ellipse" if r < 0.9 else "circle", [("fill", pts, 255, 0)])


def _make_polygon(rng: np.random.Generator, area: float) -> _Shape:
    variant = ("convex", "rect", "concave", "star")[int(rng.choice(4, p=[0.35, 0.2, 0.3, 0.15]))]
    if variant == "convex":
        n = int(rng.integers(3, 9))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = np.ones(n)
    elif variant == "rect":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        r = np.ones(4)
    elif variant == "concave":
        n = int(rng.integers(5, 13))
        t = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * math.pi / n
        r = rng.uniform(0.3, 1.0, n)
    else:
        n = int(rng.integers(4, 9))
        t = np.arange(2 * n) * math.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.3, 0.6))
    pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    return _Shape("polygon", variant, [("fill", _finish(pts, rng, area, 0.35), 255, 0)])


def _make_blob(rng: np.random.Generator, area: float) -> _Shape:
    lobed = rng.random() < 0.4
    pts = _radial_pts(rng, int(rng.integers(3, 7)), 0.8 if lobed else 0.4)
    return _Shape("blob", "lobed" if lobed else "smooth", [("fill", _finish(pts, rng, area), 255, 0)])


def _arclen(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def _bezier(ctrl: np.ndarray, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = ctrl
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _make_thin(rng: np.random.Generator, area: float, max_len: float) -> _Shape:
    thick = int(rng.choice([2, 2, 3, 3, 4, 5, 6]))
    length = float(np.clip(area / thick, 12.0, max_len))
    variant = ("curve", "wiggle", "arc", "branch")[int(rng.choice(4, p=[0.35, 0.25, 0.15, 0.25]))]
    if variant == "curve":
        ctrl = np.array([[0, 0], [1 / 3, 0], [2 / 3, 0], [1, 0]], float)
        ctrl[1:3] += rng.uniform(-0.6, 0.6, (2, 2))
        lines = [_bezier(ctrl)]
    elif variant == "wiggle":
        n = 40
        heading = np.cumsum(rng.normal(0.0, 0.35, n))
        heading = np.convolve(heading, np.ones(5) / 5, mode="same")
        lines = [
            np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1), 0)])
        ]
    elif variant == "arc":
        span = rng.uniform(0.6, 1.6) * math.pi
        t = np.linspace(0, span, 48)
        lines = [np.stack([np.cos(t), rng.uniform(0.5, 1.0) * np.sin(t)], 1)]
    else:
        ctrl = np.array([[0, 0], [1 / 3, 0], [2 / 3, 0], [1, 0]], float)
        ctrl[1:3] += rng.uniform(-0.3, 0.3, (2, 2))
        main = _bezier(ctrl)
        lines = [main]
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(8, len(main) - 8))
            d = main[i + 1] - main[i - 1]
            ang = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
            blen = rng.uniform(0.15, 0.4)
            end = main[i] + blen * np.array([math.cos(ang), math.sin(ang)])
            mid = (main[i] + end) / 2 + rng.normal(0, 0.04, 2)
            lines.append(np.stack([main[i], mid, end]))
    total = sum(_arclen(p) for p in lines)
    center = np.concatenate(lines).mean(axis=0)
    ang = rng.uniform(0, 2 * math.pi)
    ops = [("line", _rot(p - center, ang) * (length / total), 255, thick) for p in lines]
    return _Shape("thin", variant, ops)


def _make_holed(rng: np.random.Generator, area: float, max_len: float) -> _Shape:
    variant = ("annulus", "frame", "holed_blob", "hoop")[int(rng.choice(4, p=[0.3, 0.2, 0.3, 0.2]))]
    ang = rng.uniform(0, 2 * math.pi)
    if variant == "annulus":
        f = rng.uniform(0.3, 0.8)
        r = rng.uniform(0.5, 1.0)
        a = math.sqrt(area / (math.pi * r * (1 - f * f)))
        off = rng.uniform(-0.5, 0.5, 2) * (1 - f) * np.array([a, a * r])
        outer, inner = _ellipse_pts(a, a * r), _ellipse_pts(a * f, a * r * f) + off
        ops = [("fill", _rot(outer, ang), 255, 0), ("fill", _rot(inner, ang), 0, 0)]
    elif variant == "frame":
        w, h = 1.0, rng.uniform(0.4, 1.0)
        m = rng.uniform(0.1, 0.3) * h
        unit = w * h - (w - 2 * m) * (h - 2 * m)
        s = math.sqrt(area / unit)
        outer = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        inner = outer * np.array([(w - 2 * m) / w, (h - 2 * m) / h])
        ops = [("fill", _rot(outer * s, ang), 255, 0), ("fill", _rot(inner * s, ang), 0, 0)]
    elif variant == "holed_blob":
        outer = _radial_pts(rng, int(rng.integers(2, 5)), 0.3)
        rmin = float(np.linalg.norm(outer, axis=1).min())
        nh = int(rng.integers(1, 4))
        hr = rng.uniform(0.12, 0.28) * rmin * (1.6 if nh == 1 else 1.0)
        base = rng.uniform(0, 2 * math.pi)
        holes = []
        for k in range(nh):
            d = 0.0 if nh == 1 else (rmin - hr) * 0.55
            c = d * np.array([math.cos(base + 2 * math.pi * k / nh), math.sin(base + 2 * math.pi * k / nh)])
            holes.append(_ellipse_pts(hr, hr * rng.uniform(0.6, 1.0), 24) + c)
        unit = _poly_area(outer) - sum(_poly_area(h) for h in holes)
        s = math.sqrt(area / unit)
        ops = [("fill", _rot(outer * s, ang), 255, 0)] + [("fill", _rot(h * s, ang), 0, 0) for h in holes]
    else:
        width = float(rng.integers(3, 7))
        r = rng.uniform(0.6, 1.0)
        a = float(np.clip(area / (2 * math.pi * width), 3 * width / r, max(max_len / 2, 3 * width / r)))
        inner = _ellipse_pts(a - width, a * r - width)
        ops = [("fill", _rot(_ellipse_pts(a, a * r), ang), 255, 0), ("fill", _rot(inner, ang), 0, 0)]
    return _Shape("holed", variant, ops)


def _make_shape(rng: np.random.Generator, kind: str, area: float, max_len: float) -> _Shape:
    if kind in ("thin", "holed"):
        return (_make_thin if kind == "thin" else _make_holed)(rng, area, max_len)
    return {"ellipse": _make_ellipse, "polygon": _make_polygon, "blob": _make_blob}[kind](rng, area)


def _rasterize(shape: _Shape, x0: float, y0: float, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage (uint8 0..255) of a placed shape on the ``h x w`` window at (x0, y0)."""
    alpha = np.zeros((h, w), np.uint8)
    off = np.array([x0, y0], float)
    for op, pts, val, thick in shape.ops:
        p = np.round((pts - off) * _SUB).astype(np.int32)
        if op == "fill":
            cv2.fillPoly(alpha, [p], val, lineType=cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(alpha, [p], False, val, thickness=thick, lineType=cv2.LINE_AA, shift=4)
    return alpha


# --------------------------------------------------------------------------- appearance


def _colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(0, 255, 3)
    if rng.random() < 0.3:  # desaturate towards grey
        c = c * 0.4 + c.mean() * 0.6
    return c.astype(np.float32)


def _near(rng: np.random.Generator, c: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(c + rng.normal(0, spread, 3), 0, 255).astype(np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with feature size ~``cell`` px (bicubic upsampling of a random grid)."""
    cell = max(cell, 1.5)
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(up[:h, :w], 0.0, 1.0)


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    return math.cos(angle) * x + math.sin(angle) * y


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float32, copy=False)
    return cv2.merge([t * float(c2[k] - c1[k]) + float(c1[k]) for k in range(3)])


# numpy broadcasting over a trailing axis of size 3 is slow; these cv2-based helpers are 3-8x faster.


def _rep3(a: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 -> ``(H, W, 3)`` with the same value in each channel."""
    return cv2.merge([a, a, a])


def _lerp(dst: np.ndarray, src: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``dst + (src - dst) * a`` for ``(H, W, 3)`` images and an ``(H, W)`` weight in [0, 1]."""
    return cv2.blendLinear(dst, src, 1.0 - a, a)


def _pattern(
    rng: np.random.Generator, h: int, w: int, c1: np.ndarray, c2: np.ndarray, scale: float, kind: str
) -> np.ndarray:
    """An ``(h, w, 3)`` float32 fill of the given ``kind`` blending colours c1 -> c2."""
    ang = rng.uniform(0, math.pi)
    if kind == "flat":
        return cv2.merge([np.full((h, w), float(c), np.float32) for c in c1])
    if kind == "linear":
        u = _coords(h, w, ang)
        u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        return _mix(c1, c2, u)
    if kind == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x = np.arange(w, dtype=np.float32)[None, :] - cx
        y = np.arange(h, dtype=np.float32)[:, None] - cy
        d = np.sqrt(x * x + y * y)
        return _mix(c1, c2, np.clip(d / max(float(d.max()), 1.0), 0, 1))
    if kind == "stripes":
        period = max(3.0, scale * rng.uniform(0.1, 0.4))
        u = _coords(h, w, ang) * (2 * math.pi / period)
        t = 0.5 + 0.5 * np.sin(u)
        if rng.random() < 0.6:  # hard stripes
            t = (t > rng.uniform(0.3, 0.7)).astype(np.float32)
        return _mix(c1, c2, t)
    if kind == "checker":
        cell = max(3.0, scale * rng.uniform(0.08, 0.3))
        u = _coords(h, w, ang) / cell
        v = _coords(h, w, ang + math.pi / 2) / cell
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        return _mix(c1, c2, t)
    # noise
    t = _value_noise(rng, h, w, max(2.0, scale * rng.uniform(0.05, 0.3)))
    if rng.random() < 0.5:
        t = 0.6 * t + 0.4 * _value_noise(rng, h, w, 2.0)
    return _mix(c1, c2, t)


def _object_fill(
    rng: np.random.Generator, h: int, w: int, cfg: SynthConfig, scale: float, thin: bool
) -> np.ndarray:
    c1 = _colour(rng)
    if thin or rng.random() >= cfg.textured_fill_prob:
        kind = ("flat", "linear", "radial")[int(rng.integers(3))]
        c2 = _near(rng, c1, 35.0)
    else:
        kind = ("stripes", "checker", "noise", "noise")[int(rng.integers(4))]
        c2 = _colour(rng) if rng.random() < 0.35 else _near(rng, c1, 60.0)
    fill = _pattern(rng, h, w, c1, c2, scale, kind)
    shade = _coords(h, w, rng.uniform(0, 2 * math.pi))
    shade = (shade - shade.min()) / max(float(shade.max() - shade.min()), 1.0)
    lo, hi = rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.15)
    return cv2.multiply(fill, _rep3(lo + (hi - lo) * shade))


def _soft_alpha(shape: _Shape, x0: float, y0: float, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred coverage (float32 0..1) of a placed shape on an ``h x w`` window.

    Large blurs are computed at reduced resolution (factor ~sigma/2) and
    upsampled, which is visually identical for a soft edge and much cheaper.
    """
    k = max(1, int(sigma / 2))
    if k == 1:
        a = _rasterize(shape, x0, y0, h, w).astype(np.float32) / 255.0
        return cv2.GaussianBlur(a, (0, 0), sigma)
    small = _Shape(shape.kind, shape.variant, [(op, p / k, v, t) for op, p, v, t in shape.ops])
    sh, sw = h // k + 2, w // k + 2
    a = _rasterize(small, x0 / k, y0 / k, sh, sw).astype(np.float32) / 255.0
    a = cv2.GaussianBlur(a, (0, 0), sigma / k)
    return cv2.resize(a, (sw * k, sh * k), interpolation=cv2.INTER_LINEAR)[:h, :w]


def _background(rng: np.random.Generator, h: int, w: int, cfg: SynthConfig) -> np.ndarray:
    """Cluttered background: smooth gradient + colour blotches, fine grain, an optional hard-edged
    "stuff" region, soft texture patches and faint scribbles (none of which are objects)."""
    side = max(h, w)
    # smooth part at 1/4 resolution, upsampled
    lh, lw = h // 4 + 2, w // 4 + 2
    low = _pattern(
        rng, lh, lw, _colour(rng), _colour(rng), side / 4, ("linear", "radial")[int(rng.integers(2))]
    )
    t = _value_noise(rng, lh, lw, side / 4 / rng.uniform(2, 6))
    low += (_colour(rng) - low) * (rng.uniform(0.3, 0.7) * t)[..., None]
    bg = np.ascontiguousarray(cv2.resize(low, (lw * 4, lh * 4), interpolation=cv2.INTER_LINEAR)[:h, :w])
    # fine grain (luminance)
    grain = _value_noise(rng, h, w, rng.uniform(2, 12))
    bg = cv2.multiply(bg, _rep3(1.0 + rng.uniform(0.03, 0.2) * (grain - 0.5)))
    if rng.random() < 0.5:  # "stuff": a textured region with a straight hard boundary (table edge, wall...)
        ang = rng.uniform(0, 2 * math.pi)
        u = _coords(h, w, ang)
        cut = rng.uniform(float(u.min()), float(u.max()))
        a = np.clip(u - cut + 0.5, 0, 1)
        kind = ("stripes", "checker", "noise", "linear")[int(rng.integers(4))]
        c = _colour(rng)
        region = _pattern(rng, h, w, c, _near(rng, c, 30.0), side * 0.5, kind)
        bg = _lerp(bg, region, a)
    for _ in range(int(rng.integers(cfg.min_distractors, cfg.max_distractors + 1))):
        if rng.random() < 0.6:  # soft-edged texture patch: no crisp boundary, so not an object
            r = side * rng.uniform(0.05, 0.25)
            shape = _make_blob(rng, math.pi * r * r)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sigma = r * rng.uniform(0.15, 0.4)
            strength = rng.uniform(0.2, 0.55)
            c = _colour(rng)
            c2 = _near(rng, c, 50.0)
            kind = ("stripes", "checker", "noise", "noise", "flat")[int(rng.integers(5))]
            pad = int(3 * sigma)
        else:  # faint scribble
            pts = np.cumsum(rng.normal(0, side * 0.04, (int(rng.integers(3, 10)), 2)), axis=0)
            shape = _Shape("thin", "scribble", [("line", pts - pts.mean(0), 255, int(rng.integers(1, 3)))])
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sigma, strength, c, kind, pad = 0.0, rng.uniform(0.1, 0.3), _colour(rng), "flat", 2
            c2 = c
        bx0, by0, bx1, by1 = shape.bounds()
        x0, y0 = max(0, int(cx + bx0) - pad), max(0, int(cy + by0) - pad)
        x1, y1 = min(w, int(cx + bx1) + pad + 1), min(h, int(cy + by1) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        if sigma > 0:
            a = _soft_alpha(shape, x0 - cx, y0 - cy, y1 - y0, x1 - x0, sigma) * strength
        else:
            a = _rasterize(shape, x0 - cx, y0 - cy, y1 - y0, x1 - x0).astype(np.float32) * (strength / 255.0)
        fill = _pattern(rng, y1 - y0, x1 - x0, c, c2, side * 0.1, kind)
        bg[y0:y1, x0:x1] = _lerp(bg[y0:y1, x0:x1], fill, a)
    return bg


# --------------------------------------------------------------------------- rendering


def _image_size(rng: np.random.Generator, cfg: SynthConfig) -> tuple[int, int]:
    long = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    aspect = math.exp(rng.uniform(0.0, math.log(cfg.max_aspect)))
    short = min(long, max(cfg.min_side, round(long / aspect)))
    return (short, long) if rng.random() < 0.5 else (long, short)


def _target_area(rng: np.random.Generator, size_class: int, h: int, w: int, cfg: SynthConfig) -> float:
    if size_class == 0:
        lo, hi = cfg.small_min_area, SMALL_MAX
    elif size_class == 1:
        lo, hi = SMALL_MAX, LARGE_MIN
    else:
        lo = LARGE_MIN * 1.1
        hi = max(lo * 1.5, cfg.large_max_frac * h * w)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def render_sample(index: int, seed: int = 0, config: SynthConfig | None = None) -> SynthSample:
    """Render image ``index`` of the data set for ``seed`` (pure function; no I/O).

    Uses only ``default_rng(SeedSequence([seed, index]))``, so it is usable for
    on-the-fly training data and gives exactly what :func:`generate` writes
    (before JPEG compression).
    """
    cfg = config or SynthConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    h, w = _image_size(rng, cfg)
    canvas = _background(rng, h, w, cfg)
    owner = np.full((h, w), -1, np.int16)
    max_len = 0.9 * max(h, w)

    kinds = [CATEGORIES[i + 1] for i in range(len(CATEGORIES))]
    kind_p = np.asarray(cfg.kind_weights, float) / sum(cfg.kind_weights)
    size_p = np.asarray(cfg.size_mix, float) / sum(cfg.size_mix)
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes: list[tuple[float, _Shape]] = []
    for _ in range(n_obj):
        kind = kinds[int(rng.choice(len(kinds), p=kind_p))]
        area = _target_area(rng, int(rng.choice(3, p=size_p)), h, w, cfg)
        # paint order: mostly big-at-the-back, with a random jitter
        shapes.append((math.log(area) + rng.normal(0, 1.0), _make_shape(rng, kind, area, max_len)))
    shapes.sort(key=lambda s: -s[0])

    placed: list[tuple[int, _Shape, int, int, int, int, int]] = []  # idx, shape, x0, y0, x1, y1, in-frame px
    centres: list[tuple[float, float, float]] = []
    for idx, (_, shape) in enumerate(shapes):
        bx0, by0, bx1, by1 = shape.bounds()
        scale = math.sqrt(max((bx1 - bx0) * (by1 - by0), 1.0))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        near = rng.random() < cfg.cluster_prob
        k = int(rng.integers(max(1, len(centres))))
        jitter = rng.normal(0.0, 0.35, 2)
        if near and centres:  # next to an earlier object: touching / occluding instances
            px, py, ps = centres[k]
            cx, cy = px + jitter[0] * (ps + scale), py + jitter[1] * (ps + scale)
        centres.append((cx, cy, scale))
        x0, y0 = max(0, math.floor(cx + bx0) - 2), max(0, math.floor(cy + by0) - 2)
        x1, y1 = min(w, math.ceil(cx + bx1) + 3), min(h, math.ceil(cy + by1) + 3)
        fill_rng_draws = rng.random(2)  # shadow?, enforce contrast?
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        alpha8 = _rasterize(shape, x0 - cx, y0 - cy, y1 - y0, x1 - x0)
        hard = alpha8 >= 128
        n_in = int(np.count_nonzero(hard))
        if n_in == 0:
            continue
        a = alpha8.astype(np.float32) / 255.0
        win = canvas[y0:y1, x0:x1]
        if fill_rng_draws[0] < cfg.shadow_prob:
            _shadow(rng, canvas, shape, cx, cy, min(scale, math.sqrt(n_in)))
            win = canvas[y0:y1, x0:x1]
        fill = _object_fill(rng, y1 - y0, x1 - x0, cfg, scale, shape.kind == "thin")
        if fill_rng_draws[1] < cfg.contrast_prob:
            bg_mean = win[hard].mean(axis=0)
            fg_mean = fill[hard].mean(axis=0)
            d = fg_mean - bg_mean
            dist = float(np.linalg.norm(d))
            if dist < cfg.min_contrast:
                # move the fill's mean colour to min_contrast * 1.2 from the background's,
                # on whichever side (+d or -d) stays inside [0, 255]
                u = d / dist if dist > 1e-3 else np.full(3, 1 / math.sqrt(3), np.float32)
                c = cfg.min_contrast * 1.2
                if _excess(bg_mean - u * c) < _excess(bg_mean + u * c):
                    u = -u
                shift = bg_mean + u * c - fg_mean
                fill = cv2.add(fill, (float(shift[0]), float(shift[1]), float(shift[2]), 0.0))
        canvas[y0:y1, x0:x1] = _lerp(win, fill, a)
        owner[y0:y1, x0:x1][hard] = idx
        placed.append((idx, shape, x0, y0, x1, y1, n_in))

    canvas = _finish_image(rng, canvas, cfg)
    sample = SynthSample(image=canvas)
    for idx, shape, x0, y0, x1, y1, n_in in placed:
        vis_win = owner[y0:y1, x0:x1] == idx
        n_vis = int(np.count_nonzero(vis_win))
        if n_vis < cfg.min_area or n_vis < cfg.min_visible_fraction * n_in:
            continue
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = vis_win
        sample.masks.append(m)
        sample.category_ids.append(_KIND_IDS[shape.kind])
        sample.variants.append(shape.variant)
        sample.visible_fractions.append(round(n_vis / n_in, 4))
    return sample


def _excess(c: np.ndarray) -> float:
    """How far a colour lies outside [0, 255] (L1)."""
    return float(np.clip(-c, 0, None).sum() + np.clip(c - 255, 0, None).sum())


def _shadow(
    rng: np.random.Generator, canvas: np.ndarray, shape: _Shape, cx: float, cy: float, scale: float
) -> None:
    """Darken the canvas under a blurred, offset copy of the shape (a soft drop shadow)."""
    h, w = canvas.shape[:2]
    sigma = max(1.0, scale * rng.uniform(0.03, 0.08))
    off = scale * rng.uniform(0.03, 0.1) * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])
    sx, sy = cx + off[0], cy + off[1]
    bx0, by0, bx1, by1 = shape.bounds()
    pad = int(3 * sigma) + 2
    x0, y0 = max(0, math.floor(sx + bx0) - pad), max(0, math.floor(sy + by0) - pad)
    x1, y1 = min(w, math.ceil(sx + bx1) + pad), min(h, math.ceil(sy + by1) + pad)
    strength = rng.uniform(0.25, 0.5)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    a = _soft_alpha(shape, x0 - sx, y0 - sy, y1 - y0, x1 - x0, sigma)
    canvas[y0:y1, x0:x1] = cv2.multiply(canvas[y0:y1, x0:x1], _rep3(1.0 - strength * a))


def _finish_image(rng: np.random.Generator, canvas: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    h, w = canvas.shape[:2]
    do_blur = rng.random() < cfg.blur_prob
    sigma_b = rng.uniform(0.4, 0.8)
    if do_blur:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma_b)
    std = rng.uniform(0.0, cfg.noise_std)
    if std > 0:
        # uniform luminance noise with standard deviation ``std`` (uniform draws are ~5x cheaper than normal)
        noise = rng.random((h, w), dtype=np.float32)
        noise -= 0.5
        noise *= std * math.sqrt(12.0)
        noise += 0.5  # rounding offset for the uint8 conversion below
        canvas = cv2.add(canvas, _rep3(noise))
    else:
        canvas += 0.5
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


# --------------------------------------------------------------------------- writing


def _render_record(
    index: int, seed: int, cfg: SynthConfig, images_dir: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Render image ``index``, write its JPEG into ``images_dir``; return the COCO image entry and
    its annotation entries (without ``id``). Top-level so it can run in a worker process."""
    sample = render_sample(index, seed, cfg)
    h, w = sample.image.shape[:2]
    name = f"{index:06d}.jpg"
    Image.fromarray(sample.image).save(os.path.join(images_dir, name), "JPEG", quality=cfg.jpeg_quality)
    image = {"id": index + 1, "file_name": name, "width": w, "height": h}
    anns = []
    for m, cat, var, vis in zip(sample.masks, sample.category_ids, sample.variants, sample.visible_fractions):
        rle = encode_mask(m)
        anns.append(
            {
                "image_id": index + 1,
                "category_id": cat,
                "segmentation": rle,
                "area": rle_area(rle),
                "bbox": rle_bbox(rle),
                "iscrowd": 0,
                "variant": var,
                "visible_fraction": vis,
            }
        )
    return image, anns


def _records(
    n: int, seed: int, cfg: SynthConfig, images_dir: Path, workers: int
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if workers <= 1 or n <= 1:
        for i in range(n):
            yield _render_record(i, seed, cfg, str(images_dir))
        return
    # spawn, not fork: the caller may hold torch/OpenMP threads, which fork can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        futs = ex.map(_render_record, range(n), [seed] * n, [cfg] * n, [str(images_dir)] * n, chunksize=8)
        yield from futs


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` onto ``out_dir`` (moving an existing ``out_dir`` aside first)."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def generate(
    n: int,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    config: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Generate ``n`` synthetic images with COCO instance annotations; return the JSON path.

    Layout: ``out_dir/images/{i:06d}.jpg`` and ``out_dir/annotations.json``
    (image ids ``i + 1``; categories :data:`CATEGORIES`; RLE masks of the
    visible, non-overlapping object parts; ``info`` records seed and config).
    Each image depends only on ``(seed, i)`` and ``config``. ``workers > 1``
    renders in that many spawned processes with identical output.

    The data set is built in a temporary sibling directory and renamed into
    place at the end, so ``out_dir`` is never left half-written. Raises
    ``FileExistsError`` if ``out_dir`` exists and is non-empty unless
    ``overwrite=True`` (then it is replaced only after generation succeeded).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = config or SynthConfig()
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        images_dir = tmp / "images"
        images_dir.mkdir()
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image, anns in _records(n, seed, cfg, images_dir, workers):
            images.append(image)
            for a in anns:
                annotations.append({"id": len(annotations) + 1, **a})
        coco = {
            "info": {
                "description": "leansam procedural synthetic instance segmentation",
                "generator": "leansam.data.synth",
                "generator_version": GENERATOR_VERSION,
                "seed": seed,
                "config": dataclasses.asdict(cfg),
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": i, "name": name, "supercategory": "shape"} for i, name in CATEGORIES.items()
            ],
        }
        write_json_atomic(tmp / "annotations.json", coco)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "annotations.json"


def synth_command(
    n: int, out: str | os.PathLike[str], seed: int = 0, overwrite: bool = False, workers: int = 1
) -> int:
    """CLI helper for ``leansam data synth``: generate, print a one-line summary, return exit code 0.

    Errors (non-empty ``out`` without ``overwrite``, bad arguments) are printed
    and give exit code 2.
    """
    try:
        path = generate(n, out, seed=seed, overwrite=overwrite, workers=workers)
    except (FileExistsError, ValueError) as e:
        print(f"leansam data synth: error: {e}")
        return 2
    print(f"wrote {n} images to {Path(out) / 'images'} and annotations to {path}")
    return 0
