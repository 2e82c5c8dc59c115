"""Calibration images: found in a folder, read with :func:`leansam.io.load_image`, preprocessed
with the model's own transform.

The selection is deterministic: image files (by suffix, case-insensitive) directly inside the
folder, sorted by file name, the first ``count`` of them. Every problem a user can fix is an
:class:`leansam.io.InputError` (the CLI prints it as ``error: ...`` and exits 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..io import DEFAULT_MAX_PIXELS, InputError, load_image

__all__ = ["IMAGE_SUFFIXES", "CalibrationSet", "find_images", "load_calibration"]

#: File suffixes counted as images.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def find_images(folder: str | Path, count: int | None = None, what: str = "calibration") -> list[Path]:
    """The first ``count`` image files of ``folder`` in sorted name order (all when None).

    Raises:
        InputError: the folder does not exist, is not a folder, or holds no image file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"{what} path is not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"{what} folder {folder} has no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    return files if count is None else files[:count]


class CalibrationSet:
    """Calibration images and their encoder inputs.

    Attributes:
        names: where each image came from (file path, or ``"<array i>"``).
        images: H x W x 3 uint8 RGB arrays.
        preprocess: image -> 1 x 3 x S x S encoder input; None uses the model's own
            ``preprocess`` (a tracking model's frames take the video path's, see
            :mod:`leansam.video.quantize`).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        names: Sequence[str],
        preprocess: Callable[[np.ndarray], torch.Tensor] | None = None,
    ) -> None:
        if not images:
            raise InputError("no calibration images")
        self.images = list(images)
        self.names = list(names)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """Encoder inputs, one 1 x 3 x S x S tensor per image, from ``model.preprocess`` (its own
        resize, normalisation and padding) unless the set has its own, on the model's device."""
        if self.preprocess is not None:
            device = next(model.parameters()).device
            return [self.preprocess(img).to(device) for img in self.images]
        return [model.preprocess(img) for img in self.images]


def load_calibration(
    source: str | Path | Sequence[np.ndarray] | CalibrationSet,
    count: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> CalibrationSet:
    """A :class:`CalibrationSet` from a folder (first ``count`` images) or from arrays."""
    if isinstance(source, CalibrationSet):
        return CalibrationSet(source.images[:count], source.names[:count], source.preprocess)
    if isinstance(source, str | Path):
        paths = find_images(source, count)
        return CalibrationSet([load_image(p, max_pixels=max_pixels) for p in paths], [str(p) for p in paths])
    arrays = list(source)[:count]
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"calibration image {i} must be H x W x 3 uint8 RGB, got {a.shape} {a.dtype}")
    return CalibrationSet([np.asarray(a) for a in arrays], [f"<array {i}>" for i in range(len(arrays))])
