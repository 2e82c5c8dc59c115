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
convolutions run channels-last as plain matmuls.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d, MLPBlock
from .shared_image import FactoredBatch, FactoredKeys, SharedImage, params_key, softmax_short_rows


def _bmm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched x @ y for Bx x M x K and By x K x N where Bx or By may be 1 (broadcast).

    ``torch.matmul`` materialises the broadcast operand for every batch entry; here a
    batch-1 operand is folded into one plain matrix product instead (no copies).
    """
    bx, by = x.shape[0], y.shape[0]
    if bx == by:
        return torch.bmm(x, y)
    if by == 1:
        return (x.reshape(-1, x.shape[-1]) @ y[0]).view(bx, x.shape[1], y.shape[-1])
    k, n = y.shape[1], y.shape[2]
    out = x[0] @ y.transpose(0, 1).reshape(k, by * n)  # M x (By * N)
    return out.view(x.shape[1], by, n).transpose(0, 1)


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

    # The two cross attentions of the decoder pair a handful of prompt tokens (T ~ 5-12) with
    # thousands of image tokens. Projecting every image token (N x C x D) dominates the
    # decoder's cost, so when T is small the projections are folded into the token side:
    #   (W_q q) . (W_k x) = (W_k^T W_q q) . x      and      sum_n p_n (W_v x_n) = W_v sum_n p_n x_n,
    # which is the same arithmetic reassociated (equal up to float rounding).
    def folds(self, n_tokens: int) -> bool:
        """Whether the folded form is cheaper than projecting the image tokens."""
        return n_tokens * self.num_heads < self.internal_dim

    def forward_tokens_to_image(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pe: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens attend to the image. q: B x T x C; k, v: Bi x N x C (Bi = 1 or B); keys = k + k_pe.

        Same result as ``self(q, k + k_pe, v)`` without projecting the N image tokens.
        """
        b, t, c = q.shape
        h, d = self.num_heads, self.internal_dim // self.num_heads
        qp = self.q_proj(q).view(b, t, h, d) * d**-0.5
        wk = self.k_proj.weight.view(h, d, c)
        q_img = torch.einsum("bthd,hdc->bthc", qp, wk).reshape(b, t * h, c)  # queries in image space
        q_bias = torch.einsum("bthd,hd->bth", qp, self.k_proj.bias.view(h, d)).reshape(b, t * h, 1)
        logits = _bmm(q_img, k.transpose(1, 2))
        if k_pe is not None:
            logits = logits + _bmm(q_img, k_pe.transpose(1, 2))
        attn = (logits + q_bias).softmax(dim=-1)  # B x T*H x N
        mixed = _bmm(attn, v).view(b, t, h, c)  # attention-weighted image tokens
        out = torch.einsum("bthc,hdc->bthd", mixed, self.v_proj.weight.view(h, d, c)) + self.v_proj.bias.view(
            h, d
        )
        return self.out_proj(out.reshape(b, t, h * d))

    def forward_image_to_tokens(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_pe: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The image attends to the tokens. q: Bi x N x C (queries = q + q_pe); k, v: B x T x C -> B x N x C.

        Same result as ``self(q + q_pe, k, v)`` (plus ``residual``, Bi x N x C, when given) without
        projecting the N image tokens in or out.
        """
        b, t, c = k.shape
        h, d = self.num_heads, self.internal_dim // self.num_heads
        kp = self.k_proj(k).view(b, t, h, d) * d**-0.5
        vp = self.v_proj(v).view(b, t, h, d)
        k_img = torch.einsum("bthd,hdc->bhtc", kp, self.q_proj.weight.view(h, d, c)).reshape(b, h * t, c)
        k_bias = torch.einsum("bthd,hd->bht", kp, self.q_proj.bias.view(h, d)).reshape(b, 1, h * t)
        if q_pe is not None and q.shape[0] == 1:
            q, q_pe = q + q_pe, None  # still the shared image: one small add
        logits = _bmm(q, k_img.transpose(1, 2))
        if q_pe is not None:
            logits = logits + _bmm(q_pe, k_img.transpose(1, 2))
        n = logits.shape[1]
        attn = softmax_short_rows((logits + k_bias).view(b, n, h, t), inplace=True).view(b, n, h * t)
        w_out = self.out_proj.weight.view(c, h, d)
        v_out = torch.einsum("bthd,chd->bhtc", vp, w_out).reshape(b, h * t, c)  # values already out-projected
        if residual is None:
            return torch.baddbmm(self.out_proj.bias.expand(b, n, c), attn, v_out)
        # Each of the h heads' attention rows sums to 1, so adding bias / h to every value row adds
        # the output bias exactly once: the residual add and the bias then ride on the one product
        # instead of two more passes over the B x N x C result.
        return torch.baddbmm(residual.expand(b, n, c), attn, v_out + self.out_proj.bias / h)


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

    def _attend_self(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """The tokens' self-attention and its norm (B x T x C)."""
        if self.self_attn_pe_residual:
            if not self.skip_first_layer_pe:
                queries = queries + query_pe
            queries = queries + self.self_attn(queries, queries, queries)
        elif self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        return self.norm1(queries)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries B x T x C (tokens); keys Bk x N x C (image, Bk = 1 while still shared)."""
        queries = self._attend_self(queries, query_pe)
        q = queries + query_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        if t2i.folds(q.shape[1]):
            queries = self.norm2(queries + t2i.forward_tokens_to_image(q, keys, keys, key_pe))
        else:
            queries = self.norm2(queries + t2i(q, keys + key_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        # The image tokens stop being shared here: each prompt updates its own copy.
        if i2t.folds(q.shape[1]):
            keys = self.norm4(i2t.forward_image_to_tokens(keys, q, queries, key_pe, residual=keys))
        else:
            keys = self.norm4(keys + i2t(keys + key_pe, q, queries))
        return queries, keys

    def forward_factored(
        self, queries: torch.Tensor, keys: FactoredKeys, query_pe: torch.Tensor
    ) -> tuple[torch.Tensor, FactoredKeys]:
        """:meth:`forward` with the image tokens of prompts on one image kept factored (no grad)."""
        queries = self._attend_self(queries, query_pe)
        queries = self.norm2(queries + keys.attend(self.cross_attn_token_to_image, queries + query_pe))
        queries = self.norm3(queries + self.mlp(queries))
        keys = keys.add_attention(self.cross_attn_image_to_token, queries + query_pe, queries)
        return queries, keys.layer_norm(self.norm4)


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
        # Token-major copies: the elementwise work over image tokens (residual adds, PE adds) reads
        # them row by row, and a transposed view makes every such pass stride across memory.
        keys = image.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q = queries + tokens
        final = self.final_attn_token_to_image
        if final.folds(q.shape[1]):
            attended = final.forward_tokens_to_image(q, keys, keys, key_pe)
        else:
            attended = final(q, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attended)
        return queries, keys

    def forward_factored(
        self, shared: SharedImage, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, FactoredKeys]:
        """:meth:`forward` for B prompts on the one image of ``shared``, without a gradient.

        Returns (tokens B x T x C, the image tokens as :class:`FactoredKeys`); see
        :mod:`leansam.models.shared_image` for why and how.
        """
        keys = FactoredKeys.start(shared, tokens.shape[0])
        queries = tokens
        for layer in self.layers:
            queries, keys = layer.forward_factored(queries, keys, tokens)
        attended = keys.attend(self.final_attn_token_to_image, queries + tokens)
        return self.norm_final_attn(queries + attended), keys

    def factors(self, n_tokens: int) -> bool:
        """Whether :meth:`forward_factored` applies (plain layers) and is cheaper for this many tokens."""
        attns = [self.final_attn_token_to_image]
        for layer in self.layers:
            attns += [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
        return all(
            a.folds(n_tokens)
            and all(type(m) is nn.Linear for m in (a.q_proj, a.k_proj, a.v_proj, a.out_proj))
            for a in attns
        ) and all(type(layer.norm4) is nn.LayerNorm for layer in self.layers)


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
        factor_shared_image: decode prompts that share one image (no mask input) in factored form
            (:mod:`leansam.models.shared_image`) when no gradient is recorded: same results up to
            float rounding, ~2x fewer multiply-adds per prompt. The prompt-independent products are
            kept for the last image decoded (checked by value on every call) and first built by a call
            with at least ``FACTOR_MIN_PROMPTS`` prompts. False: always the plain path.
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
        factor_shared_image: bool = True,
    ) -> None:
        super().__init__()
        self.factor_shared_image = factor_shared_image
        self._shared: SharedImage | None = None
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
        mask_tokens, src, size, iou, obj = self.predict_tokens(image_embeddings, image_pe, sparse, dense)
        return self.masks_from_tokens(mask_tokens, src, size, high_res_features), iou, obj

    def predict_tokens(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], torch.Tensor, torch.Tensor]:
        """The two-way transformer and the score heads, without the mask upscaling.

        Returns (mask-token outputs B x (M+1) x C, image tokens B x h*w x C (a
        :class:`~leansam.models.shared_image.FactoredKeys` when decoded in factored form), (h, w),
        iou B x (M+1), object-score logits B x 1). The scores do not depend on the masks, so a caller
        that drops prompts by their scores (the mask generator) can upscale only the others with
        :meth:`masks_from_tokens`.
        """
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
        h, w = image_embeddings.shape[-2:]
        shared = None
        if (
            image_embeddings.shape[0] == 1
            and dense_shared
            and h * w >= self.FACTOR_MIN_TOKENS
            and self._factoring(tokens.shape[1])
        ):
            shared = self._shared_image(
                image_embeddings, dense[:1], image_pe, build=b >= self.FACTOR_MIN_PROMPTS
            )
        if shared is not None:
            # A few prompts at a time: their factored image tokens stay in cache (see FACTOR_BLOCK).
            parts = [
                self.transformer.forward_factored(shared, tokens[i : i + self.FACTOR_BLOCK])
                for i in range(0, b, self.FACTOR_BLOCK)
            ]
            hs = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
            src = parts[0][1] if len(parts) == 1 else FactoredBatch([p[1] for p in parts])
        else:
            if image_embeddings.shape[0] == 1 and dense_shared:
                src = image_embeddings + dense[:1]
            else:
                src = image_embeddings.expand(b, -1, -1, -1) + dense
            hs, src = self.transformer(src, image_pe, tokens)
        iou = self.iou_prediction_head(hs[:, first])
        if self.pred_obj_score:
            obj = self.pred_obj_score_head(hs[:, 0])
        else:
            obj = iou.new_full((b, 1), 10.0)  # "object present" for models without the head, as SAM 2 does
        return hs[:, first + 1 : first + 1 + self.num_mask_tokens], src, (h, w), iou, obj

    def _factoring(self, n_tokens: int) -> bool:
        """Whether to decode prompts on one shared image in factored form (see ``factor_shared_image``)."""
        return (
            self.factor_shared_image
            and self._eager_inference()
            and type(self.output_upscaling[0]) is nn.ConvTranspose2d
            and self.transformer.factors(n_tokens)
        )

    #: Fewest prompts in one call for which the factored path is set up for a new image. Its
    #: per-image products cost about 1.3 decodes of one prompt and each prompt then costs ~0.45 of
    #: one, so from 3 prompts on one call already gains; once set up, any call on that image uses it.
    FACTOR_MIN_PROMPTS = 3
    #: Smallest image-token grid (h * w) for the factored path and the chunked upscaling. On a small
    #: grid (leansam_tiny: 16 x 16 tokens of 128 channels) the per-prompt coefficients are as wide as
    #: the tokens themselves and Python overhead dominates: there they made 50 boxes 3.8x slower.
    FACTOR_MIN_TOKENS = 1024
    #: Prompts per block of the factored transformer: each carries ~4096 x 116 coefficients (1.9 MB),
    #: so a block of 4 works near the cache where 64 at once (the mask generator's batch) stream
    #: ~120 MB per operation; on a 2-core CPU 64 prompts decoded ~1.5x faster in blocks.
    FACTOR_BLOCK = 4
    #: Tokens of the 2h x 2w grid per chunk of the second upscaling convolution (inference): 1 MB per
    #: intermediate; from 1024 to 8192 all ran within noise of each other here, 4096 fastest.
    UPSCALE_CHUNK_TOKENS = 4096

    def _shared_image(
        self, image: torch.Tensor, dense: torch.Tensor, image_pe: torch.Tensor, build: bool = True
    ) -> SharedImage | None:
        """The cached :class:`SharedImage` of image + dense (1 x C x h x w each), rebuilt when the image,
        the dense embedding, the positional encoding or the decoder weights change (None when it
        would have to be built and ``build`` is False)."""
        key = params_key(self)
        shared = getattr(self, "_shared", None)
        if shared is None or not shared.matches(image, dense, image_pe, key):
            if not build:
                return None
            shared = self._shared = SharedImage(image, dense, image_pe, key)
        return shared

    def masks_from_tokens(
        self,
        mask_tokens: torch.Tensor,
        src: torch.Tensor | FactoredKeys | FactoredBatch,
        size: tuple[int, int],
        high_res_features: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mask logits B x (M+1) x 4h x 4w from :meth:`predict_tokens` outputs (mask tokens B x (M+1) x C,
        image tokens B x h*w x C). B may be a subset of the prompts, taken alike from every batch-B input."""
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        return self._upscale_and_project(src, size[0], size[1], hyper_in, high_res_features)

    def _upscale_and_project(
        self,
        src: torch.Tensor | FactoredKeys | FactoredBatch,
        h: int,
        w: int,
        hyper_in: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Image tokens B x h*w x C -> mask logits B x M x 4h x 4w (M = rows of ``hyper_in`` B x M x C/8).

        Runs channels-last end to end: each kernel-2 stride-2 transposed convolution is one
        matmul whose output columns are ordered (dy, dx, channel), so the per-pixel norm works on
        the last dimension and only the final M-channel logits are permuted into image layout.
        """
        factored = isinstance(src, FactoredKeys | FactoredBatch)
        # src.shape[0], not len(src): the ONNX tracer keeps shapes symbolic but bakes len() in as a constant.
        b = len(src) if factored else src.shape[0]
        if b == 0:  # no prompt left (e.g. all filtered out): views with -1 are ambiguous on empty tensors
            return hyper_in.new_zeros(0, hyper_in.shape[1], 4 * h, 4 * w)
        if self.use_high_res_features and high_res_features is None:
            raise ValueError("this decoder needs the image encoder's high-resolution features (SAM 2)")
        if factored or (h * w >= self.FACTOR_MIN_TOKENS and self._eager_inference()):
            return self._upscale_in_chunks(src, h, w, hyper_in, high_res_features)
        dc1, _, _, dc2, _ = self.output_upscaling
        c1, c2 = dc1.out_channels, dc2.out_channels
        feat_s0 = feat_s1 = None
        if self.use_high_res_features:
            f0, f1 = high_res_features  # Bf x c2 x 4h x 4w, Bf x c1 x 2h x 2w (Bf = 1 or B)
            feat_s1 = f1.reshape(-1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
            feat_s0 = f0.reshape(-1, c2, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1)
        up = torch.addmm(dc1.bias.repeat(4), src.reshape(-1, src.shape[-1]), w1).view(b, h, w, 2, 2, c1)
        up = self._norm_act(up if feat_s1 is None else up + feat_s1, up[0].numel())
        w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        up = torch.addmm(dc2.bias.repeat(4), up.reshape(-1, c1), w2).view(b, h, w, 2, 2, 2, 2, c2)
        up = self.output_upscaling[4](up if feat_s0 is None else up + feat_s0)
        # B x (h w dy1 dx1 dy2 dx2) x C/8  @  B x C/8 x M
        masks = torch.bmm(up.view(b, -1, c2), hyper_in.transpose(1, 2))
        m = hyper_in.shape[1]
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)

    def _norm_act(self, up: torch.Tensor, per_prompt: int) -> torch.Tensor:
        """The upscaling's norm and first activation on channels-last ... x C/4 features, ``per_prompt``
        elements per prompt (sizes passed in as Python ints: the ONNX tracer needs them constant)."""
        norm, act = self.output_upscaling[1], self.output_upscaling[2]
        if isinstance(norm, nn.GroupNorm):  # EfficientSAM: statistics over channels and pixels
            flat = F.layer_norm(up.reshape(-1, per_prompt), (per_prompt,), eps=norm.eps).view_as(up)
            return act(flat * norm.weight + norm.bias)
        c1 = self.output_upscaling[0].out_channels
        return act(F.layer_norm(up, (c1,), norm.weight, norm.bias, norm.eps))

    def _eager_inference(self) -> bool:
        """No gradient, no tracing/export/compilation: loops and in-place writes are allowed."""
        return (
            not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export()
            and not torch.compiler.is_compiling()
        )

    def _upscale_in_chunks(
        self,
        src: torch.Tensor | FactoredKeys | FactoredBatch,
        h: int,
        w: int,
        hyper_in: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """:meth:`_upscale_and_project` one prompt at a time, and the second convolution a few grid rows at
        a time (inference only).

        Why: batched, the second convolution's output is 32 channels at 4h x 4w per prompt (8 MB), so
        a block of 4 prompts is a 32 MB buffer: it leaves the cache, and at glibc's 32 MB mmap
        threshold every such allocation is fresh page-faulted memory. In chunks each intermediate is
        ~1 MB. The first convolution's output is laid out as a raster of the 2h x 2w grid, and the
        second is evaluated for even and odd output rows separately (half of its weight columns each),
        so each chunk's logits are whole image rows: writing them out is a strided copy of 4w-long
        runs instead of a 7-d permutation. The upscaling ran 2-3x faster on a 2-core CPU; same arithmetic.
        """
        dc1, _, _, dc2, act2 = self.output_upscaling
        c1, c2 = dc1.out_channels, dc2.out_channels
        b, m = len(src), hyper_in.shape[1]
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1)  # columns (dy1, dx1, c1)
        b1 = dc1.bias.repeat(4)
        w2 = dc2.weight.permute(2, 0, 3, 1).reshape(2, c1, 2 * c2)  # [dy2]: c1 x (dx2, c2), contiguous
        b2 = dc2.bias.repeat(2)
        f0 = f1 = None
        if self.use_high_res_features:  # present: checked by _upscale_and_project
            f0, f1 = high_res_features  # Bf x c2 x 4h x 4w, Bf x c1 x 2h x 2w (Bf = 1 or B)
            f0 = f0.permute(0, 2, 3, 1).unflatten(1, (2 * h, 2))  # Bf x 2h x dy2 x 4w x c2
            f1 = f1.permute(0, 2, 3, 1)  # Bf x 2h x 2w x c1
        out = hyper_in.new_empty(b, m, 2 * h, 2, 4 * w)  # rows 2 * y1 + dy2
        rows = max(1, self.UPSCALE_CHUNK_TOKENS // (2 * w))  # rows of the 2h x 2w grid per chunk
        for i in range(b):
            if isinstance(src, FactoredKeys | FactoredBatch):
                up = src[i : i + 1].linear(w1, b1, id(dc1))
            else:
                up = torch.addmm(b1, src[i], w1)
            # (y, x, dy1, dx1, c1) -> raster (2y + dy1, 2x + dx1) x c1
            up = up.view(h, w, 2, 2, c1).transpose(1, 2).reshape(2 * h, 2 * w, c1)
            if f1 is not None:
                up = up + f1[i if f1.shape[0] > 1 else 0]
            up = self._norm_act(up, up.numel()).view(2 * h * 2 * w, c1)
            for y0 in range(0, 2 * h, rows):
                y1 = min(2 * h, y0 + rows)
                chunk = up[y0 * 2 * w : y1 * 2 * w]
                for dy in (0, 1):
                    y = torch.addmm(b2, chunk, w2[dy]).view(y1 - y0, 4 * w, c2)  # columns 2x + dx2
                    if f0 is not None:
                        y = y + f0[i if f0.shape[0] > 1 else 0, y0:y1, dy]
                    logits = hyper_in[i] @ act2(y).view(-1, c2).T  # M x (rows * 4w)
                    out[i, :, y0:y1, dy].copy_(logits.view(m, y1 - y0, 4 * w))
        return out.view(b, m, 4 * h, 4 * w)

    def _dynamic_multimask(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2: keep token 0 when its mask is stable, else the best-scoring multimask output."""
        return dynamic_multimask(
            masks, iou, self.dynamic_multimask_stability_delta, self.dynamic_multimask_stability_thresh
        )


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
