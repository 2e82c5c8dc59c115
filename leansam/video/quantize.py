"""int8 quantization of a tracking model's image encoder, calibrated on video frames.

    model = load_video_model("efficienttam_ti")
    report = quantize_video_(model, TinySamPTQConfig(num_calib=8), "clip.mp4")
    save_quantized(model, "etam_int8")            # leansam.compress.save_quantized
    VideoPredictor(load_quantized("etam_int8"))   # or: leansam track --checkpoint etam_int8

The recipe is image mode's (:func:`leansam.compress.quantize_`, TinySAM's): the image encoder's
convolutions and linears run as int8 kernels; the memory attention, memory encoder, prompt
encoder and mask decoder stay fp32. Calibration frames are spread evenly over the video and made
into encoder input exactly as tracking makes them (:func:`~leansam.video.frames.frame_to_input`:
the video path's square resize, not image mode's longest-side resize and padding). Check the
result with ``leansam compare --video`` (:mod:`leansam.video.compare`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from ..compress.calib import CalibrationSet
from ..compress.config import QuantConfig
from ..compress.ptq import QuantReport, quantize_
from ..io import InputError
from .frames import FrameSource, frame_to_input, open_video
from .model import VideoModel

__all__ = ["calibration_frames", "quantize_video_"]


def calibration_frames(
    video: str | os.PathLike | np.ndarray | Sequence[np.ndarray] | FrameSource, count: int, size: int
) -> CalibrationSet:
    """``count`` frames spread evenly over ``video`` (first and last included), with the video
    path's preprocessing to ``size`` x ``size``."""
    frames = open_video(video)
    n = len(frames)
    picks = sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()))
    return CalibrationSet(
        [frames[i] for i in picks], [f"frame {i}" for i in picks], lambda f: frame_to_input(f, size)
    )


def quantize_video_(
    model: VideoModel,
    config: QuantConfig,
    video: str | os.PathLike | np.ndarray | Sequence[np.ndarray] | FrameSource | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> QuantReport:
    """Quantizes ``model``'s image encoder in place (``config``: a
    :class:`~leansam.compress.TinySamPTQConfig`); returns the report.

    Args:
        model: the fp32 tracking model, on the CPU.
        config: the recipe; ``config.num_calib`` frames are used.
        video: calibration video (file, folder of frames, T x H x W x 3 uint8 array or frames);
            None uses ``config.calib_images``.
        log: optional ``callable(str)`` for progress lines.

    Raises:
        leansam.io.InputError: no calibration video, or one that cannot be read.
        leansam.video.VideoError: an empty or corrupt video.
    """
    source = video if video is not None else getattr(config, "calib_images", None)
    if source is None:
        raise InputError("no calibration video: pass one (or set calib_images / --calib)")
    cal = calibration_frames(source, getattr(config, "num_calib", 8), model.cfg.image_size)
    return quantize_(model.sam, config, cal, log=log)
