"""Prompts derived from ground-truth instances, for the SegAny (promptable) evaluation.

Conventions (the same as everywhere in leansam):

* Masks are ``(H, W)`` bool arrays, ``mask[y, x]``.
* COCO boxes are ``XYWH`` in pixels; the model takes ``XYXY`` = ``(x, y, x + w, y + h)``.
* Points are ``(x, y)`` pixel indices (column, row) of the original image, exactly what
  ``SamPredictor.predict`` takes; the prompt encoder itself shifts them to pixel centres.

Prompt kinds (:data:`PROMPT_KINDS`):

* ``box``: the annotation's ``bbox``.
* ``tight-box``: the tightest box around the decoded mask (differs from ``bbox`` when the
  annotation's box is loose or comes from a polygon outline).
* ``center``: one click on the mask's most interior pixel, the one farthest from the mask
  boundary (Euclidean distance transform; the image border counts as boundary; ties go to the
  first pixel in row-major order).
* ``randomN`` (``random1``, ``random3``, ``random5``): N clicks drawn uniformly from the mask's
  pixels without replacement (with replacement if the mask has fewer than N pixels), from a
  generator seeded by ``(seed, image_id, annotation_id)``, so the points do not depend on
  the order, sharding or resumption of a run.

Single-click prompts use SAM's rule for ambiguous prompts: three candidate masks
(``multimask_output=True``), keep the one with the highest predicted IoU. Boxes and
multi-click prompts ask for one mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PROMPT_KINDS: tuple[str, ...] = ("box", "tight-box", "center", "random1", "random3", "random5")


@dataclass(frozen=True)
class InstancePrompts:
    """Prompts for B instances of one image, in pixels of the original image.

    Attributes:
        boxes: B x 4 float32 XYXY, or None.
        points: B x N x 2 float32 (x, y), or None.
        labels: B x N int64 (1 = foreground), or None.
        multimask: decode 3 candidates per prompt and keep the highest predicted IoU.
    """

    boxes: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    multimask: bool

    def __len__(self) -> int:
        return len(self.boxes) if self.boxes is not None else len(self.points)

    def select(self, sl: slice) -> InstancePrompts:
        """The prompts of instances ``sl`` (a chunk for one decoder call)."""
        return InstancePrompts(
            None if self.boxes is None else self.boxes[sl],
            None if self.points is None else self.points[sl],
            None if self.labels is None else self.labels[sl],
            self.multimask,
        )


def check_prompt_kind(kind: str) -> str:
    """Returns ``kind`` or raises ``ValueError`` naming the valid kinds."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; choose one of {', '.join(PROMPT_KINDS)}")
    return kind


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """B x 4 COCO XYWH -> B x 4 XYXY (float32)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box (4,) float32 covering the mask's pixels: ``(x0, y0, x1 + 1, y1 + 1)``; zeros if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32)


def mask_center(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from the mask boundary (exact Euclidean distance).

    The image border counts as boundary. Raises ``ValueError`` for an empty mask.
    """
    if not mask.any():
        raise ValueError("mask_center of an empty mask")
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def instance_rng(seed: int, image_id: int, ann_id: int) -> np.random.Generator:
    """The generator of one instance's random clicks (independent of run order and sharding)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_id) & 0xFFFFFFFF, int(ann_id)]))


def random_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n x 2 int (x, y) pixels drawn uniformly from the mask (without replacement when possible)."""
    flat = np.flatnonzero(mask.ravel())
    if flat.size == 0:
        raise ValueError("random_points of an empty mask")
    idx = rng.choice(flat, size=n, replace=flat.size < n)
    ys, xs = np.divmod(idx, mask.shape[1])
    return np.stack([xs, ys], axis=1)


def make_prompts(
    kind: str,
    masks: np.ndarray,
    bboxes: np.ndarray,
    image_id: int = 0,
    ann_ids: np.ndarray | list[int] | None = None,
    seed: int = 0,
) -> InstancePrompts:
    """Prompts of one kind for B ground-truth instances of one image.

    Args:
        kind: one of :data:`PROMPT_KINDS`.
        masks: B x H x W bool ground-truth masks (non-empty).
        bboxes: B x 4 COCO XYWH annotation boxes (used by ``box``).
        image_id: the image's id (seeds the random clicks).
        ann_ids: B annotation ids (seed the random clicks); default ``0..B-1``.
        seed: run seed for the random clicks.
    """
    check_prompt_kind(kind)
    b = len(masks)
    if ann_ids is None:
        ann_ids = list(range(b))
    if kind == "box":
        return InstancePrompts(xywh_to_xyxy(bboxes), None, None, multimask=False)
    if kind == "tight-box":
        boxes = np.stack([tight_box(m) for m in masks]) if b else np.zeros((0, 4), np.float32)
        return InstancePrompts(boxes, None, None, multimask=False)
    if kind == "center":
        pts = np.array([mask_center(m) for m in masks], dtype=np.float32).reshape(b, 1, 2)
    else:
        n = int(kind.removeprefix("random"))
        pts = np.zeros((b, n, 2), dtype=np.float32)
        for i, (m, aid) in enumerate(zip(masks, ann_ids)):
            pts[i] = random_points(m, n, instance_rng(seed, image_id, int(aid)))
    labels = np.ones(pts.shape[:2], dtype=np.int64)
    return InstancePrompts(None, pts, labels, multimask=pts.shape[1] == 1)
