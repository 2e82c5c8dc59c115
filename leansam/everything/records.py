"""The generator's internal columnar mask store and the segment_anything record format.

Masks are kept as run-length encodings (a few KB each) from the moment a prompt
batch is filtered, never as full-size logits, so memory does not grow with the
number of batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import ops

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass
class MaskSet:
    """K masks of one image and what produced them (all coordinates in pixels of the original image).

    Attributes:
        size: (H, W) of the original image.
        rles: K run-length arrays (see :mod:`leansam.everything.ops`).
        boxes: K x 4 int64, inclusive XYXY boxes around the masks.
        iou: K predicted IoU.
        stability: K stability scores.
        points: K x 2 float64 (x, y) point prompts (box prompts: the box centre).
        crop_boxes: K x 4 int64 XYXY crop each mask was predicted in.
        prompt_boxes: K x 4 float32 XYXY box prompts (NaN rows for point prompts).
    """

    size: tuple[int, int]
    rles: list[np.ndarray] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    iou: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    prompt_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, idx: torch.Tensor) -> MaskSet:
        """The masks at ``idx`` (int64 indices or a K bool mask), in that order."""
        idx = torch.as_tensor(idx).cpu()
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        order = idx.tolist()
        return MaskSet(
            self.size,
            [self.rles[i] for i in order],
            self.boxes[idx],
            self.iou[idx],
            self.stability[idx],
            self.points[idx],
            self.crop_boxes[idx],
            self.prompt_boxes[idx],
        )

    @staticmethod
    def cat(parts: list[MaskSet], size: tuple[int, int]) -> MaskSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            return MaskSet(size)
        return MaskSet(
            size,
            [r for p in parts for r in p.rles],
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]),
            torch.cat([p.points for p in parts]),
            torch.cat([p.crop_boxes for p in parts]),
            torch.cat([p.prompt_boxes for p in parts]),
        )

    def areas(self) -> np.ndarray:
        return np.array([ops.rle_area(r) for r in self.rles], dtype=np.int64)

    def masks(self) -> torch.Tensor:
        """K x H x W bool (decodes every RLE)."""
        return ops.rles_to_masks(self.rles, self.size)


def to_records(data: MaskSet, output_mode: str) -> list[dict[str, Any]]:
    """segment_anything's record dicts, one per mask, in the order of ``data``.

    Keys: ``segmentation`` (H x W bool array, or an RLE dict per ``output_mode``),
    ``area`` (int), ``bbox`` (XYWH, inclusive max as segment_anything), ``predicted_iou``,
    ``point_coords`` ([[x, y]]), ``stability_score``, ``crop_box`` (XYWH). Masks from
    box prompts also carry ``prompt_box`` (XYWH of the prompt box).
    """
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, not {output_mode!r}")
    if output_mode == "coco_rle":
        segs: list[Any] = ops.rles_to_coco(data.rles, data.size)
    elif output_mode == "binary_mask":
        segs = [ops.rle_to_mask(r, data.size) for r in data.rles]
    else:
        segs = [ops.rle_to_dict(r, data.size) for r in data.rles]
    bboxes = ops.box_xyxy_to_xywh(data.boxes).tolist()
    crops = ops.box_xyxy_to_xywh(data.crop_boxes).tolist()
    prompt_boxes = ops.box_xyxy_to_xywh(data.prompt_boxes).tolist()
    has_box = (~torch.isnan(data.prompt_boxes).any(dim=1)).tolist()
    points = data.points.tolist()
    iou = data.iou.tolist()
    stab = data.stability.tolist()
    out = []
    for i, seg in enumerate(segs):
        rec = {
            "segmentation": seg,
            "area": ops.rle_area(data.rles[i]),
            "bbox": bboxes[i],
            "predicted_iou": iou[i],
            "point_coords": [points[i]],
            "stability_score": stab[i],
            "crop_box": crops[i],
        }
        if has_box[i]:
            rec["prompt_box"] = prompt_boxes[i]
        out.append(rec)
    return out


def remove_small_regions(data: MaskSet, min_area: int, nms_thresh: float) -> MaskSet:
    """segment_anything's ``postprocess_small_regions``: fill holes and drop islands below
    ``min_area`` pixels, then box NMS preferring unchanged masks; only kept changed masks
    get their new RLE and box."""
    if len(data) == 0:
        return data
    new_masks, changed = [], []
    for rle in data.rles:
        m = ops.rle_to_mask(rle, data.size)
        m, c1 = ops.remove_small_regions(m, min_area, "holes")
        m, c2 = ops.remove_small_regions(m, min_area, "islands")
        new_masks.append(m)
        changed.append(c1 or c2)
    masks = torch.from_numpy(np.stack(new_masks))
    boxes = ops.masks_to_boxes(masks)
    scores = torch.tensor([0.0 if c else 1.0 for c in changed])
    keep = ops.nms(boxes.float(), scores, nms_thresh)
    out = data.select(keep)
    out.boxes = out.boxes.clone()
    for j, i in enumerate(keep.tolist()):
        if changed[i]:
            out.rles[j] = ops.masks_to_rle(masks[i : i + 1])[0]
            out.boxes[j] = boxes[i]
    return out


def make_non_overlapping(data: MaskSet, nms_thresh: float) -> MaskSet:
    """Mask-level NMS, then every pixel goes to the one covering mask with the highest predicted IoU.

    Masks left empty are dropped; area, box and RLE are recomputed for the rest.
    Returns masks ordered by decreasing predicted IoU. Decodes all K masks (K x H x W bool).
    """
    if len(data) == 0:
        return data
    masks = data.masks()
    keep = ops.mask_nms(masks, data.iou.float().cpu(), nms_thresh)
    data = data.select(keep)
    masks = masks[keep]
    # keep is ordered by decreasing score: paint the lowest score first so higher ones win.
    h, w = data.size
    owner = torch.full((h, w), -1, dtype=torch.int64)
    for k in range(len(keep) - 1, -1, -1):
        owner[masks[k]] = k
    exclusive = owner[None] == torch.arange(len(keep))[:, None, None]
    nonempty = exclusive.flatten(1).any(dim=1)
    data = data.select(nonempty)
    exclusive = exclusive[nonempty]
    data.rles = ops.masks_to_rle(exclusive)
    data.boxes = ops.masks_to_boxes(exclusive)
    return data
