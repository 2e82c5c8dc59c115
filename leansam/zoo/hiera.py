"""SAM 2 (Ravi et al., 2024) and SAM 2.1 in image mode: Hiera tiny / small / base_plus / large.

SAM 2 and SAM 2.1 share the image-mode architecture (their configs differ only in
video-memory options; SAM 2.1 files carry two more memory tensors,
``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj``). The official files are
``{"model": state_dict}`` with the video/memory modules included; the checkpoint
filter renames the image-mode keys to leansam's and sets the memory keys aside.

Encoder: :class:`leansam.models.hiera.HieraImageEncoder`.
"""

from __future__ import annotations

import re
from functools import partial

import torch

from ..models.hiera import build_hiera_image_encoder
from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import PromptStyle, Sam
from ..registry import ModelInfo, Weights
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

_SOURCE = "https://github.com/facebookresearch/sam2"
_PAPER = "SAM 2: Segment Anything in Images and Videos (arXiv:2408.00714)"
_URL = {
    "sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/",
    "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/",
}

# SAM2Transforms: [0, 1] pixels, antialiased bilinear squash to 1024 x 1024, ImageNet
# normalisation; masks are upsampled straight to the original size (nothing to crop), and the
# predictor returns low-res logits clamped to [-32, 32].
SAM2_TRANSFORM = ImageTransform(
    resize="square",
    interpolation="bilinear_antialias",
    input_scale=1.0 / 255.0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    upsample="bilinear",
    crop=False,
    low_res_clamp=32.0,
)

# A box is passed as two corner points placed before the clicks, and the prompt encoder is
# called with boxes=None, so one padding point is appended in every case.
SAM2_PROMPT_STYLE = PromptStyle(box_first=True, pad="always")

# Top-level names of the video/memory modules (unused in image mode).
_MEMORY_KEYS = (
    "memory_attention",
    "memory_encoder",
    "mask_downsample",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",  # SAM 2.1
    "no_obj_embed_spatial",  # SAM 2.1
)
# SAM 2's two-way transformer names its MLP ``mlp.layers.{0,1}``; the shared decoder uses ``lin1/lin2``.
_DECODER_MLP = re.compile(r"^(transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")


def filter_fn(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official SAM 2 / 2.1 state_dict -> (leansam keys, memory-module keys set aside).

    ``image_encoder.*`` is kept as is; the top-level ``no_mem_embed`` goes to
    ``image_encoder.no_mem_embed`` (the encoder adds it to the image embedding);
    ``sam_prompt_encoder.*`` / ``sam_mask_decoder.*`` become ``prompt_encoder.*`` /
    ``mask_decoder.*``. Keys it does not recognise are left in for the strict loader to report.
    """
    out: dict[str, torch.Tensor] = {}
    set_aside: list[str] = []
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head in _MEMORY_KEYS:
            set_aside.append(key)
        elif key == "no_mem_embed":
            out["image_encoder.no_mem_embed"] = value
        elif head == "sam_prompt_encoder":
            out["prompt_encoder." + key.split(".", 1)[1]] = value
        elif head == "sam_mask_decoder":
            rest = _DECODER_MLP.sub(
                lambda m: m.group(1) + ("lin1." if m.group(2) == "0" else "lin2."), key.split(".", 1)[1]
            )
            out["mask_decoder." + rest] = value
        else:
            out[key] = value
    return out, set_aside


def build_sam2_hiera(size: str) -> Sam:
    """SAM 2 / SAM 2.1 in image mode: Hiera ``size`` encoder + the shared prompt encoder and SAM 2-style decoder.

    The decoder options are those of the official configs: an object-score token with an MLP head,
    sigmoid IoU, high-res skip features (conv_s0/conv_s1), and the dynamic multimask fallback
    (delta 0.05, threshold 0.98) for ``multimask_output=False``.
    """
    decoder = MaskDecoder(
        iou_sigmoid=True,
        pred_obj_score=True,
        use_high_res_features=True,
        dynamic_multimask_via_stability=True,
    )
    return Sam(build_hiera_image_encoder(size), PromptEncoder(), decoder)


# Exact parameter counts of the image-mode model (image_encoder + sam_prompt_encoder +
# sam_mask_decoder + no_mem_embed; nn.Parameters only). Source: the official modules (PyPI sam2
# 1.1.0 = facebookresearch/sam2 @2b90b9f) built from sam2/configs/sam2{,.1}/*_hiera_{t,s,b+,l}.yaml;
# identical for SAM 2 and SAM 2.1. Tiny is also derived from the fixture manifest in the tests.
_N_PARAMS = {"tiny": 31_440_721, "small": 38_538_577, "base_plus": 73_328_401, "large": 216_924_865}
_SIZE_NOTE = {"tiny": "Hiera-T", "small": "Hiera-S", "base_plus": "Hiera-B+", "large": "Hiera-L"}


def _entry(version: str, size: str) -> ModelInfo:
    file_name = f"{version}_hiera_{size}.pt"
    return ModelInfo(
        name=f"{version}_hiera_{size}",
        family="hiera",
        builder=partial(build_sam2_hiera, size),
        weights=Weights(
            url=_URL[version] + file_name,
            file_name=file_name,
            sha256=None,  # upstream publishes no hashes; none confirmed by two public sources
            license="Apache-2.0",
            source=_SOURCE,
            paper=_PAPER,
            wrappers=("model",),
        ),
        transform=SAM2_TRANSFORM,
        prompt_style=SAM2_PROMPT_STYLE,
        checkpoint_filter=filter_fn,
        n_params=_N_PARAMS[size],
        description=f"{'SAM 2.1' if version == 'sam2.1' else 'SAM 2'} {_SIZE_NOTE[size]} (image mode)",
    )


MODELS = tuple(_entry(v, s) for v in ("sam2", "sam2.1") for s in ("tiny", "small", "base_plus", "large"))
