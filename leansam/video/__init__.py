"""Video tracking with the official memory of SAM 2, SAM 2.1 and EfficientTAM.

from leansam.video import VideoPredictor
"""

from .build import NotTrackableError, build_video_model, load_video_model
from .config import VIDEO_CONFIGS, VideoConfig, can_track, tracking_models
from .frames import VideoError
from .model import VideoModel
from .predictor import VideoPredictor

__all__ = [
    "VIDEO_CONFIGS",
    "NotTrackableError",
    "VideoConfig",
    "VideoError",
    "VideoModel",
    "VideoPredictor",
    "build_video_model",
    "can_track",
    "load_video_model",
    "tracking_models",
]
