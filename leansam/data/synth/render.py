"""Rendering one synthetic image: object sizes, layout (scattered or dead leaves), painting, masks."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .appearance import _background, _excess, _finish_image, _lerp, _object_fill, _shadow
from .config import CATEGORIES, KIND_IDS, LARGE_MIN, SMALL_MAX, SynthConfig, SynthSample
from .shapes import _make_shape, _rasterize, _Shape


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
    (before the writer's JPEG compression).
    """
    cfg = config or SynthConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    h, w = _image_size(rng, cfg)
    canvas = _background(rng, h, w, cfg)
    dead_leaves = cfg.dead_leaves_prob > 0 and rng.random() < cfg.dead_leaves_prob
    shapes = _draw_shapes(rng, h, w, cfg, dead_leaves)
    owner = np.full((h, w), -1, np.int16)
    placed = _paint(rng, canvas, owner, shapes, cfg, dead_leaves)
    sample = SynthSample(image=_finish_image(rng, canvas, cfg))
    for idx, shape, x0, y0, x1, y1, n_in in placed:
        vis_win = owner[y0:y1, x0:x1] == idx
        n_vis = int(np.count_nonzero(vis_win))
        if n_vis < cfg.min_area or n_vis < cfg.min_visible_fraction * n_in:
            continue
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = vis_win
        sample.masks.append(m)
        sample.category_ids.append(KIND_IDS[shape.kind])
        sample.variants.append(shape.variant)
        sample.visible_fractions.append(round(n_vis / n_in, 4))
    return sample


def _draw_shapes(
    rng: np.random.Generator, h: int, w: int, cfg: SynthConfig, dead_leaves: bool
) -> list[_Shape]:
    """The image's shapes in paint order (back to front).

    Scattered layout: mostly big-at-the-back with a random jitter. Dead leaves: ``dead_leaves_objects``
    times as many objects, areas log-uniform from 0.5 % to 30 % of the image, random order.
    """
    max_len = 0.9 * max(h, w)
    kinds = [CATEGORIES[i + 1] for i in range(len(CATEGORIES))]
    kind_p = cfg.kind_probabilities()
    size_p = np.asarray(cfg.size_mix, float) / sum(cfg.size_mix)
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    if dead_leaves:
        n_obj = round(n_obj * cfg.dead_leaves_objects)
    shapes: list[tuple[float, _Shape]] = []
    for _ in range(n_obj):
        kind = kinds[int(rng.choice(len(kinds), p=kind_p))]
        if dead_leaves:
            lo = max(cfg.small_min_area * 2, 0.005 * h * w)
            area = math.exp(rng.uniform(math.log(lo), math.log(0.3 * h * w)))
            order = rng.random()
        else:
            area = _target_area(rng, int(rng.choice(3, p=size_p)), h, w, cfg)
            order = math.log(area) + rng.normal(0, 1.0)
        shapes.append((order, _make_shape(rng, kind, area, max_len)))
    shapes.sort(key=lambda s: -s[0])
    return [s for _, s in shapes]


def _place(
    rng: np.random.Generator,
    shape: _Shape,
    h: int,
    w: int,
    centres: list,
    cfg: SynthConfig,
    dead_leaves: bool,
) -> tuple[float, float, float]:
    """Centre of a shape: uniform, or (scattered layout, ``cluster_prob``) next to an earlier one."""
    bx0, by0, bx1, by1 = shape.bounds()
    scale = math.sqrt(max((bx1 - bx0) * (by1 - by0), 1.0))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    near = rng.random() < cfg.cluster_prob
    k = int(rng.integers(max(1, len(centres))))
    jitter = rng.normal(0.0, 0.35, 2)
    if near and centres and not dead_leaves:  # next to an earlier object: touching / occluding
        px, py, ps = centres[k]
        cx, cy = px + jitter[0] * (ps + scale), py + jitter[1] * (ps + scale)
    centres.append((cx, cy, scale))
    return cx, cy, scale


def _paint(
    rng: np.random.Generator,
    canvas: np.ndarray,
    owner: np.ndarray,
    shapes: list[_Shape],
    cfg: SynthConfig,
    dead_leaves: bool,
) -> list[tuple[int, _Shape, int, int, int, int, int]]:
    """Paints the shapes back to front; ``owner`` gets the index of the front object per pixel.

    Returns (index, shape, x0, y0, x1, y1, pixels in frame) of every shape that landed in the frame.
    """
    h, w = owner.shape
    placed, centres = [], []
    last_colour = None
    for idx, shape in enumerate(shapes):
        cx, cy, scale = _place(rng, shape, h, w, centres, cfg, dead_leaves)
        bx0, by0, bx1, by1 = shape.bounds()
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
        if fill_rng_draws[0] < cfg.shadow_prob:
            _shadow(rng, canvas, shape, cx, cy, min(scale, math.sqrt(n_in)))
        win = canvas[y0:y1, x0:x1]
        shared = cfg.shared_colour_prob > 0 and rng.random() < cfg.shared_colour_prob
        fill, last_colour = _object_fill(
            rng, y1 - y0, x1 - x0, cfg, scale, shape.kind == "thin", last_colour if shared else None
        )
        if fill_rng_draws[1] < cfg.contrast_prob:
            fill = _with_contrast(fill, win, hard, cfg.min_contrast)
        win = _lerp(win, fill, a)
        for part in shape.parts:
            pa = _rasterize(part, x0 - cx, y0 - cy, y1 - y0, x1 - x0).astype(np.float32) / 255.0
            pfill, _ = _object_fill(rng, y1 - y0, x1 - x0, cfg, scale, False)
            win = _lerp(win, pfill, np.minimum(pa, a))
        canvas[y0:y1, x0:x1] = win
        owner[y0:y1, x0:x1][hard] = idx
        placed.append((idx, shape, x0, y0, x1, y1, n_in))
    return placed


def _with_contrast(fill: np.ndarray, win: np.ndarray, hard: np.ndarray, min_contrast: float) -> np.ndarray:
    """Moves the fill's mean colour to ``1.2 * min_contrast`` from the background under it, when closer.

    The shift goes along +d or -d (d = fill mean - background mean), whichever stays inside [0, 255].
    """
    bg_mean = win[hard].mean(axis=0)
    fg_mean = fill[hard].mean(axis=0)
    d = fg_mean - bg_mean
    dist = float(np.linalg.norm(d))
    if dist >= min_contrast:
        return fill
    u = d / dist if dist > 1e-3 else np.full(3, 1 / math.sqrt(3), np.float32)
    c = min_contrast * 1.2
    if _excess(bg_mean - u * c) < _excess(bg_mean + u * c):
        u = -u
    shift = bg_mean + u * c - fg_mean
    return cv2.add(fill, (float(shift[0]), float(shift[1]), float(shift[2]), 0.0))
