"""leansam's own models: ``leansam_tiny`` (bundled, the registry default) and its teacher.

Both were trained here, on CPU, **only on procedurally generated synthetic shapes**
(``leansam.data.synth``, the ``TINY_SYNTH`` settings); docs/training.md has the recipe
(``scripts/train_default.sh``) and the held-out numbers. They are demo / test models that need
no download: for real photographs load an official checkpoint (``leansam models``).

Encoder: :class:`leansam.models.resnet.ResNetEncoder` (``TINY_STUDENT`` / ``TINY_TEACHER``);
:func:`tiny_sam` sizes the shared prompt encoder and mask decoder for its 16 x 16 x 128 grid.
"""

from __future__ import annotations

from torch import nn

from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.resnet import TINY_STUDENT, TINY_TEACHER, ResNetEncoder
from ..models.sam import Sam
from ..registry import ModelInfo, Weights
from ..transforms import ImageTransform

#: 256 encoder input, 256 prompt frame: 16 x 16 x 128 embedding, 64 x 64 low-res masks.
TINY_TRANSFORM = ImageTransform(encoder_size=256, prompt_frame=256)

#: sha256 of leansam/assets/leansam_tiny.pt (printed by ``python -m leansam.train.recipe export``).
TINY_SHA256 = "ad193ccb3f0941d09dd203100aa2471a1b83cec7f4b85dbd23b7d1f2acd8a2a2"


def tiny_sam(image_encoder: nn.Module, embed_dim: int = 128, grid: int = 16, prompt_frame: int = 256) -> Sam:
    """Assembles ``image_encoder`` with the shared prompt encoder / mask decoder for a small grid.

    Args:
        image_encoder: B x 3 x S x S -> B x embed_dim x grid x grid.
        embed_dim: width of prompt embeddings and decoder (SAM: 256).
        grid: side of the image-embedding grid (SAM: 64); low-res masks are 4 * grid.
        prompt_frame: side of the prompt frame (SAM: 1024 = 16 * 64).
    """
    pe = PromptEncoder(
        embed_dim=embed_dim, image_embedding_size=(grid, grid), input_image_size=(prompt_frame,) * 2
    )
    return Sam(image_encoder, pe, MaskDecoder(transformer_dim=embed_dim))


def build_leansam_tiny() -> Sam:
    """The bundled default model: TINY_STUDENT ResNet encoder, 256 input, 16 x 16 x 128 embedding."""
    return tiny_sam(ResNetEncoder(TINY_STUDENT))


def build_leansam_tiny_teacher() -> Sam:
    """The teacher the default model was distilled from (half-width ResNet-18, same pipeline)."""
    return tiny_sam(ResNetEncoder(TINY_TEACHER))


MODELS = (
    ModelInfo(
        name="leansam_tiny",
        family="default",
        builder=build_leansam_tiny,
        weights=Weights(
            url="package://assets/leansam_tiny.pt",
            file_name="leansam_tiny.pt",
            sha256=TINY_SHA256,
            license="Apache-2.0",
            source="this repository: scripts/train_default.sh (leansam.train.recipe)",
            paper="leansam docs/training.md (distilled from leansam_tiny_teacher; synthetic shapes only)",
        ),
        transform=TINY_TRANSFORM,
        n_params=2_159_408,
        description="bundled demo model trained ONLY on synthetic shapes (ResNet-style student, 256 px); "
        "use an official checkpoint for real photos",
        default=True,
    ),
    ModelInfo(
        name="leansam_tiny_teacher",
        family="default",
        builder=build_leansam_tiny_teacher,
        weights=None,
        transform=TINY_TRANSFORM,
        n_params=4_715_360,
        description="teacher of leansam_tiny (half-width ResNet-18, 256 px), trained from scratch on synthetic "
        "shapes; weights not shipped (scripts/train_default.sh makes them)",
    ),
)
