"""EfficientSAM (Xiong et al., 2023): ViT-Ti and ViT-S image encoders, SAMI-pretrained.

Architecture, as in ``yformer/EfficientSAM`` (``efficient_sam/*.py``):

* Image encoder: a plain ViT (patch 16, 12 blocks, global attention everywhere, no
  relative position, LayerNorm eps 1e-6, qkv bias, exact GELU) whose absolute position
  embedding is stored at the 224-pixel pre-training grid (14 x 14, plus a class slot) and
  resized bicubically to 64 x 64; SAM's neck. That is :class:`ViTImageEncoder` with
  ``pos_embed_cls=True`` — only the MLP keys differ (``mlp.fc1/fc2``).
* Prompt encoder: SAM's random-Fourier PE with four learned embeddings (invalid point,
  positive click, box top-left, box bottom-right). Negative clicks carry only their PE,
  padding points keep their PE, and there is no mask input / dense embedding.
* Mask decoder: SAM's two-way transformer with three real differences, all options of the
  shared :class:`MaskDecoder`: GELU in every token MLP, ``GroupNorm(1, 64)`` in the
  upscaling path, and a self-attention whose residual carries the query PE.

Pipeline (``EfficientSam.forward`` / ``predict_masks``): [0, 1] pixels squashed to
1024 x 1024 with bilinear ``F.interpolate`` (no antialias, no padding), ImageNet
normalisation; points rescaled to the 1024 frame per axis, a box given as its two corners
(labels 2, 3) before the clicks, every list padded with (-1, -1) / label -1 to 6 points;
always 3 output masks, bicubic straight to the original size, ``masks = logits >= 0``.

Differences from upstream that are deliberate (documented, not bugs):

* upstream silently keeps only the first 6 points; leansam passes every point.
* upstream maps any NEGATIVE input coordinate to -1 (the padding coordinate); leansam
  rescales it like any other coordinate (only matters for clicks outside the image).
* leansam thresholds masks with ``> 0``, upstream's example with ``>= 0``: they differ
  only on pixels whose bicubic logit is exactly 0.0 (measure zero in float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam import PromptStyle, Sam
from ..models.vit import ViTConfig, ViTImageEncoder
from ..registry import ModelInfo, Weights
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from ._rename import compile_rules, rename_keys

_SOURCE = "https://github.com/yformer/EfficientSAM"
_PAPER = "EfficientSAM: Leveraged Masked Image Pretraining for Efficient Segment Anything (arXiv:2312.00863)"
_RAW = "https://github.com/yformer/EfficientSAM/raw/main/weights/"


def _efficientsam_vit(embed_dim: int, num_heads: int) -> ViTConfig:
    return ViTConfig(
        embed_dim=embed_dim,
        depth=12,
        num_heads=num_heads,
        mlp_dim=4 * embed_dim,
        qkv_bias=True,
        norm_eps=1e-6,
        window_size=0,  # global attention in every block
        global_attn_indexes=tuple(range(12)),
        use_rel_pos=False,
        pos_embed_cls=True,
        pretrain_grid=14,  # 224 / 16
        neck_eps=1e-6,
    )


EFFICIENTSAM_VIT_T = _efficientsam_vit(192, 3)
EFFICIENTSAM_VIT_S = _efficientsam_vit(384, 6)

# [0, 1] pixels, bilinear squash (no antialias) to 1024 x 1024, ImageNet normalisation;
# logits upsampled bicubically straight to the original size.
EFFICIENTSAM_TRANSFORM = ImageTransform(
    resize="square",
    interpolation="bilinear",
    input_scale=1.0 / 255.0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    upsample="bicubic",
    crop=False,
)

# Box corners first, then the clicks; padded with (-1, -1) / label -1 to 6 points in the 1024 frame.
EFFICIENTSAM_PROMPT_STYLE = PromptStyle(box_first=True, pad="fixed", pad_to=6, pad_coord=-1.0)


def build_efficientsam(cfg: ViTConfig) -> Sam:
    """EfficientSAM with the ViT encoder ``cfg``: shared prompt encoder / decoder with EfficientSAM's options."""
    prompt_encoder = PromptEncoder(mask_prompt=False, negative_point_embed=False, zero_pad_point_pe=False)
    mask_decoder = MaskDecoder(activation="gelu", upscaling_norm="groupnorm", self_attn_pe_residual=True)
    return Sam(ViTImageEncoder(cfg), prompt_encoder, mask_decoder)


def build_efficientsam_vitt() -> Sam:
    """EfficientSAM-Ti: ViT-Ti encoder (192 wide, 3 heads)."""
    return build_efficientsam(EFFICIENTSAM_VIT_T)


def build_efficientsam_vits() -> Sam:
    """EfficientSAM-S: ViT-S encoder (384 wide, 6 heads)."""
    return build_efficientsam(EFFICIENTSAM_VIT_S)


# Official key -> leansam key; every pattern is anchored, so leansam keys pass through unchanged.
_RULES = compile_rules(
    (
        # Prompt encoder: four named embeddings -> SAM's point_embeddings.{label} / not_a_point_embed.
        (r"^prompt_encoder\.invalid_points\.weight$", "prompt_encoder.not_a_point_embed.weight"),
        (r"^prompt_encoder\.point_embeddings\.weight$", "prompt_encoder.point_embeddings.1.weight"),
        (r"^prompt_encoder\.bbox_top_left_embeddings\.weight$", "prompt_encoder.point_embeddings.2.weight"),
        (
            r"^prompt_encoder\.bbox_bottom_right_embeddings\.weight$",
            "prompt_encoder.point_embeddings.3.weight",
        ),
        # ViT MLP: timm-style fc1/fc2 -> segment-anything's lin1/lin2.
        (r"^(image_encoder\.blocks\.\d+\.mlp\.)fc1\.", r"\1lin1."),
        (r"^(image_encoder\.blocks\.\d+\.mlp\.)fc2\.", r"\1lin2."),
        # Two-way transformer MLP: MLPBlock(num_layers=1) = layers.0.0 (Linear) + fc.
        (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.0\.0\.", r"\1lin1."),
        (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)fc\.", r"\1lin2."),
        # Upscaling: ModuleList of Sequential(ConvT, GroupNorm|Identity, GELU) -> one Sequential.
        (r"^mask_decoder\.final_output_upscaling_layers\.0\.0\.", "mask_decoder.output_upscaling.0."),
        (r"^mask_decoder\.final_output_upscaling_layers\.0\.1\.", "mask_decoder.output_upscaling.1."),
        (r"^mask_decoder\.final_output_upscaling_layers\.1\.0\.", "mask_decoder.output_upscaling.3."),
        # Hypernetwork / IoU-head MLPBlock(num_layers=2): layers.K.0 + fc -> layers.K, layers.2.
        (
            r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head)\.)layers\.([01])\.0\.",
            r"\1layers.\2.",
        ),
        (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head)\.)fc\.", r"\1layers.2."),
    )
)


def filter_fn(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official EfficientSAM state_dict -> (leansam keys, keys set aside = none).

    Renames only; every tensor is kept unchanged. Keys no rule recognises (including keys
    already in leansam's layout) are passed through, for the strict loader to check.
    """
    return rename_keys(state, _RULES), []


def _info(
    variant: str, builder: Callable[[], Sam], file_name: str, url: str, n_params: int, description: str
) -> ModelInfo:
    return ModelInfo(
        name=f"efficientsam_{variant}",
        family="efficientsam",
        builder=builder,
        weights=Weights(
            url=url,
            file_name=file_name,
            sha256=None,  # upstream publishes none; no two independent public sources found
            license="Apache-2.0",
            source=_SOURCE,
            paper=_PAPER,
            wrappers=("model",),
        ),
        transform=EFFICIENTSAM_TRANSFORM,
        prompt_style=EFFICIENTSAM_PROMPT_STYLE,
        checkpoint_filter=filter_fn,
        n_params=n_params,
        description=description,
    )


# n_params: nn.Parameters of the official EfficientSam modules (build_efficient_sam_vit{t,s},
# yformer/EfficientSAM @d525f62) = the float tensors of its state_dict (fixture manifests:
# 10,223,460 / 26,413,284) minus the prompt encoder's 2 x 128 PE buffer.
MODELS = (
    _info(
        "vitt",
        build_efficientsam_vitt,
        "efficient_sam_vitt.pt",
        _RAW + "efficient_sam_vitt.pt",
        10_223_204,
        "EfficientSAM-Ti: SAMI-pretrained ViT-Ti encoder",
    ),
    # Upstream ships ViT-S only as a zip (GitHub's 100 MB limit) holding efficient_sam_vits.pt;
    # the download (a zip) is cached under the .pt name and read directly
    # (checkpoints.read_state_dict unzips single-file archives); the extracted .pt loads too.
    _info(
        "vits",
        build_efficientsam_vits,
        "efficient_sam_vits.pt",
        _RAW + "efficient_sam_vits.pt.zip",
        26_413_028,
        "EfficientSAM-S: SAMI-pretrained ViT-S encoder",
    ),
)
