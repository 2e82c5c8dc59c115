"""The generator's letters, part-objects, layouts and appearance options (leansam.data.synth v2)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from leansam.data.synth import CATEGORIES, SynthConfig, render_sample
from leansam.data.synth.shapes import _make_parts, _rasterize
from leansam.io import InputError
from leansam.train.data import OOD_SYNTH, RICH_SYNTH, SYNTH_PRESETS, open_source

from .test_synth import _has_hole

BASE = SynthConfig(min_side=160, max_side=224, max_objects=6, kind_weights=(1, 1, 1, 1, 1))
ONLY = {name: tuple(float(i == cid) for i in CATEGORIES) for cid, name in CATEGORIES.items()}


def _renders(cfg: SynthConfig, n: int = 8, seed: int = 0):
    return [render_sample(i, seed, cfg) for i in range(n)]


def test_options_that_are_off_draw_no_randomness() -> None:
    """Five kind weights, or seven with zero letters / part-objects, and every v2 option at 0: same images."""
    seven = dataclasses.replace(BASE, kind_weights=(1, 1, 1, 1, 1, 0, 0))
    for a, b in zip(_renders(BASE), _renders(seven)):
        assert np.array_equal(a.image, b.image)
        assert len(a.masks) == len(b.masks) and all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))


@pytest.mark.parametrize("option", ["lighting_prob", "jpeg_prob"])
def test_camera_effects_change_pixels_not_objects(option: str) -> None:
    on = dataclasses.replace(BASE, **{option: 1.0})
    changed = 0
    for a, b in zip(_renders(BASE, 4), _renders(on, 4)):
        assert len(a.masks) == len(b.masks) and all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
        changed += int(np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 0.5)
    assert changed == 4


def test_letters_keep_their_holes() -> None:
    samples = _renders(dataclasses.replace(BASE, kind_weights=ONLY["letter"]), 10)
    masks = [m for s in samples for m in s.masks]
    assert {CATEGORIES[c] for s in samples for c in s.category_ids} == {"letter"}
    assert len({v for s in samples for v in s.variants}) >= 8  # different glyphs
    assert sum(_has_hole(m) for m in masks) >= 3  # A, B, D, O, P, R, 4, 6, 8, 9, & ...


def test_part_objects_are_one_mask_painted_in_several_fills() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = _make_parts(rng, 3000.0)
        assert 1 <= len(shape.parts) <= 3
        x0, y0, x1, y1 = shape.bounds()
        h, w = int(y1 - y0) + 4, int(x1 - x0) + 4
        whole = _rasterize(shape, x0 - 2, y0 - 2, h, w) >= 128
        for part in shape.parts:
            p = _rasterize(part, x0 - 2, y0 - 2, h, w) >= 128
            if part.variant != "band":  # windows and heads belong to the silhouette
                assert (p & ~whole).sum() <= 0.02 * p.sum()
    samples = _renders(dataclasses.replace(BASE, kind_weights=ONLY["parts"]), 6)
    spreads = [float(s.image[m].std(0).mean()) for s in samples for m in s.masks if m.sum() > 400]
    assert np.median(spreads) > 15  # several fills inside one object's mask


def test_dead_leaves_cover_the_frame() -> None:
    def coverage(cfg: SynthConfig) -> float:
        return float(np.mean([np.any(s.masks, axis=0).mean() if s.masks else 0.0 for s in _renders(cfg, 8)]))

    scattered = coverage(BASE)
    dead = coverage(dataclasses.replace(BASE, dead_leaves_prob=1.0))
    assert dead > 0.55 and dead > scattered + 0.2, (dead, scattered)


def test_shared_colours_make_touching_objects_alike() -> None:
    cfg = dataclasses.replace(BASE, contrast_prob=0.0, textured_fill_prob=0.0, cluster_prob=1.0)

    def neighbour_gap(c: SynthConfig) -> float:
        gaps = []
        for s in _renders(c, 10):
            means = [s.image[m].mean(0) for m in s.masks if m.sum() > 100]
            gaps += [float(np.abs(a - b).mean()) for a, b in itertools.pairwise(means)]
        return float(np.median(gaps))

    assert neighbour_gap(dataclasses.replace(cfg, shared_colour_prob=1.0)) < 0.6 * neighbour_gap(cfg)


def test_presets_and_specs() -> None:
    assert SYNTH_PRESETS["rich"] is RICH_SYNTH and SYNTH_PRESETS["ood"] is OOD_SYNTH
    src = open_source("synth:3:7:ood")
    assert len(src) == 3 and src.config is OOD_SYNTH
    assert np.array_equal(src[1].image, render_sample(1, 7, OOD_SYNTH).image)
    for bad in ("synth:3:7:nope", "synth:3:7:rich:x", "synth:0:1:rich"):
        with pytest.raises(InputError):
            open_source(bad)


def test_config_rejects_bad_v2_values() -> None:
    for kw in (
        {"kind_weights": (1, 1, 1)},
        {"dead_leaves_prob": 1.5},
        {"dead_leaves_objects": 0.5},
        {"jpeg_prob": -0.1},
    ):
        with pytest.raises(ValueError):
            SynthConfig(**kw)
