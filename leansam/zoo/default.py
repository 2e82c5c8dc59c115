"""leansam's own models: ``leansam_tiny`` (bundled, the registry default), the architectures its
recipe's later segments train (``leansam_tiny_512``, ``leansam_tiny_deep_512``) and a teacher.

``leansam_tiny`` is trained here, on CPU, **only on procedurally generated synthetic scenes**
(``leansam.data.synth``); docs/training.md has the recipe (``scripts/train_default.sh``) and the
held-out numbers. It needs no download: for real photographs load an official checkpoint
(``leansam models``). The teacher is the same pipeline with a larger encoder (not trained yet).

Encoder: :class:`leansam.models.tiny_fpn.TinyFPNEncoder`; :func:`tiny_sam` sizes the shared prompt
encoder and mask decoder for its 16 x 16 x 128 grid.
"""

from __future__ import annotations

from torch import nn

from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import Sam
from ..models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder
from ..registry import EverythingDefaults, ModelInfo, Weights
from ..transforms import ImageTransform

#: 256 encoder input, 256 prompt frame: 16 x 16 x 128 embedding, 64 x 64 low-res masks.
TINY_TRANSFORM = ImageTransform(encoder_size=256, prompt_frame=256)
#: The same architecture at 512: 32 x 32 x 128 embedding, 128 x 128 low-res masks.
TINY_512_TRANSFORM = ImageTransform(encoder_size=512, prompt_frame=512)

#: sha256 of leansam/assets/leansam_tiny.pt (printed by ``python -m leansam.train.recipe export``).
TINY_SHA256 = "1eda8e73cac0c5a2f0176e51110b772aa0559c23d903954abdd0de49854bd42f"

#: Segment-everything defaults of the bundled weights: written by ``python -m leansam.train.recipe
#: calibrate-everything`` (validation split, never the held-out set) to the file named in ``source``.
TINY_EVERYTHING = EverythingDefaults(
    pred_iou_thresh=0.6,
    stability_score_thresh=0.5,
    stability_score_offset=1.0,
    box_nms_thresh=0.5,
    source="docs/results/everything_calibration.json (python -m leansam.train.recipe calibrate-everything)",
)

#: ``leansam_tiny``'s pyramid with more blocks in the stride-16 and stride-32 stages (the recipe
#: grows seg3's weights into it with :func:`leansam.models.tiny_fpn.deepen`).
TINY_FPN_DEEP = TinyFPNConfig(depths=(1, 2, 4, 3))

#: The teacher's encoder: the default model's pyramid, wider and deeper.
TINY_FPN_TEACHER = TinyFPNConfig(widths=(48, 96, 192, 384), depths=(2, 2, 2, 2), stem_width=32)


def tiny_sam(
    image_encoder: nn.Module,
    embed_dim: int = 128,
    grid: int = 16,
    prompt_frame: int = 256,
    high_res: bool = False,
) -> Sam:
    """Assembles ``image_encoder`` with the shared prompt encoder / mask decoder for a small grid.

    Args:
        image_encoder: B x 3 x S x S -> B x embed_dim x grid x grid (with ``high_res``: that and
            [B x embed_dim x 4grid x 4grid, B x embed_dim x 2grid x 2grid] skip features).
        embed_dim: width of prompt embeddings and decoder (SAM: 256).
        grid: side of the image-embedding grid (SAM: 64); low-res masks are 4 * grid.
        prompt_frame: side of the prompt frame (SAM: 1024 = 16 * 64).
        high_res: the decoder upscales with SAM 2's high-resolution skip features.
    """
    pe = PromptEncoder(
        embed_dim=embed_dim, image_embedding_size=(grid, grid), input_image_size=(prompt_frame,) * 2
    )
    if hasattr(image_encoder, "init_pos_embed"):
        image_encoder.init_pos_embed(pe.get_dense_pe())
    return Sam(image_encoder, pe, MaskDecoder(transformer_dim=embed_dim, use_high_res_features=high_res))


def build_leansam_tiny() -> Sam:
    """The bundled default model: TinyFPN encoder, 256 input, 16 x 16 x 128 embedding + skip features."""
    return tiny_sam(TinyFPNEncoder(TinyFPNConfig()), high_res=True)


def build_leansam_tiny_512() -> Sam:
    """``leansam_tiny``'s architecture and state_dict (the 16 x 16 positional embedding is resized
    to the grid) run on 512 px input, for masks that follow boundaries at 4-pixel resolution there."""
    return tiny_sam(TinyFPNEncoder(TinyFPNConfig()), grid=32, prompt_frame=512, high_res=True)


def build_leansam_tiny_deep_512() -> Sam:
    """``leansam_tiny_512`` with a deeper encoder (:data:`TINY_FPN_DEEP`): 512 px, 32 x 32 x 128 embedding."""
    return tiny_sam(TinyFPNEncoder(TINY_FPN_DEEP), grid=32, prompt_frame=512, high_res=True)


def build_leansam_tiny_teacher() -> Sam:
    """A larger model of the same pipeline, for distillation and pruning experiments (not shipped)."""
    return tiny_sam(TinyFPNEncoder(TINY_FPN_TEACHER), high_res=True)


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
            paper="leansam docs/training.md (trained on synthetic scenes only)",
        ),
        transform=TINY_TRANSFORM,
        n_params=3_614_824,
        description="bundled default model trained ONLY on synthetic scenes (small ResNet + FPN, 256 px); "
        "use an official checkpoint for real photos",
        default=True,
        everything=TINY_EVERYTHING,
    ),
    ModelInfo(
        name="leansam_tiny_512",
        family="default",
        builder=build_leansam_tiny_512,
        weights=None,
        transform=TINY_512_TRANSFORM,
        n_params=3_614_824,
        description="leansam_tiny's architecture on 512 px input (128 x 128 low-res masks), trained by the "
        "recipe's segment seg3; weights not shipped yet",
    ),
    ModelInfo(
        name="leansam_tiny_deep_512",
        family="default",
        builder=build_leansam_tiny_deep_512,
        weights=None,
        transform=TINY_512_TRANSFORM,
        n_params=6_567_016,
        description="leansam_tiny_512 with 4 + 3 blocks in the encoder's last two stages, trained by the recipe's "
        "segment seg4 from seg3's weights; weights not shipped yet",
    ),
    ModelInfo(
        name="leansam_tiny_teacher",
        family="default",
        builder=build_leansam_tiny_teacher,
        weights=None,
        transform=TINY_TRANSFORM,
        n_params=8_341_040,
        description="larger model of leansam_tiny's pipeline (wider ResNet + FPN, 256 px) for distillation and "
        "pruning experiments; weights not shipped",
    ),
)
