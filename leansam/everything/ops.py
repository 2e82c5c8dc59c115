"""Vectorised building blocks of automatic mask generation, in torch (no torchvision).

Conventions used throughout:

* boxes are ``N x 4`` XYXY in pixels. Boxes computed from masks are *inclusive*
  (``x1``/``y1`` are the last column/row that holds a mask pixel), exactly as
  segment_anything computes them, so record ``bbox`` values stay compatible.
* masks are ``N x H x W`` bool.
* run-length encodings (RLE) are segment_anything's / COCO's uncompressed form:
  column-major (Fortran) order, alternating runs of 0s and 1s starting with 0s.
  Internally one RLE is a 1-D int32 numpy array of run lengths (int64 from 2**31 pixels on:
  half the memory of int64 for the results a generator keeps); :func:`rle_to_dict` turns it
  into ``{"size": [H, W], "counts": [...]}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# --- boxes ---------------------------------------------------------------------------------------


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 XYXY -> N areas ``(x1 - x0) * (y1 - y0)`` (torchvision's convention, no +1)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of N x 4 and M x 4 XYXY boxes -> N x M, in float64 if either input is, else float32.

    Follows torchvision's definition (areas without +1). Two zero-area boxes have
    IoU 0 here (torchvision: NaN); both compare False against any threshold.
    """
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a = a.to(dtype)
    b = b.to(dtype)
    # 2-D ops only (no N x M x 2 temporaries), in place where possible.
    iw = (
        torch.minimum(a[:, None, 2], b[None, :, 2])
        .sub_(torch.maximum(a[:, None, 0], b[None, :, 0]))
        .clamp_(min=0)
    )
    ih = (
        torch.minimum(a[:, None, 3], b[None, :, 3])
        .sub_(torch.maximum(a[:, None, 1], b[None, :, 1]))
        .clamp_(min=0)
    )
    inter = iw.mul_(ih)
    union = (box_area(a)[:, None] + box_area(b)[None, :]).sub_(inter)
    # union == 0 only for two zero-area boxes (then inter == 0 too): IoU 0.
    return inter.div_(union.clamp_(min=torch.finfo(dtype).tiny))


def box_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 XYXY -> N x 4 XYWH (w = x1 - x0, h = y1 - y0, as segment_anything)."""
    out = boxes.clone()
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return out


def masks_to_boxes(
    masks: torch.Tensor, return_nonempty: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N x H x W bool -> N x 4 int64 inclusive XYXY boxes; ``[0, 0, 0, 0]`` for an empty mask.

    With ``return_nonempty`` also returns N bool: which masks have a pixel (free by-product).
    """
    n, h, w = masks.shape
    if n == 0:
        boxes = torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
        return (boxes, torch.zeros(0, dtype=torch.bool, device=masks.device)) if return_nonempty else boxes
    u8 = masks.view(torch.uint8)  # reductions on uint8 are faster than bool any()
    rows = u8.amax(dim=2)  # N x H
    cols = u8.amax(dim=1)  # N x W
    # argmax returns the first maximum: the first set row/column, and on the flipped axis the last.
    top = rows.argmax(dim=1)
    bottom = h - 1 - rows.flip(1).argmax(dim=1)
    left = cols.argmax(dim=1)
    right = w - 1 - cols.flip(1).argmax(dim=1)
    nonempty = rows.amax(dim=1) > 0
    boxes = torch.stack([left, top, right, bottom], dim=1) * nonempty[:, None]
    return (boxes, nonempty) if return_nonempty else boxes


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], image_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """Which boxes touch an edge of the crop that is not also an edge of the image.

    boxes: N x 4 XYXY in pixels of the ORIGINAL image. crop_box, image_box: XYXY.
    Returns N bool. A side is "near" when within ``atol`` pixels (segment_anything's rule).
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float64, device=boxes.device)
    full = torch.as_tensor(image_box, dtype=torch.float64, device=boxes.device)
    b = boxes.double()
    near_crop = (b - crop).abs() <= atol
    near_image = (b - full).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


# --- NMS -----------------------------------------------------------------------------------------


def _greedy(over: np.ndarray, suppressed: np.ndarray) -> np.ndarray:
    """Greedy NMS over a score-sorted block, given its overlap matrix.

    over: K x K bool, ``over[i, j]`` = boxes i and j overlap above the threshold.
    suppressed: K bool, boxes already suppressed by earlier blocks (updated in place).
    Returns K bool: kept boxes. The Python loop only tests a flag per box; the work
    per KEPT box is one vectorised row OR, so the cost is O(K) + O(kept x K).
    """
    keep = np.zeros(len(suppressed), dtype=bool)
    for i in range(len(suppressed)):
        if not suppressed[i]:
            keep[i] = True
            suppressed |= over[i]
    return keep


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    categories: torch.Tensor | None,
    iou_threshold: float,
    block: int = 2048,
) -> torch.Tensor:
    """Greedy non-maximum suppression, per category, without torchvision.

    Semantics of ``torchvision.ops.batched_nms``: boxes are visited by decreasing score
    (ties keep their input order); a box is dropped when its IoU with an already kept
    box of the same category is ABOVE ``iou_threshold``.

    How: sort once; the IoU matrix of each block of ``block`` boxes is computed in one
    vectorised call (memory O(block^2), not O(N^2)), boxes kept in earlier blocks
    suppress the block in one more call, and the greedy pass inside the block is a loop
    of row ORs over that boolean matrix.

    Args:
        boxes: N x 4 XYXY (any units).
        scores: N.
        categories: N integer labels (boxes of different labels never suppress each other),
            or None for one category.
        iou_threshold: suppression threshold.
        block: boxes processed together.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].cpu()
    b = b if b.dtype == torch.float64 else b.float()
    cat = categories[order].cpu() if categories is not None else None
    keep = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        end = min(start + block, n)
        cand = b[start:end]
        suppressed = np.zeros(end - start, dtype=bool)
        prev = torch.from_numpy(np.flatnonzero(keep[:start]))
        if len(prev):  # suppression by boxes kept in earlier blocks
            over = box_iou(b[prev], cand) > iou_threshold
            if cat is not None:
                over &= cat[prev][:, None] == cat[start:end][None, :]
            suppressed |= over.any(dim=0).numpy()
        over = box_iou(cand, cand) > iou_threshold
        if cat is not None:
            over &= cat[start:end][:, None] == cat[start:end][None, :]
        keep[start:end] = _greedy(over.numpy(), suppressed)
    return order[torch.from_numpy(np.flatnonzero(keep)).to(order.device)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Single-category :func:`batched_nms` (``torchvision.ops.nms`` semantics)."""
    return batched_nms(boxes, scores, None, iou_threshold)


def mask_iou_matrix(masks: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Pairwise IoU of N x H x W bool masks -> N x N float64.

    Intersections are one matmul over flattened pixels, done ``chunk`` pixels at a
    time so the float copy stays N x chunk.
    """
    n = masks.shape[0]
    flat = masks.reshape(n, -1)
    inter = torch.zeros(n, n, dtype=torch.float64, device=masks.device)
    for s in range(0, flat.shape[1], chunk):
        part = flat[:, s : s + chunk].float()
        # float32 sums of 0/1 are exact below 2^24 per chunk (chunk <= 2^24).
        inter += (part @ part.T).double()
    area = flat.sum(dim=1, dtype=torch.int64).double()
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on mask IoU (not box IoU). masks N x H x W bool -> kept indices by decreasing score."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.argsort(scores.cpu(), descending=True, stable=True)
    over = (mask_iou_matrix(masks[order.to(masks.device)]) > iou_threshold).cpu().numpy()
    keep = _greedy(over, np.zeros(n, dtype=bool))
    return order[torch.from_numpy(np.flatnonzero(keep))]


# --- scores --------------------------------------------------------------------------------------


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of ``logits > threshold + offset`` and ``logits > threshold - offset``.

    logits: N x H x W -> N float32. The first mask is contained in the second, so
    the IoU is a ratio of pixel counts (int32, no float copies of the masks).
    An empty union gives 0.0 (segment_anything: NaN), so empty masks fail every
    positive stability threshold in both.
    """
    inter = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int32)
    return torch.where(
        union > 0, inter.float() / union.clamp(min=1).float(), torch.zeros_like(inter, dtype=torch.float)
    )


# --- crops and point grids -----------------------------------------------------------------------


def generate_crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, pixels of the original image) and their layer indices.

    Layer 0 is the whole image; layer i (1..n_layers) tiles the image with
    ``2**i x 2**i`` overlapping crops whose overlap is ``overlap_ratio`` of the short
    side scaled by ``2 / 2**i`` (segment_anything's layout, crops ordered x-major).
    """
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    short = min(h, w)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        xs = [int((crop_w - overlap) * i) for i in range(per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in xs:
            for y0 in ys:
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


def point_grid(n_per_side: int) -> np.ndarray:
    """``n*n x 2`` (x, y) cell centres of an n x n grid over [0, 1]^2, x varying fastest."""
    if n_per_side <= 0:
        raise ValueError(f"points per side must be positive, got {n_per_side}")
    half = 1 / (2 * n_per_side)
    # linspace (not (i + 0.5) / n) so that the points equal segment_anything's to the last bit.
    c = np.linspace(half, 1 - half, n_per_side)
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / downscale**i)`` points per side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


# --- run-length encoding -------------------------------------------------------------------------


def masks_to_rle(
    masks: torch.Tensor, offset: tuple[int, int] = (0, 0), image_size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Column-major RLEs of N x h x W bool masks placed at ``offset`` in a larger image.

    Args:
        masks: N x h x w bool, e.g. masks in the frame of a crop.
        offset: (x0, y0) of the masks' top-left pixel in the full image.
        image_size: (H, W) of the full image; default (h, w) with zero offset.

    Returns:
        N run-length arrays (int32, see the module docstring) of the masks in the full H x W image, identical
        to encoding the zero-padded full-size masks.

    How: the change positions of all N masks come from ONE ``nonzero`` over the
    column-major masks. When the masks span whole image columns (no vertical offset)
    the flattened masks are a contiguous stretch of the image and the change index maps
    directly. Otherwise every column is padded with a 0 above and below, so each run of
    1s starts and ends inside its column, at image index ``(x0 + col) * H + y0 + row``;
    a run ending at the bottom of column c and one starting at the top of column c + 1
    give the same index twice and cancel (the run continues across the column break).
    """
    n, h, w = masks.shape
    if image_size is None:
        image_size = (h, w)
    big_h, big_w = image_size
    x0, y0 = offset
    if n == 0:
        return []
    total = big_h * big_w
    cols = masks.transpose(1, 2).contiguous().view(torch.uint8)  # N x w x h: column-major
    if y0 == 0 and h == big_h:
        # Whole columns: the flattened masks are one contiguous stretch of the image.
        flat = cols.reshape(n, w * h)
        k, j = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
        pos = (x0 * big_h + j + 1).cpu().numpy()
        k = k.cpu().numpy()
        first = flat[:, 0].bool().cpu().numpy()
        last = flat[:, -1].bool().cpu().numpy()
        start, end = x0 * big_h, (x0 + w) * big_h
    else:
        padded = torch.nn.functional.pad(cols, (1, 1))  # N x w x (h + 2)
        k, c, r = (padded[..., 1:] != padded[..., :-1]).nonzero(as_tuple=True)
        pos = ((x0 + c) * big_h + y0 + r).cpu().numpy()
        k = k.cpu().numpy()
        if len(pos) > 1:
            dup = (pos[1:] == pos[:-1]) & (k[1:] == k[:-1])
            if dup.any():
                drop = np.zeros(len(pos), dtype=bool)
                drop[1:] |= dup
                drop[:-1] |= dup
                pos, k = pos[~drop], k[~drop]
        first = last = np.zeros(n, dtype=bool)
        start = end = 0
    splits = np.searchsorted(k, np.arange(1, n))
    dtype = np.int32 if total < 2**31 else np.int64
    out = []
    for i, p in enumerate(np.split(pos, splits)):
        parts = [[0]]
        if first[i]:
            parts.append([start])
        parts.append(p)
        if last[i]:
            parts.append([end])
        b = np.concatenate(parts)
        # A run reaching the image's last pixel needs no closing boundary.
        b = b[b < total] if len(b) and b[-1] >= total else b
        # Runs alternate 0s/1s starting with 0s; a mask whose first pixel is set starts with a 0 run.
        out.append(np.diff(np.concatenate((b, [total]))).astype(dtype))
    return out


def rle_area(counts: np.ndarray) -> int:
    """Number of set pixels of an RLE."""
    return int(counts[1::2].sum())


def rle_to_mask(counts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RLE run lengths -> H x W bool (C order)."""
    h, w = size
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T


def rles_to_masks(rles: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Several RLEs -> N x H x W bool tensor."""
    h, w = size
    if not rles:
        return torch.zeros(0, h, w, dtype=torch.bool)
    return torch.from_numpy(np.stack([rle_to_mask(r, size) for r in rles]))


def rle_to_dict(counts: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    """segment_anything's uncompressed RLE record: ``{"size": [H, W], "counts": [int, ...]}``."""
    return {"size": [int(size[0]), int(size[1])], "counts": counts.tolist()}


def rles_to_coco(rles: list[np.ndarray], size: tuple[int, int]) -> list[dict[str, Any]]:
    """COCO compressed RLEs (``counts`` as a utf-8 string, JSON-serialisable) via pycocotools."""
    from pycocotools import mask as mask_utils

    h, w = size
    out = []
    # A few masks at a time: the Python lists of run lengths that pycocotools needs take 8 bytes or
    # more per run (twice the int32 RLEs), so converting every mask at once would add that to the peak.
    for s in range(0, len(rles), 16):
        objs = [{"size": [h, w], "counts": r.tolist()} for r in rles[s : s + 16]]
        for o in mask_utils.frPyObjects(objs, h, w):
            o["counts"] = o["counts"].decode("utf-8")
            out.append(o)
    return out


# --- small regions -------------------------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fills holes (``mode="holes"``) or removes islands (``"islands"``) below ``area_thresh`` pixels.

    mask: H x W bool. 8-connectivity. When every island is small, the largest one is
    kept (segment_anything's rule). Returns (mask, whether it changed).
    """
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    holes = mode == "holes"
    work = (mask ^ holes).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if len(small) == 0:
        return mask, False
    if holes:
        # Background (label 0 of the inverted mask = foreground) plus the small holes become foreground.
        return np.isin(labels, np.concatenate(([0], small))), True
    big = np.setdiff1d(np.arange(1, n), small)
    if len(big) == 0:
        big = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, big), True
