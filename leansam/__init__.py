"""leansam: every efficient Segment Anything variant behind one fast API.

    import leansam
    model = leansam.build_model("sam_vit_b", checkpoint="sam_vit_b_01ec64.pth")
    predictor = leansam.SamPredictor(model)
    model = leansam.build_model()      # the bundled default model, leansam.DEFAULT_MODEL

Public names are imported lazily so that ``import leansam`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SamPredictor": "leansam.predictor",
    "Sam": "leansam.models.sam",
    "build_model": "leansam.api",
    "load_model": "leansam.checkpoints",
    "list_models": "leansam.registry",
    "get_model_info": "leansam.registry",
    "CheckpointError": "leansam.checkpoints",
    "AutomaticMaskGenerator": "leansam.everything",
    "VideoPredictor": "leansam.video",
    "StreamTracker": "leansam.video.stream",
}

__all__ = [
    "DEFAULT_MODEL",
    "AutomaticMaskGenerator",
    "CheckpointError",
    "Sam",
    "SamPredictor",
    "StreamTracker",
    "VideoPredictor",
    "__version__",
    "build_model",
    "get_model_info",
    "list_models",
    "load_model",
]

if TYPE_CHECKING:
    from .api import build_model
    from .checkpoints import CheckpointError, load_model
    from .models.sam import Sam
    from .predictor import SamPredictor
    from .registry import get_model_info, list_models
    from .video import VideoPredictor
    from .video.stream import StreamTracker


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_MODEL":  # the registry's default: leansam's bundled model
        from .registry import default_model_name

        return default_model_name()
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leansam' has no attribute {name!r}")
