"""leansam's own models: ``leansam_tiny`` (bundled, the registry default), ``leansam_nano`` (bundled,
smaller and faster), the architecture that the recipe trained between them (``leansam_nano_512``)
and a teacher.

Both bundled models are trained here, on CPU, **only on procedurally generated synthetic scenes**
(``leansam.data.synth``); docs/training.md has the recipe (``scripts/train_default.sh``) and the
held-out numbers. They need no download: for real photographs load an official checkpoint
(``leansam models``). The teacher is the same pipeline with a larger encoder (not trained yet).

Encoder: :class:`leansam.models.tiny_fpn.TinyFPNEncoder`; :func:`tiny_sam` sizes the shared prompt
encoder and mask decoder for its grid (16 x 16 at 256 px, 32 x 32 at 512 px, 128 channels).
"""

from __future__ import annotations

from torch import nn

from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import Sam
from ..models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder
from ..registry import EverythingDefaults, ModelInfo, Weights
from ..transforms import ImageTransform

#: ``leansam_tiny``: 512 encoder input, 512 prompt frame: 32 x 32 x 128 embedding, 128 x 128 low-res masks.
TINY_TRANSFORM = ImageTransform(encoder_size=512, prompt_frame=512)
#: ``leansam_nano``: 256 encoder input, 256 prompt frame: 16 x 16 x 128 embedding, 64 x 64 low-res masks.
NANO_TRANSFORM = ImageTransform(encoder_size=256, prompt_frame=256)

#: sha256 of leansam/assets/leansam_tiny.pt (printed by ``python -m leansam.train.recipe export``).
TINY_SHA256 = "e42f5272bb906362be25d1055575cb170a8f1f29d545654fd8780a6a5430215d"
#: sha256 of leansam/assets/leansam_nano.pt (the recipe's segment seg2).
NANO_SHA256 = "1eda8e73cac0c5a2f0176e51110b772aa0559c23d903954abdd0de49854bd42f"

#: Segment-everything defaults of the bundled weights: written by ``python -m leansam.train.recipe
#: calibrate-everything`` (validation split, never the held-out set) to the file named in ``source``.
TINY_EVERYTHING = EverythingDefaults(
    pred_iou_thresh=0.5,
    stability_score_thresh=0.85,
    stability_score_offset=0.5,
    box_nms_thresh=0.5,
    high_score_thresh=3.0,
    source="docs/results/everything_calibration.json (python -m leansam.train.recipe calibrate-everything)",
)
NANO_EVERYTHING = EverythingDefaults(
    pred_iou_thresh=0.5,
    stability_score_thresh=0.7,
    stability_score_offset=1.0,
    box_nms_thresh=0.5,
    high_score_thresh=0.0,
    source="docs/results/everything_calibration_nano.json (python -m leansam.train.recipe "
    "calibrate-everything --model leansam_nano --out docs/results/everything_calibration_nano.json)",
)

#: ``leansam_nano``'s pyramid: ResNet stages of 32/64/128/256 channels with 1/2/2/1 blocks.
NANO_FPN = TinyFPNConfig()
#: ``leansam_tiny``'s pyramid: ``leansam_nano``'s with more blocks in the stride-16 and stride-32
#: stages (the recipe grows seg3's weights into it with :func:`leansam.models.tiny_fpn.deepen`).
TINY_FPN = TinyFPNConfig(depths=(1, 2, 4, 3))

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
    """The default model: TinyFPN encoder (:data:`TINY_FPN`), 512 input, 32 x 32 x 128 embedding + skip features."""
    return tiny_sam(TinyFPNEncoder(TINY_FPN), grid=32, prompt_frame=512, high_res=True)


def build_leansam_nano() -> Sam:
    """The small bundled model: TinyFPN encoder (:data:`NANO_FPN`), 256 input, 16 x 16 x 128 embedding + skip features."""
    return tiny_sam(TinyFPNEncoder(NANO_FPN), high_res=True)


def build_leansam_nano_512() -> Sam:
    """``leansam_nano``'s architecture and state_dict (the 16 x 16 positional embedding is resized
    to the grid) run on 512 px input: the recipe's segment seg3 trains it."""
    return tiny_sam(TinyFPNEncoder(NANO_FPN), grid=32, prompt_frame=512, high_res=True)


def build_leansam_tiny_teacher() -> Sam:
    """A larger model of ``leansam_nano``'s pipeline (256 px), for distillation and pruning experiments (not shipped)."""
    return tiny_sam(TinyFPNEncoder(TINY_FPN_TEACHER), high_res=True)


def _bundled(file_name: str, sha256: str) -> Weights:
    return Weights(
        url=f"package://assets/{file_name}",
        file_name=file_name,
        sha256=sha256,
        license="Apache-2.0",
        source="this repository: scripts/train_default.sh (leansam.train.recipe)",
        paper="leansam docs/training.md (trained on synthetic scenes only)",
    )


MODELS = (
    ModelInfo(
        name="leansam_tiny",
        family="default",
        builder=build_leansam_tiny,
        weights=_bundled("leansam_tiny.pt", TINY_SHA256),
        transform=TINY_TRANSFORM,
        n_params=6_567_016,
        description="bundled default model trained ONLY on synthetic scenes (small ResNet + FPN, 512 px); "
        "use an official checkpoint for real photos",
        default=True,
        everything=TINY_EVERYTHING,
    ),
    ModelInfo(
        name="leansam_nano",
        family="default",
        builder=build_leansam_nano,
        weights=_bundled("leansam_nano.pt", NANO_SHA256),
        transform=NANO_TRANSFORM,
        n_params=3_614_824,
        description="bundled smaller model trained ONLY on synthetic scenes (shallower encoder, 256 px): "
        "about 4x faster than leansam_tiny, less accurate",
        everything=NANO_EVERYTHING,
    ),
    ModelInfo(
        name="leansam_nano_512",
        family="default",
        builder=build_leansam_nano_512,
        weights=None,
        transform=TINY_TRANSFORM,
        n_params=3_614_824,
        description="leansam_nano's architecture on 512 px input, trained by the recipe's segment seg3 "
        "on the way to leansam_tiny; weights not shipped",
    ),
    ModelInfo(
        name="leansam_tiny_teacher",
        family="default",
        builder=build_leansam_tiny_teacher,
        weights=None,
        transform=NANO_TRANSFORM,
        n_params=8_341_040,
        description="larger model of leansam_nano's pipeline (wider ResNet + FPN, 256 px) for distillation and "
        "pruning experiments; weights not shipped",
    ),
)
