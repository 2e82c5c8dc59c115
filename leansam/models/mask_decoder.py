"""The mask decoder shared by every model family, as segment-anything's ``modeling/mask_decoder.py``.

Keys follow segment-anything (``transformer.*``, ``iou_token``, ``mask_tokens``,
``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.N.layers.M``,
``iou_prediction_head.layers.M``). SAM 2's decoder (``sam2/modeling/sam/mask_decoder.py``) is this
decoder with four options switched on: the object-score token (``obj_score_token``,
``pred_obj_score_head``), a sigmoid on the IoU head, high-resolution skip features
(``conv_s0``/``conv_s1``) and the dynamic single-mask rule. EfficientSAM's decoder is this one with
GELU token MLPs, a GroupNorm in the upscaling path and its PE-residual token self-attention.
docs/architecture.md ("The mask decoder, beside segment-anything's") lists every difference.

This is the reference forward, used for training and as the reference in docs. Inference runs
through :mod:`leansam.models.fast` by default (``Sam.decoder_impl``), which computes the same
function faster for many prompts on one image (docs/performance.md).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer

__all__ = ["MLP", "MaskDecoder", "dynamic_multimask", "stability_score"]


class MaskDecoder(nn.Module):
    """Predicts masks and IoU scores from image embeddings and prompt embeddings.

    Args:
        transformer_dim: C (256).
        num_multimask_outputs: masks returned when ``multimask_output=True`` (3).
        iou_head_depth / iou_head_hidden_dim: IoU-head MLP shape (3 / 256).
        norm_eps: eps of the transformer's LayerNorms (SAM 1e-5, EfficientViT-SAM 1e-6).
        iou_sigmoid: SAM 2 passes IoU predictions through a sigmoid.
        pred_obj_score: SAM 2's object-score token (first output token) and head.
        use_high_res_features: SAM 2's skip features from the image encoder
            (``conv_s0``/``conv_s1`` project them once per image, see :meth:`project_high_res`).
        dynamic_multimask_via_stability: SAM 2's rule for ``multimask_output=False``:
            fall back to the best multimask output when token 0 is unstable.
        activation: activation of the token MLPs (transformer MLP, hypernetworks, IoU and
            object-score heads): ``relu`` (SAM) or ``gelu`` (EfficientSAM). The upscaling
            path always uses GELU.
        upscaling_norm: norm after the first transposed convolution: ``layernorm2d``
            (per-pixel over channels, eps 1e-6; SAM) or ``groupnorm`` (``GroupNorm(1, C)``:
            over channels AND pixels, eps 1e-5; EfficientSAM). Same keys and shapes.
        self_attn_pe_residual: EfficientSAM's token self-attention, see
            :meth:`~leansam.models.transformer.TwoWayAttentionBlock.self_attention`.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        *,
        norm_eps: float = 1e-5,
        iou_sigmoid: bool = False,
        pred_obj_score: bool = False,
        use_high_res_features: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        activation: Literal["relu", "gelu"] = "relu",
        upscaling_norm: Literal["layernorm2d", "groupnorm"] = "layernorm2d",
        self_attn_pe_residual: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', not {activation!r}")
        if upscaling_norm not in ("layernorm2d", "groupnorm"):
            raise ValueError(f"upscaling_norm must be 'layernorm2d' or 'groupnorm', not {upscaling_norm!r}")
        act_module, act_fn = (nn.ReLU, F.relu) if activation == "relu" else (nn.GELU, F.gelu)
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer(
            depth=2,
            embedding_dim=transformer_dim,
            mlp_dim=2048,
            num_heads=8,
            activation=act_module,
            norm_eps=norm_eps,
            self_attn_pe_residual=self_attn_pe_residual,
        )
        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.pred_obj_score = pred_obj_score
        if pred_obj_score:
            self.obj_score_token = nn.Embedding(1, transformer_dim)

        norm = LayerNorm2d if upscaling_norm == "layernorm2d" else (lambda c: nn.GroupNorm(1, c))
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            norm(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1, stride=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3, act=act_fn)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_sigmoid,
            act=act_fn,
        )
        if pred_obj_score:
            self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3, act=act_fn)

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def project_high_res(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """SAM 2: applies conv_s0 / conv_s1 to the two high-res FPN levels (done once per image).

        feats: [B x C x 4h x 4w, B x C x 2h x 2w] -> [B x C/8 x 4h x 4w, B x C/4 x 2h x 2w].
        """
        return [self.conv_s0(feats[0]), self.conv_s1(feats[1])]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes B prompts against one image (or B images).

        Args:
            image_embeddings: 1 x C x h x w (shared by all prompts) or B x C x h x w.
            image_pe: 1 x C x h x w.
            sparse_prompt_embeddings: B x N x C.
            dense_prompt_embeddings: B x C x h x w, or 1 x C x h x w / an expanded
                view when identical for all prompts (no mask input).
            multimask_output: return ``num_multimask_outputs`` masks, else one.
            high_res_features: SAM 2 only, already projected (see :meth:`project_high_res`).

        Returns:
            masks B x M x 4h x 4w (low-res logits), iou B x M, object-score logits B x 1.
        """
        masks, iou_pred, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            high_res_features=high_res_features,
        )
        masks, iou_pred = self.select_masks(masks, iou_pred, multimask_output)
        return masks, iou_pred, object_score_logits

    def select_masks(
        self, masks: torch.Tensor, iou_pred: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs of all M+1 mask tokens -> the ones returned (B x M x h x w, B x M)."""
        if multimask_output:
            return masks[:, 1:, :, :], iou_pred[:, 1:]
        if self.dynamic_multimask_via_stability and not self.training:
            return dynamic_multimask(
                masks,
                iou_pred,
                self.dynamic_multimask_stability_delta,
                self.dynamic_multimask_stability_thresh,
            )
        return masks[:, 0:1, :, :], iou_pred[:, 0:1]

    def output_tokens(self, batch: int) -> torch.Tensor:
        """The learned output tokens, B x (1 + M+1) x C: [object score (SAM 2)], IoU, mask tokens."""
        tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_score:
            tokens.insert(0, self.obj_score_token.weight)
        return torch.cat(tokens, dim=0).unsqueeze(0).expand(batch, -1, -1)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask tokens: masks B x (M+1) x 4h x 4w, iou B x (M+1), object-score logits B x 1."""
        # Concatenate output tokens
        output_tokens = self.output_tokens(sparse_prompt_embeddings.size(0))
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        s = 1 if self.pred_obj_score else 0

        # Expand per-image data in batch direction to be per-mask
        src = image_embeddings.expand(tokens.shape[0], -1, -1, -1)
        src = src + dense_prompt_embeddings
        pos_src = image_pe
        b, c, h, w = src.shape

        # Run the transformer
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : (s + 1 + self.num_mask_tokens), :]

        # Upscale mask embeddings and predict masks using the mask tokens
        src = src.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled_embedding = self.output_upscaling(src)
        else:
            if high_res_features is None:
                raise ValueError("this decoder needs the image encoder's high-resolution features (SAM 2)")
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled_embedding = act1(ln1(dc1(src) + feat_s1))
            upscaled_embedding = act2(dc2(upscaled_embedding) + feat_s0)
        hyper_in_list: list[torch.Tensor] = []
        for i in range(self.num_mask_tokens):
            hyper_in_list.append(self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]))
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled_embedding.shape
        masks = (hyper_in @ upscaled_embedding.view(b, c, h * w)).view(b, -1, h, w)

        # Generate mask quality predictions
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_score:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            # "Object present" for models without the head, as SAM 2 does.
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, object_score_logits


def dynamic_multimask(
    masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's single-mask rule over ALL mask tokens (also used by the ONNX Runtime backend).

    masks B x (M+1) x h x w low-res logits, iou B x (M+1) -> (B x 1 x h x w, B x 1): token 0
    when its stability score (offset ``delta``) is at least ``thresh``, else the best of tokens 1..M.
    """
    multi_iou = iou[:, 1:]
    best = multi_iou.argmax(dim=-1)
    rows = torch.arange(iou.shape[0], device=iou.device)
    best_masks = masks[:, 1:][rows, best][:, None]
    best_iou = multi_iou[rows, best][:, None]
    single_masks, single_iou = masks[:, :1], iou[:, :1]
    stability = stability_score(single_masks[:, 0], 0.0, delta)
    stable = (stability >= thresh)[:, None]
    out_masks = torch.where(stable[..., None, None], single_masks, best_masks)
    out_iou = torch.where(stable, single_iou, best_iou)
    return out_masks, out_iou


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks ``logits > threshold + offset`` and ``logits > threshold - offset``.

    logits ... x H x W -> ... . Counted in int32 over the last two dims (no float copies of the masks).
    """
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return torch.where(
        union > 0, inter.float() / union.clamp(min=1).float(), torch.ones_like(inter, dtype=torch.float)
    )
