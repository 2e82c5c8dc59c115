"""Which registry models can track, and the video options of their official configs.

Sources: ``sam2/configs/sam2/sam2_hiera_*.yaml`` and ``sam2/configs/sam2.1/sam2.1_hiera_*.yaml``
(facebookresearch/sam2 @2b90b9f = PyPI sam2 1.1.0), ``configs/efficienttam/efficienttam_*.yaml``
(yformer/EfficientTAM @abcd061). Every size of a family shares the same video options; SAM 2.1
adds temporal encodings of the object pointers and a learned "no object" memory vector; the
EfficientTAM ``_1`` / ``_2`` configs swap the memory cross-attention for the pooled one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import CrossAttentionKind


@dataclass(frozen=True)
class VideoConfig:
    """Video options of one release (the values every official config shares are defaults).

    Attributes:
        image_size: side of the square model input (1024; 512 for the ``_512x512`` releases).
        num_maskmem: memory slots (conditioning frames + the last ``num_maskmem - 1`` frames).
        max_obj_ptrs: object pointers the memory attention reads at most.
        tpos_obj_ptrs: SAM 2.1: sine temporal encoding of each pointer's frame offset, projected by
            ``obj_ptr_tpos_proj`` (signed offsets); False: zero position for pointers.
        no_obj_embed_spatial: SAM 2.1: a learned vector added to the memory of frames without the object.
        cross_attention: ``rope`` or EfficientTAM's pooled variants (``pooled1``, ``pooled2``).
    """

    image_size: int = 1024
    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    tpos_obj_ptrs: bool = False
    no_obj_embed_spatial: bool = False
    cross_attention: CrossAttentionKind = "rope"
    hidden_dim: int = 256
    mem_dim: int = 64


_SAM21 = VideoConfig(tpos_obj_ptrs=True, no_obj_embed_spatial=True)
_SIZES = ("tiny", "small", "base_plus", "large")

VIDEO_CONFIGS: dict[str, VideoConfig] = {
    **{f"sam2_hiera_{s}": VideoConfig() for s in _SIZES},
    **{f"sam2.1_hiera_{s}": _SAM21 for s in _SIZES},
    **{f"efficienttam_{s}": VideoConfig() for s in ("ti", "s")},
    **{f"efficienttam_{s}_512x512": VideoConfig(image_size=512) for s in ("ti", "s")},
    **{f"efficienttam_{s}_1": VideoConfig(cross_attention="pooled1") for s in ("ti", "s")},
    **{f"efficienttam_{s}_2": VideoConfig(cross_attention="pooled2") for s in ("ti", "s")},
}


def can_track(name: str) -> bool:
    """Whether the registry model ``name`` has the official video memory (SAM 2, SAM 2.1, EfficientTAM)."""
    return name in VIDEO_CONFIGS


def tracking_models() -> list[str]:
    """Sorted names of the models that can track."""
    return sorted(VIDEO_CONFIGS)
