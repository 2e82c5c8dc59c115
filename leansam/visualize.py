"""Overlays of masks, points and boxes on an image (for the CLI's overlay.png)."""

from __future__ import annotations

import cv2
import numpy as np


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct-ish RGB colours (uint8, n x 3): evenly spaced hues, fixed order."""
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 255)], 1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def draw_overlay(
    image: np.ndarray,
    masks: list[np.ndarray] | np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """H x W x 3 uint8 RGB with each H x W bool mask tinted in its own colour and outlined.

    points: N x 2 (x, y) original pixels, drawn green (label 1) or red (label 0).
    boxes: M x 4 XYXY original pixels, drawn as rectangles.
    out: H x W x 3 uint8 to draw into (returned); may be ``image`` itself (drawn in place: no
        full-size copy). Default: a new array.
    """
    colors = palette(len(masks))
    bools = [np.asarray(m, dtype=bool) for m in masks]
    if out is None:
        out = np.empty_like(image, dtype=np.uint8)
    # Blended in float32 by bands of rows: the same arithmetic as one full-size float copy,
    # in bounded memory for large images.
    band = max(1, (1 << 18) // max(1, image.shape[1]))
    for y0 in range(0, image.shape[0], band):
        block = image[y0 : y0 + band].astype(np.float32)
        for m, c in zip(bools, colors):
            mb = m[y0 : y0 + band]
            block[mb] = block[mb] * (1 - alpha) + c.astype(np.float32) * alpha
        out[y0 : y0 + band] = block.round().clip(0, 255).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for m, c in zip(bools, colors):
        cv2.drawContours(out, outline(m), -1, tuple(int(v) for v in c), thickness)
    if boxes is not None:
        for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(out, (round(x0), round(y0)), (round(x1), round(y1)), (0, 128, 255), thickness + 1)
    if points is not None:
        radius = 3 * thickness + 2
        for (x, y), lab in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
            color = (0, 220, 0) if lab == 1 else (230, 0, 0)
            cv2.circle(out, (round(x), round(y)), radius, color, -1)
            cv2.circle(out, (round(x), round(y)), radius, (255, 255, 255), max(1, thickness // 2))
    return out


def outline(mask: np.ndarray) -> list[np.ndarray]:
    """The external contours of an H x W bool mask (``cv2.findContours``, simple chains), in image
    pixels. Found in the mask's bounding box, seen as 0/1 bytes: OpenCV copies only that box."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].view(np.uint8)
    offset = (int(cols[0]), int(rows[0]))
    return list(cv2.findContours(box, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)[0])
