"""leansam's own models: ``leansam_tiny`` (bundled, the registry default) and its teacher.

Both were trained here, on CPU, **only on procedurally generated synthetic shapes**
(``leansam.data.synth``); see docs/training.md for the recipe and held-out numbers. They are
demo / test models: for real photographs load an official checkpoint (``leansam models``).
"""

from __future__ import annotations

from ..registry import ModelInfo
from ..transforms import ImageTransform

#: 256 encoder input, 256 prompt frame: 16 x 16 embedding, 64 x 64 low-res masks.
TINY_TRANSFORM = ImageTransform(encoder_size=256, prompt_frame=256)

MODELS = (
    ModelInfo(
        name="leansam_tiny",
        family="default",
        builder="leansam.train.encoders:build_leansam_tiny",
        weights=None,
        transform=TINY_TRANSFORM,
        description="leansam's bundled demo model (synthetic shapes only): ResNet-style student distilled from leansam_tiny_teacher",
    ),
    ModelInfo(
        name="leansam_tiny_teacher",
        family="default",
        builder="leansam.train.encoders:build_leansam_tiny_teacher",
        weights=None,
        transform=TINY_TRANSFORM,
        description="teacher of leansam_tiny (half-width ResNet-18), trained from scratch on synthetic shapes",
    ),
)
