"""EfficientTAM's other video releases: 512 x 512 input, and the pooled memory cross-attention.

``configs/efficienttam/efficienttam_{ti,s}_{512x512,1,2}.yaml`` (yformer/EfficientTAM @abcd061) differ
from ``efficienttam_{ti,s}.yaml`` only in ``image_size: 512`` (with RoPE ``feat_sizes`` 32 x 32) or in
the class of the memory cross-attention (``EfficientRoPEAttention1`` / ``2``); the image-mode modules
and their parameters are those of ``efficienttam_ti`` / ``_s`` (so are ``n_params``). The memory side
lives in :mod:`leansam.video`. Upstream publishes no hashes for these files.
"""

from __future__ import annotations

import dataclasses

from ..models.prompt_encoder import PromptEncoder
from ..models.sam import Sam
from ..registry import ModelInfo, Weights
from .efficienttam import (
    _BASE,
    _PAPER,
    _SOURCE,
    EFFICIENTTAM_VIT_S,
    EFFICIENTTAM_VIT_T,
    build_efficienttam,
    build_efficienttam_s,
    build_efficienttam_ti,
    filter_fn,
)
from .hiera import SAM2_PROMPT_STYLE, SAM2_TRANSFORM

_N_PARAMS = {"ti": 10_360_753, "s": 26_550_577}  # = efficienttam_ti / efficienttam_s
_SAM2_512 = dataclasses.replace(SAM2_TRANSFORM, encoder_size=512, prompt_frame=512)


def _at_512(model: Sam) -> Sam:
    """The same modules with the prompt encoder of a 512 input (32 x 32 embedding grid); no new parameters."""
    model.prompt_encoder = PromptEncoder(image_embedding_size=(32, 32), input_image_size=(512, 512))
    return model


def build_efficienttam_ti_512x512() -> Sam:
    """EfficientTAM-Ti at 512 x 512 input."""
    return _at_512(build_efficienttam(EFFICIENTTAM_VIT_T))


def build_efficienttam_s_512x512() -> Sam:
    """EfficientTAM-S at 512 x 512 input."""
    return _at_512(build_efficienttam(EFFICIENTTAM_VIT_S))


_BUILDERS = {
    "efficienttam_ti": build_efficienttam_ti,
    "efficienttam_s": build_efficienttam_s,
    "efficienttam_ti_512x512": build_efficienttam_ti_512x512,
    "efficienttam_s_512x512": build_efficienttam_s_512x512,
}


def _info(size: str, release: str) -> ModelInfo:
    name = f"efficienttam_{size}_{release}"
    at_512 = release == "512x512"
    return ModelInfo(
        name=name,
        family="efficienttam_video",
        builder=_BUILDERS[name] if at_512 else _BUILDERS[f"efficienttam_{size}"],
        weights=Weights(
            url=_BASE + f"{name}.pt",
            file_name=f"{name}.pt",
            sha256=None,
            license="Apache-2.0",
            source=_SOURCE,
            paper=_PAPER,
            wrappers=("model",),
        ),
        transform=_SAM2_512 if at_512 else SAM2_TRANSFORM,
        prompt_style=SAM2_PROMPT_STYLE,
        checkpoint_filter=filter_fn,
        n_params=_N_PARAMS[size],
        description=f"EfficientTAM-{size.capitalize()} {release} (video release; image mode here, tracking in leansam.video)",
    )


MODELS = tuple(_info(size, release) for size in ("ti", "s") for release in ("512x512", "1", "2"))
