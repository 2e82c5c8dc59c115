"""``leansam everything``: every object in an image (segment-everything)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..batch.cli import IMAGE_HELP, add_engine_args, check_engine_args_unused, run_batch
from ..batch.sources import is_dataset_input
from ..data.coco import decode_mask
from ..io import InputError, load_image, write_json, write_png
from ..outputs import OutputDir
from ..visualize import draw_overlay
from .common import (
    add_image_args,
    add_model_args,
    add_overwrite_arg,
    log,
    resolve_model_name,
)
from .export import add_backend_args, describe_backend, model_for_backend

#: The names this command writes in --out.
OWNED = ("mask_*.png", "masks.json", "overlay.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "everything",
        help="segment everything in one image or a dataset (grid, hierarchical or box prompts)",
    )
    add_image_args(p, IMAGE_HELP)
    p.add_argument(
        "--strategy",
        choices=("grid", "hierarchical", "boxes"),
        default="grid",
        help="grid: SAM's point grid; hierarchical: TinySAM's sparse-then-dense grid; boxes: detector boxes",
    )
    p.add_argument(
        "--boxes",
        default=None,
        help="boxes strategy: COCO-style detections JSON (bbox XYWH); for datasets a COCO dict with images",
    )
    p.add_argument("--image-id", default=None, help="with --boxes files holding several images: the image_id")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=64)
    model_default = "default: the model's (SAM's for official models; docs/training.md)"
    p.add_argument("--pred-iou-thresh", type=float, default=None, help=model_default)
    p.add_argument("--stability-score-thresh", type=float, default=None, help=model_default)
    p.add_argument("--stability-score-offset", type=float, default=None, help=model_default)
    p.add_argument("--box-nms-thresh", type=float, default=None, help=model_default)
    p.add_argument(
        "--high-score-thresh",
        type=float,
        default=None,
        help="hierarchical: logit that makes a sparse mask's pixels covered; " + model_default,
    )
    p.add_argument("--crop-n-layers", type=int, default=0)
    p.add_argument("--min-mask-region-area", type=int, default=0)
    p.add_argument(
        "--non-overlapping", action="store_true", help="no duplicates: each pixel in at most one mask"
    )
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    add_overwrite_arg(p)
    add_model_args(p)
    add_backend_args(p)
    add_engine_args(p)


def _image_id(text: str | None) -> object:
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _generator_options(args: argparse.Namespace) -> dict:
    return {
        "points_per_side": None if args.strategy == "boxes" else args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
        "stability_score_offset": args.stability_score_offset,
        "box_nms_thresh": args.box_nms_thresh,
        "high_score_thresh": args.high_score_thresh,
        "crop_n_layers": args.crop_n_layers,
        "min_mask_region_area": args.min_mask_region_area,
        "non_overlapping": args.non_overlapping,
        "output_mode": "coco_rle",
        "progress": True,
    }


def run(args: argparse.Namespace) -> int:
    from ..everything import AutomaticMaskGenerator, load_boxes
    from ..everything.options import GeneratorOptions, check_memory

    if args.strategy == "boxes" and not args.boxes:
        raise InputError("--strategy boxes needs --boxes FILE (COCO-style detections with bbox XYWH)")
    if args.boxes and args.strategy != "boxes":
        raise InputError("--boxes is only used with --strategy boxes")
    if args.points_per_side <= 0:
        raise InputError(f"--points-per-side must be positive, not {args.points_per_side}")
    options = _generator_options(args)
    try:  # before loading the model: bad options are one error line, nothing else
        AutomaticMaskGenerator.check_options(args.strategy, **options)
    except ValueError as e:
        raise InputError(str(e)) from None
    if is_dataset_input(args.image):
        if args.image_id is not None:
            raise InputError("--image-id is for one image; datasets match boxes to images by file_name")
        del options["output_mode"], options["progress"]
        return run_batch(args, "everything", strategy=args.strategy, generator=options, prompts=args.boxes)
    check_engine_args_unused(args)
    name = resolve_model_name(args)
    image = load_image(args.image, max_pixels=args.max_pixels)
    h, w = image.shape[:2]
    try:  # the memory the options need on this image, before the model loads
        check_memory(GeneratorOptions.from_kwargs(**options), (h, w), AutomaticMaskGenerator.mask_chunk)
    except ValueError as e:
        raise InputError(str(e)) from None
    boxes = None
    if args.boxes:
        try:
            boxes = load_boxes(args.boxes, (h, w), image_id=_image_id(args.image_id))
        except (ValueError, OSError) as e:
            raise InputError(f"bad boxes file {args.boxes}: {e}") from None
    out = OutputDir(args.out, args.overwrite, OWNED, command="leansam everything")
    try:
        model = model_for_backend(args, name)
        name = model.name or name
        generator = AutomaticMaskGenerator(model, args.strategy, **options)
        t0 = time.perf_counter()
        with torch.inference_mode():
            records = generator.generate(image, boxes=boxes)
        elapsed = time.perf_counter() - t0
        stats = generator.last_stats.to_dict()
        log(
            f"{len(records)} masks in {elapsed:.2f} s ({stats['prompts_decoded']} prompts decoded in {stats['batches']} batches)"
        )
        records.sort(key=lambda r: -r["area"])
        masks = [decode_mask(r["segmentation"], h, w) for r in records]
        write_png(out.path("overlay.png"), draw_overlay(image, masks, alpha=0.45))
        for i, r in enumerate(records):
            r["id"] = i
            r["segmentation"] = {
                "size": list(r["segmentation"]["size"]),
                "counts": _text(r["segmentation"]["counts"]),
            }
            for key, value in list(r.items()):
                if isinstance(value, np.generic):
                    r[key] = value.item()
        write_json(
            out.path("masks.json"),
            {
                "model": name,
                "checkpoint": describe_backend(args, name, model),
                "image": {"file": str(args.image), "height": h, "width": w},
                "strategy": args.strategy,
                "seconds": elapsed,
                "stats": stats,
                "masks": records,
            },
        )
    except BaseException:
        out.discard()
        raise
    out.commit()
    log(f"wrote masks.json and overlay.png to {args.out}")
    return 0


def _text(counts: object) -> object:
    return counts.decode("ascii") if isinstance(counts, bytes) else counts
