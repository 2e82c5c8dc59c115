"""``FastDecoder``: the reference :class:`~leansam.models.mask_decoder.MaskDecoder`'s function,
computed faster for many prompts on one image (inference only).

Three rewrites of the same arithmetic, each chosen by the sizes of the call (docs/performance.md):

* folded attention (:mod:`.attention`): the cross attentions never project the N image tokens;
* factored image tokens (:mod:`.factored`): prompts that share one image (no mask input) keep their
  image tokens as one shared part plus low-rank per-prompt terms, decoded a few prompts at a time;
  the shared products live in the image's :class:`~leansam.interface.ImageFeatures` ``cache``;
* channels-last upscaling (:mod:`.upscale`), in chunks on large grids.

Results equal the reference decoder's up to float rounding (tests/models/test_fast_decoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..common import eager
from ..mask_decoder import MaskDecoder
from ..transformer import TwoWayAttentionBlock, TwoWayTransformer
from .attention import attend, folds, image_to_tokens, tokens_to_image
from .factored import FactoredBatch, FactoredKeys, SharedImage
from .upscale import ImageTokens, upscale_batched, upscale_in_chunks


@dataclass(frozen=True)
class FastOptions:
    """When the factored form and the chunked upscaling apply (docs/performance.md has the why).

    Attributes:
        min_prompts: fewest prompts in one call for which the factored form is set up for a new image
            (its per-image products cost about as much as decoding one prompt); once set up for an
            image, every later call on it uses it.
        min_tokens: smallest image-token grid (h * w) for the factored form and the chunked upscaling;
            on smaller grids the per-prompt terms are as wide as the tokens themselves.
        block: prompts per block of the factored transformer (their terms then stay in cache).
        upscale_chunk_tokens: tokens of the 2h x 2w grid per chunk of the second upscaling convolution.
    """

    min_prompts: int = 3
    min_tokens: int = 1024
    block: int = 4
    upscale_chunk_tokens: int = 4096


class DecodedTokens(NamedTuple):
    """The decoder up to its upscaling, for B prompts.

    mask_tokens: B x (M+1) x C transformer outputs of the mask tokens. image: the image tokens,
    B x h*w x C (a :class:`FactoredKeys` / :class:`FactoredBatch` in factored form). size: (h, w).
    iou: B x (M+1). obj: object-score logits B x 1.
    """

    mask_tokens: torch.Tensor
    image: ImageTokens
    size: tuple[int, int]
    iou: torch.Tensor
    obj: torch.Tensor

    def select(self, rows: torch.Tensor) -> DecodedTokens:
        """The prompts ``rows`` (1-D index)."""
        return DecodedTokens(
            self.mask_tokens[rows], self.image[rows], self.size, self.iou[rows], self.obj[rows]
        )


class FastDecoder:
    """Runs ``decoder`` for inference; same inputs and outputs as :meth:`MaskDecoder.forward`.

    Args:
        decoder: the reference decoder whose weights are used (not copied).
        cache: a per-image dict (:attr:`ImageFeatures.cache`) for the factored form's shared products,
            or None (then the factored form is not used). The decoder's weights must not change while
            a cache is in use.
        options: thresholds, see :class:`FastOptions`.
    """

    def __init__(
        self, decoder: MaskDecoder, cache: dict[Any, Any] | None = None, options: FastOptions | None = None
    ) -> None:
        self.decoder = decoder
        self.cache = cache
        self.options = options if options is not None else FastOptions()

    @torch.no_grad()
    def __call__(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :meth:`MaskDecoder.forward` (shapes and outputs are the same)."""
        masks, iou, obj = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features
        )
        masks, iou = self.decoder.select_masks(masks, iou, multimask_output)
        return masks, iou, obj

    @torch.no_grad()
    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :meth:`MaskDecoder.predict_masks`."""
        out = self.predict_tokens(image_embeddings, image_pe, sparse, dense)
        return self.masks_from_tokens(out, high_res_features), out.iou, out.obj

    @torch.no_grad()
    def predict_tokens(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
    ) -> DecodedTokens:
        """The two-way transformer and the score heads, without the upscaling.

        The scores do not depend on the masks, so a caller that drops prompts by their scores can
        upscale only the others (:meth:`DecodedTokens.select`, :meth:`masks_from_tokens`).
        """
        dec = self.decoder
        b = sparse.shape[0]
        tokens = torch.cat([dec.output_tokens(b), sparse], dim=1)
        first = 1 if dec.pred_obj_score else 0
        # Without a mask prompt the dense embedding is one vector broadcast over the grid and the
        # prompts: image + dense is then the same for every prompt and kept as a batch of 1.
        dense_shared = dense.shape[0] == 1 or dense.stride(0) == 0
        h, w = image_embeddings.shape[-2:]
        shared = None
        if image_embeddings.shape[0] == 1 and dense_shared and self._factors(h * w, tokens.shape[1]):
            shared = self._shared_image(image_embeddings, dense[:1], image_pe, b >= self.options.min_prompts)
        if shared is not None:
            step = self.options.block
            parts = [
                _factored_transformer(dec.transformer, shared, tokens[i : i + step])
                for i in range(0, b, step)
            ]
            hs = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
            src = parts[0][1] if len(parts) == 1 else FactoredBatch([p[1] for p in parts])
        else:
            if image_embeddings.shape[0] == 1 and dense_shared:
                src = image_embeddings + dense[:1]
            else:
                src = image_embeddings.expand(b, -1, -1, -1) + dense
            hs, src = _transformer(dec.transformer, src, image_pe, tokens)
        iou = dec.iou_prediction_head(hs[:, first])
        if dec.pred_obj_score:
            obj = dec.pred_obj_score_head(hs[:, 0])
        else:
            obj = 10.0 * iou.new_ones(b, 1)  # "object present" for models without the head, as SAM 2 does
        return DecodedTokens(hs[:, first + 1 : first + 1 + dec.num_mask_tokens], src, (h, w), iou, obj)

    @torch.no_grad()
    def masks_from_tokens(
        self, out: DecodedTokens, high_res_features: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Mask logits B x (M+1) x 4h x 4w from :meth:`predict_tokens`' output (or a selection of it).

        ``high_res_features`` (SAM 2): Bf x C/8 x 4h x 4w and Bf x C/4 x 2h x 2w, Bf = 1 or B.
        """
        dec = self.decoder
        (h, w), src = out.size, out.image
        hyper_in = torch.stack(
            [mlp(out.mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1
        )
        if not dec.use_high_res_features:
            high_res_features = None
        elif high_res_features is None:
            raise ValueError("this decoder needs the image encoder's high-resolution features (SAM 2)")
        factored = isinstance(src, FactoredKeys | FactoredBatch)
        b = len(src) if factored else src.shape[0]
        if b == 0:  # no prompt left (e.g. all filtered out): views with -1 are ambiguous on empty tensors
            return hyper_in.new_zeros(0, hyper_in.shape[1], 4 * h, 4 * w)
        if factored or (h * w >= self.options.min_tokens and eager()):
            chunk = self.options.upscale_chunk_tokens
            return upscale_in_chunks(dec, src, h, w, hyper_in, high_res_features, chunk)
        return upscale_batched(dec, src, h, w, hyper_in, high_res_features)

    def _factors(self, n_image_tokens: int, n_tokens: int) -> bool:
        """Whether the factored form applies: a cache, eager mode, a large grid, few prompt tokens."""
        return (
            self.cache is not None
            and eager()
            and n_image_tokens >= self.options.min_tokens
            and type(self.decoder.output_upscaling[0]) is nn.ConvTranspose2d
            and _factorable(self.decoder.transformer, n_tokens)
        )

    def _shared_image(
        self, image: torch.Tensor, dense: torch.Tensor, image_pe: torch.Tensor, build: bool
    ) -> SharedImage | None:
        """The cached :class:`SharedImage` of image + dense (1 x C x h x w each) for this decoder, rebuilt
        when the image, the dense embedding or the positional encoding differ (None when it would have
        to be built and ``build`` is False)."""
        key = ("fast_decoder.shared_image", id(self.decoder))
        shared = self.cache.get(key)
        if shared is None or not shared.matches(image, dense, image_pe):
            if not build:
                return None
            shared = self.cache[key] = SharedImage(image, dense, image_pe)
        return shared


def _factorable(transformer: TwoWayTransformer, n_tokens: int) -> bool:
    """Every cross attention folds for this many tokens and is plain ``nn.Linear`` / ``nn.LayerNorm``."""
    attns = [transformer.final_attn_token_to_image]
    for layer in transformer.layers:
        attns += [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    plain = all(
        folds(a, n_tokens) and all(type(m) is nn.Linear for m in (a.q_proj, a.k_proj, a.v_proj, a.out_proj))
        for a in attns
    )
    return plain and all(type(layer.norm4) is nn.LayerNorm for layer in transformer.layers)


def _block(
    layer: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`TwoWayAttentionBlock.forward`; keys Bk x N x C with Bk = 1 while still shared."""
    queries = layer.self_attention(queries, query_pe)
    q = queries + query_pe
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    if folds(t2i, q.shape[1]):
        queries = layer.norm2(queries + tokens_to_image(t2i, q, keys, keys, key_pe))
    else:
        queries = layer.norm2(queries + attend(t2i, q, keys + key_pe, keys))
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    # The image tokens stop being shared here: each prompt updates its own copy.
    if folds(i2t, q.shape[1]):
        keys = layer.norm4(image_to_tokens(i2t, keys, q, queries, key_pe, residual=keys))
    else:
        keys = layer.norm4(keys + attend(i2t, keys + key_pe, q, queries))
    return queries, keys


def _transformer(
    transformer: TwoWayTransformer, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`TwoWayTransformer.forward` for image Bi x C x h x w (Bi = 1 or B), tokens B x T x C."""
    # Token-major copies: the elementwise passes over image tokens then read memory in order.
    keys = image.flatten(2).transpose(1, 2).contiguous()
    key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
    queries = tokens
    for layer in transformer.layers:
        queries, keys = _block(layer, queries, keys, tokens, key_pe)
    q = queries + tokens
    final = transformer.final_attn_token_to_image
    if folds(final, q.shape[1]):
        attended = tokens_to_image(final, q, keys, keys, key_pe)
    else:
        attended = attend(final, q, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attended), keys


def _factored_transformer(
    transformer: TwoWayTransformer, shared: SharedImage, tokens: torch.Tensor
) -> tuple[torch.Tensor, FactoredKeys]:
    """:meth:`TwoWayTransformer.forward` for B prompts on the one image of ``shared``."""
    keys = FactoredKeys.start(shared, tokens.shape[0])
    queries = tokens
    for layer in transformer.layers:
        queries = layer.self_attention(queries, tokens)
        queries = layer.norm2(queries + keys.attend(layer.cross_attn_token_to_image, queries + tokens))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = keys.add_attention(layer.cross_attn_image_to_token, queries + tokens, queries)
        keys = keys.layer_norm(layer.norm4)
    attended = keys.attend(transformer.final_attn_token_to_image, queries + tokens)
    return transformer.norm_final_attn(queries + attended), keys
