"""Video frames in, model input out.

A video is a folder of JPEG/PNG frames, a video file (decoded lazily with PyAV), a uint8 array
T x H x W x 3 (RGB) or a sequence of H x W x 3 uint8 RGB frames. Frames stay uint8 on the CPU;
each is turned into model input when the model needs it, with the official video path's maths:
PIL resize of the uint8 frame to S x S (bicubic, aspect ratio not kept), / 255 in float64, stored as
float32, minus the ImageNet mean, divided by the std (float32).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(3, 1, 1)


class VideoError(ValueError):
    """A video that cannot be read (missing, empty, corrupt, wrong dtype or shape)."""


def frame_to_input(frame: np.ndarray, size: int) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x size x size float32 model input (official video maths)."""
    img = Image.fromarray(frame)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img) / 255.0).permute(2, 0, 1).to(torch.float32)
    return ((x - _MEAN) / _STD)[None]


def check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(f"{where}: expected an H x W x 3 uint8 RGB frame, got {frame.dtype} {frame.shape}")
    return frame


class FrameSource:
    """Random access to the frames of a video (uint8 H x W x 3 RGB), all of one size."""

    def __init__(
        self, frames: Sequence[np.ndarray] | np.ndarray | None = None, files: list[Path] | None = None
    ):
        self._frames = frames
        self._files = files
        first = self[0] if len(self) else None
        if first is None:
            raise VideoError("the video has no frames")
        self.height, self.width = first.shape[:2]

    def __len__(self) -> int:
        return len(self._files) if self._files is not None else len(self._frames)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._files is not None:
            try:
                with Image.open(self._files[i]) as im:
                    frame = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise VideoError(f"cannot read frame {self._files[i]}: {e}") from e
            where = str(self._files[i])
        else:
            frame, where = self._frames[i], f"frame {i}"
        frame = check_frame(frame, where)
        if i and frame.shape[:2] != (self.height, self.width):
            raise VideoError(
                f"{where} is {frame.shape[1]}x{frame.shape[0]}, the video is {self.width}x{self.height}"
            )
        return frame


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    # Numbered frames (00001.jpg) in numeric order, as the official loader; others by name.
    if files and all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: int(p.stem))
    return sorted(files)


def open_video(video: str | os.PathLike | np.ndarray | Sequence[np.ndarray] | FrameSource) -> FrameSource:
    """A :class:`FrameSource` for a folder of frames, a video file, an array or a sequence of frames
    (a :class:`FrameSource` is returned as it is)."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            files = _frame_files(path)
            if not files:
                raise VideoError(f"no JPEG/PNG frames in {path}")
            return FrameSource(files=files)
        if not path.is_file():
            raise VideoError(f"no such video file or folder: {path}")
        from .io import decode_video

        return FrameSource(decode_video(path))
    if isinstance(video, np.ndarray):
        if video.ndim != 4:
            raise VideoError(f"expected a T x H x W x 3 uint8 array, got shape {video.shape}")
        return FrameSource(video)
    return FrameSource(list(video))
