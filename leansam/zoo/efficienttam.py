"""EfficientTAM (Xiong et al., 2024) in image mode: ViT-Ti and ViT-S, in the SAM 2 framework.

EfficientTAM is SAM 2 with the Hiera trunk replaced by a plain ViT
(``yformer/EfficientTAM``, ``efficient_track_anything/modeling/backbones/vitdet.py`` and
``configs/efficienttam/efficienttam_{ti,s}.yaml``):

* trunk ``vitdet.ViT``: patch 16, 12 blocks, windows of 14 in blocks 0, 1, 3, 4, 6, 7, 9, 10
  (zero-padded 64 -> 70 as in segment-anything) and global attention in 2, 5, 8, 11, no relative
  position, LayerNorm eps 1e-6, qkv bias, exact GELU, absolute position embedding at the
  224-pixel pre-training grid with a class slot, resized bicubically. This is
  :class:`ViTImageEncoder` with ``pos_embed_cls=True``; only key names differ
  (``trunk.*``, ``mlp.layers.0/1``).
* neck ``ViTDetNeck`` (one level, ``neck_norm: LN``): conv1x1 (no bias) -> LayerNorm2d ->
  conv3x3 (no bias) -> LayerNorm2d, i.e. SAM's neck under the keys
  ``neck.convs.0.{conv_1x1,norm_0,conv_3x3,norm_1}``. Its sine position encoding only feeds
  the video memory and has no parameters.
* no high-resolution features (``use_high_res_features_in_sam: false``); ``no_mem_embed`` is
  added to the image embedding (``directly_add_no_mem_embed: true``).
* SAM 2 prompt encoder and decoder (object-score token with MLP head, sigmoid IoU, dynamic
  multimask fallback), SAM 2 image pipeline and prompt layout.

The official files are ``{"model": state_dict}`` including the video/memory modules; the
filter keeps the image-mode keys and sets the memory keys aside (they are reported by the loader).

``no_mem_embed`` is carried the way the SAM 2 (Hiera) encoder carries it: as a parameter of the
image encoder (:class:`leansam.models.vit.EfficientTamImageEncoder`), filled from the top-level
checkpoint key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import Sam
from ..models.vit import EfficientTamImageEncoder, ViTConfig
from ..registry import ModelInfo, Weights
from ._rename import compile_rules, rename_keys
from .hiera import SAM2_PROMPT_STYLE, SAM2_TRANSFORM
from .hiera import filter_fn as sam2_filter_fn

_SOURCE = "https://github.com/yformer/EfficientTAM"
_PAPER = "Efficient Track Anything (arXiv:2411.18933)"
_BASE = "https://huggingface.co/yunyangx/efficient-track-anything/resolve/main/"


def _efficienttam_vit(embed_dim: int, num_heads: int) -> ViTConfig:
    return ViTConfig(
        embed_dim=embed_dim,
        depth=12,
        num_heads=num_heads,
        mlp_dim=4 * embed_dim,
        qkv_bias=True,
        norm_eps=1e-6,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),  # window_block_indexes = the other eight
        use_rel_pos=False,
        pos_embed_cls=True,
        pretrain_grid=14,  # 224 / 16
        neck_eps=1e-6,
    )


EFFICIENTTAM_VIT_T = _efficienttam_vit(192, 3)
EFFICIENTTAM_VIT_S = _efficienttam_vit(384, 6)


def build_efficienttam(cfg: ViTConfig) -> Sam:
    """EfficientTAM in image mode with the ViT trunk ``cfg`` and SAM 2's decoder options."""
    decoder = MaskDecoder(
        iou_sigmoid=True,
        pred_obj_score=True,
        use_high_res_features=False,
        dynamic_multimask_via_stability=True,
    )
    return Sam(EfficientTamImageEncoder(cfg), PromptEncoder(), decoder)


def build_efficienttam_ti() -> Sam:
    """EfficientTAM-Ti: ViT-Ti trunk (192 wide, 3 heads)."""
    return build_efficienttam(EFFICIENTTAM_VIT_T)


def build_efficienttam_s() -> Sam:
    """EfficientTAM-S: ViT-S trunk (384 wide, 6 heads)."""
    return build_efficienttam(EFFICIENTTAM_VIT_S)


_ENCODER_RULES = compile_rules(
    (
        (r"^image_encoder\.trunk\.(blocks\.\d+\.mlp\.)layers\.0\.", r"image_encoder.\1lin1."),
        (r"^image_encoder\.trunk\.(blocks\.\d+\.mlp\.)layers\.1\.", r"image_encoder.\1lin2."),
        (r"^image_encoder\.trunk\.", "image_encoder."),
        (r"^image_encoder\.neck\.convs\.0\.conv_1x1\.", "image_encoder.neck.0."),
        (r"^image_encoder\.neck\.convs\.0\.norm_0\.", "image_encoder.neck.1."),
        (r"^image_encoder\.neck\.convs\.0\.conv_3x3\.", "image_encoder.neck.2."),
        (r"^image_encoder\.neck\.convs\.0\.norm_1\.", "image_encoder.neck.3."),
    )
)


def filter_fn(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official EfficientTAM state_dict -> (leansam keys, memory-module keys set aside).

    The SAM 2 framework keys (``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``no_mem_embed``,
    the memory modules) are handled by the SAM 2 filter (:func:`leansam.zoo.hiera.filter_fn`);
    the ViT trunk and neck keys are then renamed. Unrecognised keys are left in.
    """
    mapped, set_aside = sam2_filter_fn(state)
    return rename_keys(mapped, _ENCODER_RULES), set_aside


def _info(size: str, builder: Callable[[], Sam], sha256: str, n_params: int, description: str) -> ModelInfo:
    file_name = f"efficienttam_{size}.pt"
    return ModelInfo(
        name=f"efficienttam_{size}",
        family="efficienttam",
        builder=builder,
        weights=Weights(
            url=_BASE + file_name,
            file_name=file_name,
            sha256=sha256,
            license="Apache-2.0",
            source=_SOURCE,
            paper=_PAPER,
            wrappers=("model",),
        ),
        transform=SAM2_TRANSFORM,
        prompt_style=SAM2_PROMPT_STYLE,
        checkpoint_filter=filter_fn,
        n_params=n_params,
        description=description,
    )


# sha256: each digest is published by two independent public projects (find_string):
#   ti: acbb17b2...3175fa7d, s: 2b572be3...e63c89cd (HF yunyangx/efficient-track-anything files).
# n_params: nn.Parameters of the official image-mode model (image_encoder + sam_prompt_encoder +
# sam_mask_decoder + no_mem_embed) built from configs/efficienttam/efficienttam_{ti,s}.yaml
# (yformer/EfficientTAM @abcd061); ti also = the fixture manifest's image-mode float tensors - 256 (PE buffer).
MODELS = (
    _info(
        "ti",
        build_efficienttam_ti,
        "acbb17b28cca1f860acee09c9ecb6efdb732080dc7a85a07292c31813175fa7d",
        10_360_753,
        "EfficientTAM-Ti (image mode): ViT-Ti encoder in the SAM 2 framework",
    ),
    _info(
        "s",
        build_efficienttam_s,
        "2b572be30d9e96ee29c8d785fe157c6b079ede7d56fbc8a3671d4120e63c89cd",
        26_550_577,
        "EfficientTAM-S (image mode): ViT-S encoder in the SAM 2 framework",
    ),
)
