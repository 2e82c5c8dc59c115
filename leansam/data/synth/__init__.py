"""Procedural synthetic instance-segmentation data in COCO format.

``generate(n, out_dir, seed)`` writes::

    out_dir/images/000000.jpg, 000001.jpg, ...
    out_dir/annotations.json        # COCO instances, RLE masks (counts as str)

Each image is a cluttered textured background (noise, gradients, a "stuff"
region with a hard straight edge, soft texture patches and faint scribbles that
are *not* objects) with 4..16 objects painted back to front. Objects come in
seven categories (``CATEGORIES``): ellipses; polygons (convex, rectangles,
concave, stars); smooth random blobs; thin structures 2..6 px wide (curves,
wiggles, arcs, branching twigs); shapes with holes (annuli, frames, holed
blobs, thin hoops); letters and digits (font glyphs, holes kept); and objects
with parts (a body with windows, bands or an attached head painted in other
fills, annotated as one object, so one click on a part is ambiguous). Fills are
flat colours, linear/radial gradients, stripes, checkerboards or value noise,
with shading, optional drop shadows and anti-aliased edges; the image gets
sensor noise and JPEG compression. Options of :class:`SynthConfig` add
dead-leaves layouts (the frame covered by many occluding objects), fractal and
1/f-spectrum textures, uneven lighting, JPEG artefacts in rendered images and
touching objects that share a colour.

Modules: ``config`` (settings), ``shapes`` (geometry), ``appearance`` (colour,
texture, camera effects), ``render`` (one image), ``writer`` (a COCO set on disk).

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

from .config import CATEGORIES, GENERATOR_VERSION, SynthConfig, SynthSample
from .render import render_sample
from .writer import generate, synth_command

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "SynthConfig",
    "SynthSample",
    "generate",
    "render_sample",
    "synth_command",
]
