"""Writing a synthetic data set to disk: JPEG images and a COCO instances file, atomically."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from PIL import Image

from leansam.data.coco import encode_mask, rle_area, rle_bbox, write_json_atomic

from .config import CATEGORIES, GENERATOR_VERSION, SynthConfig
from .render import render_sample

#: The entries of a data set folder (see leansam.outputs.OutputDir).
OWNED = ("images", "annotations.json")


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

    The data set is staged and committed at the end by
    :class:`leansam.outputs.OutputDir`, so ``out_dir`` is never left
    half-written and files in it that leansam did not write are kept. Raises
    :class:`leansam.io.InputError` if ``out_dir`` holds an ``annotations.json``
    leansam did not write (``overwrite=True`` replaces it) or an ``images``
    folder it did not write (never replaced), or cannot be an output folder.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = config or SynthConfig()
    from leansam.outputs import OutputDir

    out_dir = Path(out_dir)
    staged = OutputDir(out_dir, overwrite, OWNED, command="leansam data synth")
    try:
        images_dir = staged.folder("images")
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
        write_json_atomic(staged.path("annotations.json"), coco)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return out_dir / "annotations.json"


def synth_command(
    n: int, out: str | os.PathLike[str], seed: int = 0, overwrite: bool = False, workers: int = 1
) -> int:
    """CLI helper for ``leansam data synth``: generate, print a one-line summary, return exit code 0.

    Errors (an ``out`` that cannot take the set, bad arguments) are printed
    and give exit code 2.
    """
    try:
        path = generate(n, out, seed=seed, overwrite=overwrite, workers=workers)
    except ValueError as e:
        print(f"leansam data synth: error: {e}")
        return 2
    print(f"wrote {n} images to {Path(out) / 'images'} and annotations to {path}")
    return 0
