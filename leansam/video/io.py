"""Video files with PyAV (optional: ``pip install 'leansam[video]'``), and tracks as COCO RLE."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .frames import VideoError

_HINT = "reading or writing video files needs PyAV: pip install 'leansam[video]' (or pip install av)"


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ImportError(_HINT) from e
    return av


def iter_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decodes a video file lazily: H x W x 3 uint8 RGB frames in order."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise VideoError(f"cannot decode video {path}: {e}") from e


def decode_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of a video file (uint8 RGB); :class:`VideoError` when it has none."""
    frames = list(iter_video(path))
    if not frames:
        raise VideoError(f"no frames could be decoded from {path}")
    return frames


def _stream_header(path: str | os.PathLike, field: str) -> Any:
    """A field of a video file's first video stream (``average_rate``, ``frames``), None if unreadable."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            return getattr(container.streams.video[0], field)
    except (av.FFmpegError, IndexError):
        return None


def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    """Average frame rate of a video file (``default`` for folders and unknown rates)."""
    rate = None if Path(path).is_dir() else _stream_header(path, "average_rate")
    return float(rate) if rate else default


def video_frame_count(path: str | os.PathLike) -> int | None:
    """Number of frames a video file's header announces (None when it does not say)."""
    n = _stream_header(path, "frames")
    return int(n) if n else None


class OverlayWriter:
    """Writes frames with coloured masks blended in as an H.264 (yuv420p) mp4.

    Use as a context manager; ``add(frame H x W x 3 uint8, masks n x H x W bool)``.
    """

    COLOURS = np.array(
        [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]]
    )

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        self.path, self.fps = Path(path), fps
        self._container = self._stream = None

    def __enter__(self) -> OverlayWriter:
        av = _av()
        self._container = av.open(str(self.path), mode="w")
        return self

    def add(self, frame: np.ndarray, masks: np.ndarray) -> None:
        out = frame.astype(np.float32)
        for i, m in enumerate(masks):
            out[m] = 0.5 * out[m] + 0.5 * self.COLOURS[i % len(self.COLOURS)]
        h, w = frame.shape[:2]
        if self._stream is None:
            from fractions import Fraction

            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1000)
            )
            self._stream.width, self._stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
            self._stream.pix_fmt = "yuv420p"
        img = out.astype(np.uint8)[: self._stream.height, : self._stream.width]
        av = _av()
        for packet in self._stream.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        ):
            self._container.mux(packet)

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()


def write_track_line(f: IO[str], frame_idx: int, obj_ids: Iterable, masks: np.ndarray) -> None:
    """One JSON line: {"frame": i, "objects": [{"id", "segmentation" (COCO RLE), "area", "bbox"}]}."""
    from pycocotools import mask as mask_utils

    objects = []
    for obj_id, m in zip(obj_ids, masks):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(m)
        bbox = (
            [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            if len(xs)
            else [0, 0, 0, 0]
        )
        objects.append({"id": obj_id, "segmentation": rle, "area": int(m.sum()), "bbox": bbox})
    f.write(json.dumps({"frame": frame_idx, "objects": objects}) + "\n")
