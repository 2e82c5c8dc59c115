"""Segment Anything (Kirillov et al., 2023): ViT-B / ViT-L / ViT-H.

Encoder: :class:`leansam.models.vit.ViTImageEncoder`; prompt encoder and mask decoder: SAM's defaults.
"""

from __future__ import annotations

from ..models.sam import Sam
from ..models.vit import SAM_VIT_B, SAM_VIT_H, SAM_VIT_L, ViTConfig, ViTImageEncoder
from ..registry import ModelInfo, Weights

_SOURCE = "https://github.com/facebookresearch/segment-anything"
_PAPER = "Segment Anything (arXiv:2304.02643)"
_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"


def _weights(file_name: str, sha256: str) -> Weights:
    return Weights(
        url=_BASE + file_name,
        file_name=file_name,
        sha256=sha256,
        license="Apache-2.0",
        source=_SOURCE,
        paper=_PAPER,
    )


def build_sam_vit(cfg: ViTConfig) -> Sam:
    """A SAM model with the ViT image encoder ``cfg`` and the shared prompt encoder / mask decoder."""
    return Sam(ViTImageEncoder(cfg))


def build_sam_vit_b() -> Sam:
    """SAM ViT-B: 768 wide, 12 blocks, 1024 x 1024 input -> 256 x 64 x 64 embedding."""
    return build_sam_vit(SAM_VIT_B)


def build_sam_vit_l() -> Sam:
    """SAM ViT-L: 1024 wide, 24 blocks."""
    return build_sam_vit(SAM_VIT_L)


def build_sam_vit_h() -> Sam:
    """SAM ViT-H: 1280 wide, 32 blocks."""
    return build_sam_vit(SAM_VIT_H)


MODELS = (
    ModelInfo(
        name="sam_vit_b",
        family="sam",
        builder=build_sam_vit_b,
        weights=_weights(
            "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
        ),
        n_params=93_735_472,
        description="SAM ViT-B (the original, 1024x1024 input)",
    ),
    ModelInfo(
        name="sam_vit_l",
        family="sam",
        builder=build_sam_vit_l,
        weights=_weights(
            "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"
        ),
        n_params=312_342_832,
        description="SAM ViT-L",
    ),
    ModelInfo(
        name="sam_vit_h",
        family="sam",
        builder=build_sam_vit_h,
        weights=_weights(
            "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
        ),
        n_params=641_090_608,
        description="SAM ViT-H (the largest; the teacher of most efficient variants)",
    ),
)
