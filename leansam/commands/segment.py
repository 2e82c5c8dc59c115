"""``leansam segment``: masks for point / box prompts on one image."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..batch.cli import IMAGE_HELP, add_engine_args, check_engine_args_unused, run_batch
from ..batch.sources import is_dataset_input
from ..data.coco import encode_mask, mask_bbox
from ..io import InputError, load_image, write_json, write_png
from ..outputs import OutputDir
from ..predictor import SamPredictor
from ..visualize import draw_overlay
from .common import (
    add_image_args,
    add_model_args,
    add_overwrite_arg,
    log,
    parse_box,
    parse_point,
    resolve_model_name,
    sync,
)
from .export import add_backend_args, describe_backend, model_for_backend

#: The names this command writes in --out.
OWNED = ("mask_*.png", "masks.json", "overlay.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help="promptable segmentation of one image or a dataset (points and/or boxes)"
    )
    add_image_args(p, IMAGE_HELP)
    p.add_argument("--point", type=parse_point, action="append", default=[], metavar="X,Y[,LABEL]")
    p.add_argument(
        "--box",
        type=parse_box,
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="one prompt per box (the points, if any, are added to each box)",
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="datasets: boxes per image from a COCO-style JSON (images + annotations with bbox XYWH)",
    )
    p.add_argument(
        "--multimask",
        action="store_true",
        help="3 candidate masks per prompt instead of 1 (datasets: keep the best-scored one)",
    )
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    add_overwrite_arg(p)
    add_model_args(p)
    add_backend_args(p)
    add_engine_args(p)


def _check_prompts_inside(points: list, boxes: list, h: int, w: int) -> None:
    for x, y, _ in points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {w} x {h} image")
    for x0, y0, x1, y1 in boxes:
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {w} x {h} image")


def _prompt_tensors(
    args: argparse.Namespace, dev: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[torch.Tensor | None, ...]]:
    """The prompts of ``args`` as arrays (points P x 2, labels P, boxes B x 4, pixels of the image)
    and as the predictor's batched tensors: every box is one prompt sharing all the points."""
    pts = np.array([p[:2] for p in args.point], dtype=np.float32).reshape(-1, 2)
    labels = np.array([p[2] for p in args.point], dtype=np.int64)
    boxes = np.array(args.box, dtype=np.float32).reshape(-1, 4)
    n_prompts = max(1, len(boxes))
    coords_t = labels_t = boxes_t = None
    if len(pts):
        coords_t = torch.from_numpy(pts)[None].expand(n_prompts, -1, -1).to(dev)
        labels_t = torch.from_numpy(labels)[None].expand(n_prompts, -1).to(dev)
    if len(boxes):
        boxes_t = torch.from_numpy(boxes).to(dev)
    return pts, labels, boxes, (coords_t, labels_t, boxes_t)


def _write_masks(
    out: OutputDir,
    masks: np.ndarray,
    scores: np.ndarray,
    pts: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
) -> tuple[list[dict], list[np.ndarray]]:
    """Writes ``mask_NNN.png`` per mask (B x M x H x W); returns the masks.json records and the masks."""
    records, flat = [], []
    for i in range(masks.shape[0]):
        prompt: dict = {}
        if len(pts):
            prompt["points"] = [[float(x), float(y), int(lab)] for (x, y), lab in zip(pts, labels)]
        if len(boxes):
            prompt["box"] = [float(v) for v in boxes[i]]
        for j in range(masks.shape[1]):
            m = masks[i, j]
            k = len(flat)
            flat.append(m)
            fname = f"mask_{k:03d}.png"
            write_png(out.path(fname), m)
            records.append(
                {
                    "id": k,
                    "prompt_index": i,
                    "prompt": prompt,
                    "score": float(scores[i, j]),
                    "area": int(m.sum()),
                    "bbox": mask_bbox(m),
                    "segmentation": encode_mask(m),
                    "file": fname,
                }
            )
    return records, flat


def run(args: argparse.Namespace) -> int:
    if is_dataset_input(args.image):
        return _run_dataset(args)
    check_engine_args_unused(args)
    if args.prompts:
        raise InputError("--prompts is for datasets (a folder, glob or list file); give --box / --point")
    if not args.point and not args.box:
        raise InputError("no prompt given: add --point X,Y[,LABEL] and/or --box X0,Y0,X1,Y1")
    name = resolve_model_name(args)
    image = load_image(args.image, max_pixels=args.max_pixels)
    h, w = image.shape[:2]
    _check_prompts_inside(args.point, args.box, h, w)
    out = OutputDir(args.out, args.overwrite, OWNED, command="leansam segment")
    try:
        model = model_for_backend(args, name)
        name = model.name or name
        predictor = SamPredictor(model)
        dev = model.device

        t0 = time.perf_counter()
        with torch.inference_mode():
            predictor.set_image(image)
        sync(dev)
        t_encode = time.perf_counter() - t0

        pts, labels, boxes, tensors = _prompt_tensors(args, dev)
        t0 = time.perf_counter()
        masks, scores, _ = predictor.predict_torch(
            *tensors, multimask_output=args.multimask, original_coords=True
        )
        sync(dev)
        t_decode = time.perf_counter() - t0
        log(
            f"encoded {w}x{h} image in {t_encode * 1000:.0f} ms; decoded {max(1, len(boxes))} prompt(s) "
            f"in one call in {t_decode * 1000:.0f} ms"
        )
        records, flat = _write_masks(
            out, masks.cpu().numpy(), scores.float().cpu().numpy(), pts, labels, boxes
        )
        # Drawn into the image itself (not needed any more): no full-size copy of it.
        draw_overlay(image, flat, pts if len(pts) else None, labels, boxes if len(boxes) else None, out=image)
        write_png(out.path("overlay.png"), image)
        write_json(
            out.path("masks.json"),
            {
                "model": name,
                "checkpoint": describe_backend(args, name, model),
                "image": {"file": str(args.image), "height": h, "width": w},
                "multimask": bool(args.multimask),
                "timing_ms": {"encode": t_encode * 1000, "decode": t_decode * 1000},
                "masks": records,
            },
        )
    except BaseException:
        out.discard()
        raise
    out.commit()
    log(f"wrote {len(records)} mask(s), masks.json and overlay.png to {args.out}")
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    if args.prompts and (args.point or args.box):
        raise InputError("give either --prompts FILE (boxes per image) or --box / --point (every image)")
    if not args.prompts and not args.point and not args.box:
        raise InputError("no prompt given: add --prompts FILE, or --point X,Y[,LABEL] / --box X0,Y0,X1,Y1")
    return run_batch(
        args,
        "segment",
        points=tuple(args.point),
        boxes=tuple(args.box),
        prompts=args.prompts,
        multimask=args.multimask,
    )
