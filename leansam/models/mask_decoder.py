"""The two-way-transformer mask decoder shared by every model family.

Keys follow segment-anything (``transformer.*``, ``iou_token``, ``mask_tokens``,
``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.N.layers.M``,
``iou_prediction_head.layers.M``). The SAM 2 decoder is this decoder with three
documented options switched on — an object-score token (``obj_score_token``,
``pred_obj_score_head``), a sigmoid on the IoU head, and high-resolution skip
features (``conv_s0``/``conv_s1``) — not a separate copy. EfficientSAM's decoder
is this one with GELU token MLPs, a GroupNorm in the upscaling path and its own
token self-attention residual (``activation``, ``upscaling_norm``,
``self_attn_pe_residual``).

Speed notes (CPU): many prompts on one image are decoded in one call; the
image tokens are shared across prompts until the first image-to-token update,
so their key/value projections are computed once; the stride-2 transposed
convolutions run as one matmul plus a pixel shuffle.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d, MLPBlock


class TokenAttention(nn.Module):
    """Multi-head attention with an optional down-projected inner width.

    Keys: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``. Inputs B x N x C;
    the key/value batch may be 1 while the query batch is B (shared image).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        # Either side may still be the shared image (batch 1): project once, then broadcast.
        b = max(q.shape[0], k.shape[0])
        q, k, v = q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves and to the image, then the image attends to the tokens.

    ``self_attn_pe_residual`` selects EfficientSAM's token self-attention: the query PE is
    added to the tokens themselves (so it also enters the values and the residual stream),
    and the first layer keeps its residual connection. SAM adds the PE to queries/keys only
    and the first layer has no residual.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
        norm_eps: float,
        mlp_act: type[nn.Module] = nn.ReLU,
        self_attn_pe_residual: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, mlp_dim, mlp_act)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn_pe_residual = self_attn_pe_residual

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries B x T x C (tokens); keys Bk x N x C (image, Bk = 1 while still shared)."""
        if self.self_attn_pe_residual:
            if not self.skip_first_layer_pe:
                queries = queries + query_pe
            queries = queries + self.self_attn(queries, queries, queries)
        elif self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        # The image tokens stop being shared here: each prompt updates its own copy.
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayBlock` plus a final token-to-image attention.

    Keys: ``layers.N.*``, ``final_attn_token_to_image.*``, ``norm_final_attn``.
    """

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        norm_eps: float = 1e-5,
        mlp_act: type[nn.Module] = nn.ReLU,
        self_attn_pe_residual: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate,
                i == 0,
                norm_eps,
                mlp_act,
                self_attn_pe_residual,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image Bi x C x h x w (Bi = 1 or B), image_pe 1 x C x h x w, tokens B x T x C.

        Returns (tokens B x T x C, image tokens B x h*w x C).
        """
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q = queries + tokens
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


def _conv_transpose_2x2(x: torch.Tensor, layer: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2, stride-2 transposed convolution as one matmul + pixel shuffle.

    The 2x2 output patches do not overlap, so each input pixel maps linearly to
    4 * C_out values. Same result as ``layer(x)``, faster on CPU.
    """
    b, c, h, w = x.shape
    c_out = layer.out_channels
    weight = layer.weight.reshape(c, c_out * 4)  # C_in x (C_out * 2 * 2)
    y = x.permute(0, 2, 3, 1).reshape(-1, c) @ weight
    y = y.reshape(b, h, w, c_out, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c_out, 2 * h, 2 * w)
    if layer.bias is not None:
        y = y + layer.bias[:, None, None]
    return y


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
        self_attn_pe_residual: EfficientSAM's token self-attention, see :class:`TwoWayBlock`.
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
            embedding_dim=transformer_dim,
            norm_eps=norm_eps,
            mlp_act=act_module,
            self_attn_pe_residual=self_attn_pe_residual,
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_score = pred_obj_score
        if pred_obj_score:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4)
            if upscaling_norm == "layernorm2d"
            else nn.GroupNorm(1, transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
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
        masks, iou, obj = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features
        )
        if multimask_output:
            return masks[:, 1:], iou[:, 1:], obj
        if self.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._dynamic_multimask(masks, iou)
            return masks, iou, obj
        return masks[:, :1], iou[:, :1], obj

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask tokens: masks B x (M+1) x 4h x 4w, iou B x (M+1), object-score logits B x 1."""
        b = sparse.shape[0]
        out_tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_score:
            out_tokens.insert(0, self.obj_score_token.weight)
        out_tokens = torch.cat(out_tokens, dim=0)[None].expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        first = 1 if self.pred_obj_score else 0

        # Without a mask prompt the dense embedding is one vector broadcast over
        # the grid and prompts: image + dense is then the same for every prompt
        # and is kept as a batch of 1 (no B-fold copy of the image).
        dense_shared = dense.shape[0] == 1 or dense.stride(0) == 0
        if image_embeddings.shape[0] == 1 and dense_shared:
            src = image_embeddings + dense[:1]
        else:
            src = image_embeddings.expand(b, -1, -1, -1) + dense
        _, c, h, w = src.shape

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("this decoder needs the image encoder's high-resolution features (SAM 2)")
            feat_s0, feat_s1 = high_res_features
            up = act1(ln1(_conv_transpose_2x2(src, dc1) + feat_s1))
            up = act2(_conv_transpose_2x2(up, dc2) + feat_s0)
        else:
            up = act2(_conv_transpose_2x2(act1(ln1(_conv_transpose_2x2(src, dc1))), dc2))

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        bu, cu, hu, wu = up.shape
        masks = (hyper_in @ up.reshape(bu, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_score:
            obj = self.pred_obj_score_head(hs[:, 0])
        else:
            obj = iou.new_full((b, 1), 10.0)  # "object present" for models without the head, as SAM 2 does
        return masks, iou, obj

    def _dynamic_multimask(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2: keep token 0 when its mask is stable, else the best-scoring multimask output."""
        multi_iou = iou[:, 1:]
        best = multi_iou.argmax(dim=-1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        best_masks = masks[:, 1:][rows, best][:, None]
        best_iou = multi_iou[rows, best][:, None]
        single_masks, single_iou = masks[:, :1], iou[:, :1]
        stability = stability_score(single_masks[:, 0], 0.0, self.dynamic_multimask_stability_delta)
        stable = (stability >= self.dynamic_multimask_stability_thresh)[:, None]
        out_masks = torch.where(stable[..., None, None], single_masks, best_masks)
        out_iou = torch.where(stable, single_iou, best_iou)
        return out_masks, out_iou


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks ``logits > threshold + offset`` and ``logits > threshold - offset``.

    logits ... x H x W -> ... . Counted in int32 over the last two dims (no float copies of the masks).
    """
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return torch.where(union > 0, inter.float() / union.clamp(min=1).float(), torch.ones_like(inter, dtype=torch.float))
