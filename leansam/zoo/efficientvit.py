"""EfficientViT-SAM (Zhang, Cai, Han, 2024): L0 / L1 / L2 (512 input) and XL0 / XL1 (1024 input).

The image pipeline is SAM's (PIL bilinear resize of the long side, pad bottom/right)
at the encoder size, with ``ToTensor`` + ImageNet mean/std in [0, 1] units; prompts
and the mask crop always live in the 1024 frame. The official files are trainer
checkpoints ``{"state_dict": sd}`` (a bare state_dict is accepted too).

Encoder: :class:`leansam.models.efficientvit.EfficientViTSamImageEncoder`.
"""

from __future__ import annotations

from functools import partial

from ..models.efficientvit import build_efficientvit_sam_encoder
from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import Sam
from ..registry import ModelInfo, Weights
from ..transforms import SAM_MEAN, SAM_STD, ImageTransform

_SOURCE = "https://github.com/mit-han-lab/efficientvit"
_PAPER = "EfficientViT-SAM: Accelerated Segment Anything Model Without Accuracy Loss (arXiv:2402.05008)"
_BASE = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"


def _weights(file_name: str, sha256: str | None) -> Weights:
    return Weights(
        url=_BASE + file_name,
        file_name=file_name,
        sha256=sha256,
        license="Apache-2.0",
        source=_SOURCE,
        paper=_PAPER,
        wrappers=("state_dict",),
    )


def _transform(encoder_size: int) -> ImageTransform:
    # Official: ToTensor (/255) then Normalize(mean/255, std/255).
    return ImageTransform(
        encoder_size=encoder_size,
        prompt_frame=1024,
        input_scale=1 / 255,
        mean=tuple(m / 255 for m in SAM_MEAN),
        std=tuple(s / 255 for s in SAM_STD),
    )


def build_efficientvit_sam(name: str) -> Sam:
    """The whole model of ``name`` (``efficientvit_sam_l0``, ...): its encoder + SAM's prompt encoder and decoder.

    The official factory applies eps 1e-6 to every LayerNorm of the model, so the
    mask decoder's transformer LayerNorms use 1e-6 instead of SAM's 1e-5.
    The image transform (512 or 1024 encoder input, 1024 prompt frame) is set by the registry entry.
    """
    return Sam(build_efficientvit_sam_encoder(name), PromptEncoder(), MaskDecoder(norm_eps=1e-6))


def _info(variant: str, sha256: str | None, n_params: int, description: str) -> ModelInfo:
    name = f"efficientvit_sam_{variant}"
    return ModelInfo(
        name=name,
        family="efficientvit",
        builder=partial(build_efficientvit_sam, name),
        weights=_weights(f"{name}.pt", sha256),
        transform=_transform(1024 if variant.startswith("xl") else 512),
        n_params=n_params,
        description=description,
    )


# sha256: only L0's digest is published by more than one independent source; the others are None.
# n_params: exact nn.Parameter counts of the official builders (efficientsam 1.0.0 =
# mit-han-lab/efficientvit), image encoder + SAM prompt encoder (6,220) + mask decoder (4,058,340).
MODELS = (
    _info(
        "l0",
        "c4f994b01a16d48bcf2fbbb089448cfbf58fae5811edfa8113c953b8b8cc64b8",
        34_792_784,
        "EfficientViT-SAM-L0: EfficientViT-L0 encoder at 512x512",
    ),
    _info("l1", None, 47_650_128, "EfficientViT-SAM-L1: EfficientViT-L1 encoder at 512x512"),
    _info("l2", None, 61_328_592, "EfficientViT-SAM-L2: EfficientViT-L2 encoder at 512x512"),
    _info("xl0", None, 116_957_904, "EfficientViT-SAM-XL0: EfficientViT-XL0 encoder at 1024x1024"),
    _info("xl1", None, 203_346_128, "EfficientViT-SAM-XL1: EfficientViT-XL1 encoder at 1024x1024"),
)
