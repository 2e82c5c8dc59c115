"""leansam's own models: ``leansam_tiny`` (bundled, the registry default) and its teacher.

``leansam_tiny`` is trained here, on CPU, **only on procedurally generated synthetic scenes**
(``leansam.data.synth``); docs/training.md has the recipe (``scripts/train_default.sh``) and the
held-out numbers. It needs no download: for real photographs load an official checkpoint
(``leansam models``). The teacher is the same pipeline with a larger encoder (not trained yet).
"""

from __future__ import annotations

from ..registry import ModelInfo, Weights
from ..transforms import ImageTransform

#: 256 encoder input, 256 prompt frame: 16 x 16 x 128 embedding, 64 x 64 low-res masks.
TINY_TRANSFORM = ImageTransform(encoder_size=256, prompt_frame=256)

#: sha256 of leansam/assets/leansam_tiny.pt (printed by ``python -m leansam.train.recipe export``).
TINY_SHA256 = "ad193ccb3f0941d09dd203100aa2471a1b83cec7f4b85dbd23b7d1f2acd8a2a2"

N_PARAMS_TINY = 3_614_824
N_PARAMS_TEACHER = 8_341_040

MODELS = (
    ModelInfo(
        name="leansam_tiny",
        family="default",
        builder="leansam.train.encoders:build_leansam_tiny",
        weights=Weights(
            url="package://assets/leansam_tiny.pt",
            file_name="leansam_tiny.pt",
            sha256=TINY_SHA256,
            license="Apache-2.0",
            source="this repository: scripts/train_default.sh (leansam.train.recipe)",
            paper="leansam docs/training.md (trained on synthetic scenes only)",
        ),
        transform=TINY_TRANSFORM,
        n_params=N_PARAMS_TINY,
        description="bundled default model trained ONLY on synthetic scenes (small ResNet + FPN, 256 px); "
        "use an official checkpoint for real photos",
        default=True,
    ),
    ModelInfo(
        name="leansam_tiny_teacher",
        family="default",
        builder="leansam.train.encoders:build_leansam_tiny_teacher",
        weights=None,
        transform=TINY_TRANSFORM,
        n_params=N_PARAMS_TEACHER,
        description="larger model of leansam_tiny's pipeline (wider ResNet + FPN, 256 px) for distillation and "
        "pruning experiments; weights not shipped",
    ),
)
