"""Prompt samplers: where the automatic mask generator puts its prompts.

A sampler turns one crop into a list of :class:`PromptRound` s. The generator
decodes the rounds in order; a round can mark the pixels its confident masks
cover (``cover_thresh``) and a later round can drop the prompts that fall on
covered pixels (``skip_covered``). That is enough for the three strategies:

* :class:`GridSampler` — segment_anything: one regular grid per crop layer.
* :class:`HierarchicalSampler` — TinySAM: a sparse grid first, then the dense
  points only where no confident mask landed.
* :class:`BoxSampler` — MobileSAMv2 object-aware prompting: one box per
  detected object, no grid.

Coordinates: round points are (x, y) and boxes XYXY, in pixels of the crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from . import ops

BoxSource = str | Path | np.ndarray | torch.Tensor | list | Callable[[np.ndarray], Any]


@dataclass
class PromptRound:
    """One set of prompts for one crop.

    Attributes:
        name: label in statistics (``grid``, ``sparse``, ``dense``, ``boxes``).
        points: N x 2 float64 (x, y) single foreground clicks, pixels of the crop; or None.
        boxes: N x 4 float32 XYXY box prompts, pixels of the crop; or None.
        multimask_output: three candidate masks per prompt (clicks) or one (boxes).
        cover_thresh: if set, pixels where a mask kept in this round has a logit above it
            are marked covered (TinySAM's "high-confidence" region).
        skip_covered: drop the prompts of this round whose pixel is already covered.
    """

    name: str
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None
    multimask_output: bool = True
    cover_thresh: float | None = None
    skip_covered: bool = False

    def __len__(self) -> int:
        return len(self.points) if self.points is not None else len(self.boxes)

    def click_pixels(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys) int64: the pixel of each click in a crop of ``size`` (H, W), the integer part of
        its coordinates clipped to the crop (TinySAM indexes ``int(x), int(y)``)."""
        h, w = size
        xs = np.clip(self.points[:, 0].astype(np.int64), 0, w - 1)
        ys = np.clip(self.points[:, 1].astype(np.int64), 0, h - 1)
        return xs, ys


@runtime_checkable
class PromptSampler(Protocol):
    """What the generator needs from a strategy."""

    name: str
    supports_crops: bool

    def rounds(self, crop_size: tuple[int, int], layer: int) -> list[PromptRound]:
        """The prompt rounds for a crop of (h, w) pixels in crop layer ``layer`` (0 = whole image)."""
        ...


class GridSampler:
    """segment_anything's regular point grid, one grid per crop layer.

    Args:
        point_grids: one N_i x 2 array per crop layer, (x, y) normalised to [0, 1].
    """

    name = "grid"
    supports_crops = True

    def __init__(self, point_grids: list[np.ndarray]) -> None:
        grids = []
        for i, g in enumerate(point_grids):
            g = np.asarray(g, dtype=np.float64)
            if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
                raise ValueError(f"point_grids[{i}] must be a non-empty N x 2 array, got shape {g.shape}")
            if not np.isfinite(g).all() or g.min() < 0 or g.max() > 1:
                raise ValueError(f"point_grids[{i}] must hold (x, y) in [0, 1]")
            grids.append(g)
        if not grids:
            raise ValueError("point_grids is empty")
        self.point_grids = grids

    @classmethod
    def from_points_per_side(cls, points_per_side: int, n_layers: int = 0, downscale: int = 1) -> GridSampler:
        return cls(ops.layer_point_grids(points_per_side, n_layers, downscale))

    def rounds(self, crop_size: tuple[int, int], layer: int) -> list[PromptRound]:
        if layer >= len(self.point_grids):
            raise ValueError(f"no point grid for crop layer {layer} ({len(self.point_grids)} grids given)")
        h, w = crop_size
        return [PromptRound("grid", points=self.point_grids[layer] * np.array([w, h], dtype=np.float64))]


class HierarchicalSampler:
    """TinySAM's hierarchical "segment everything" prompts.

    Round 1 (``sparse``) clicks a grid of ``points_per_side // 4`` per side. Every
    mask that survives the IoU and stability filters marks the pixels where its
    full-size logit exceeds ``high_score_thresh`` (8.5) as covered. Round 2
    (``dense``) visits, around each sparse point, the 4 x 4 block of points spaced
    ``W // points_per_side`` by ``H // points_per_side`` pixels (offsets -1..2
    steps; the sparse point itself excluded; +2 only while inside the image), and
    clicks only those on uncovered pixels. Both rounds are merged before NMS.
    This reproduces the point layout and rule of TinySAM's
    ``SamHierarchicalMaskGenerator.hierarchical_generate``.

    Args:
        points_per_side: dense density, >= 4 (layer i uses ``int(points_per_side / downscale**i)``).
        high_score_thresh: logit threshold of the confident region.
        downscale: crop_n_points_downscale_factor.
    """

    name = "hierarchical"
    supports_crops = True

    def __init__(self, points_per_side: int, high_score_thresh: float = 8.5, downscale: int = 1) -> None:
        if points_per_side < 4:
            raise ValueError(f"hierarchical sampling needs points_per_side >= 4, got {points_per_side}")
        self.points_per_side = points_per_side
        self.high_score_thresh = high_score_thresh
        self.downscale = downscale

    def rounds(self, crop_size: tuple[int, int], layer: int) -> list[PromptRound]:
        h, w = crop_size
        n = int(self.points_per_side / self.downscale**layer)
        if n < 4:
            raise ValueError(f"crop layer {layer} has {n} points per side; hierarchical sampling needs >= 4")
        sparse = ops.point_grid(n // 4) * np.array([w, h], dtype=np.float64)
        return [
            PromptRound("sparse", points=sparse, cover_thresh=self.high_score_thresh),
            PromptRound("dense", points=self.dense_candidates(sparse, (h, w), n), skip_covered=True),
        ]

    @staticmethod
    def dense_candidates(sparse: np.ndarray, size: tuple[int, int], points_per_side: int) -> np.ndarray:
        """Dense points around each sparse point, in TinySAM's order. sparse: S x 2 (x, y) pixels."""
        h, w = size
        sx, sy = w // points_per_side, h // points_per_side
        # Per sparse point: the 3 x 3 ring (x offset outer loop), then +2 columns, +2 rows, the +2 corner.
        ring = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
        col2 = [(2, dy) for dy in (-1, 0, 1)]
        row2 = [(dx, 2) for dx in (-1, 0, 1)]
        offsets = np.array(ring + col2 + row2 + [(2, 2)], dtype=np.float64)  # 15 x 2
        cand = sparse[:, None, :] + offsets[None] * np.array([sx, sy], dtype=np.float64)  # S x 15 x 2
        ok = np.ones(cand.shape[:2], dtype=bool)
        x2 = sparse[:, 0] + 2 * sx < w
        y2 = sparse[:, 1] + 2 * sy < h
        ok[:, 8:11] = x2[:, None]
        ok[:, 11:14] = y2[:, None]
        ok[:, 14] = x2 & y2
        return cand[ok].reshape(-1, 2)


class BoxSampler:
    """MobileSAMv2's object-aware prompting: one box prompt per object, one mask per box.

    Args:
        boxes: N x 4 XYXY, pixels of the original image (already validated, see :func:`load_boxes`).
    """

    name = "boxes"
    supports_crops = False

    def __init__(self, boxes: torch.Tensor | np.ndarray) -> None:
        self.boxes = np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=np.float32).reshape(-1, 4)

    def rounds(self, crop_size: tuple[int, int], layer: int) -> list[PromptRound]:
        if layer != 0:
            raise ValueError("box prompts are given for the whole image; crop layers are not supported")
        return [PromptRound("boxes", boxes=self.boxes, multimask_output=False)]


# --- box loading ---------------------------------------------------------------------------------


def _entries_from_json(path: Path) -> list[Any]:
    from ..data.schemas import BOXES
    from ..validate import check, read_json

    data = read_json(path, "boxes")
    if isinstance(data, dict):
        if "annotations" not in data:
            raise ValueError(f"boxes file {path}: expected a list of {{'bbox': [x, y, w, h]}} or a COCO dict")
        data = data["annotations"]
    return check(data, BOXES, str(path))


def _boxes_from_entries(entries: list[Any], where: str, image_id: Any, min_score: float) -> np.ndarray:
    """COCO-style detections ``{"bbox": [x, y, w, h], "score"?, "image_id"?}`` -> N x 4 XYXY."""
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "bbox" not in e:
            raise ValueError(f"{where}: entry {i} has no 'bbox' (expected {{'bbox': [x, y, w, h], ...}})")
    if image_id is not None:
        # Compared as text so that a command-line "42" finds image_id 42.
        entries = [e for e in entries if "image_id" in e and str(e["image_id"]) == str(image_id)]
        if not entries:
            raise ValueError(f"{where}: no boxes for image_id {image_id!r}")
    else:
        ids = {e["image_id"] for e in entries if "image_id" in e}
        if len(ids) > 1:
            raise ValueError(f"{where}: boxes of {len(ids)} images; choose one with image_id")
    entries = [e for e in entries if float(e.get("score", 1.0)) >= min_score]
    rows = []
    for i, e in enumerate(entries):
        b = e["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(isinstance(v, (int, float)) for v in b):
            raise ValueError(f"{where}: bbox {i} must be 4 numbers [x, y, w, h], got {b!r}")
        x, y, bw, bh = (float(v) for v in b)
        rows.append([x, y, x + bw, y + bh])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def load_boxes(
    source: BoxSource,
    image_size: tuple[int, int],
    *,
    image: np.ndarray | None = None,
    image_id: Any = None,
    min_score: float = 0.0,
    tolerance: float = 1.0,
) -> torch.Tensor:
    """Box prompts from a detector, validated and clipped to the image.

    Args:
        source: one of
            * a path to a JSON file: a list of COCO-style detections
              ``{"bbox": [x, y, w, h], "score"?: float, "image_id"?: ...}`` (a COCO
              results file), or a COCO dict with ``"annotations"``;
            * an N x 4 array / tensor / nested list of XYXY boxes in pixels of the image;
            * a callable ``image -> N x 4 XYXY`` (needs ``image``).
        image_size: (H, W) of the image the boxes belong to.
        image: the H x W x 3 image, for callable sources.
        image_id: with JSON files holding several images, the ``image_id`` to take.
        min_score: drop JSON detections whose ``score`` is below this.
        tolerance: boxes may stick out of the image by this many pixels (then clipped).

    Returns:
        N x 4 float32 XYXY in pixels of the original image, N >= 1.

    Raises:
        ValueError: unreadable/malformed/empty input, non-finite or empty boxes, or
            boxes outside the image.
    """
    h, w = image_size
    if callable(source) and not isinstance(source, (str, Path)):
        if image is None:
            raise ValueError("a callable box source needs the image")
        source = source(image)
        where = "box callable"
    else:
        where = "boxes"
    if isinstance(source, (str, Path)):
        path = Path(source)
        arr = _boxes_from_entries(_entries_from_json(path), str(path), image_id, min_score)
        where = str(path)
    elif isinstance(source, list) and source and isinstance(source[0], dict):
        arr = _boxes_from_entries(source, where, image_id, min_score)
    else:
        try:
            if isinstance(source, torch.Tensor):
                source = source.detach().cpu().numpy()
            arr = np.asarray(source, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected an N x 4 XYXY array, got {type(source).__name__}") from None
        if arr.ndim == 1 and arr.shape[0] in (0, 4):
            arr = arr.reshape(-1, 4)
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(f"{where}: expected an N x 4 XYXY array, got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{where}: no boxes")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: box coordinates must be finite")
    bad = np.flatnonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))
    if len(bad):
        raise ValueError(
            f"{where}: box {bad[0]} {arr[bad[0]].tolist()} has no area (need x1 > x0, y1 > y0, XYXY)"
        )
    lo, hi = -tolerance, np.array([w, h, w, h]) + tolerance
    outside = np.flatnonzero(((arr < lo) | (arr > hi)).any(axis=1))
    if len(outside):
        i = outside[0]
        raise ValueError(
            f"{where}: {len(outside)} box(es) outside the {w} x {h} image, e.g. box {i} {arr[i].tolist()} (XYXY pixels)"
        )
    arr = np.clip(arr, 0, [w, h, w, h])
    if ((arr[:, 2] - arr[:, 0]) < 1e-6).any() or ((arr[:, 3] - arr[:, 1]) < 1e-6).any():
        raise ValueError(f"{where}: a box has no area inside the image")
    return torch.from_numpy(arr.astype(np.float32))


def check_points_per_side(points_per_side: Any) -> int:
    """Validates ``points_per_side`` (a positive int)."""
    if isinstance(points_per_side, bool) or not isinstance(points_per_side, (int, np.integer)):
        if (
            isinstance(points_per_side, float)
            and math.isfinite(points_per_side)
            and points_per_side.is_integer()
        ):
            points_per_side = int(points_per_side)
        else:
            raise ValueError(f"points_per_side must be a positive integer, got {points_per_side!r}")
    if points_per_side <= 0:
        raise ValueError(f"points_per_side must be positive, got {points_per_side}")
    return int(points_per_side)
