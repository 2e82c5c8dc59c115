"""The two-way transformer of the mask decoder, as segment-anything's ``modeling/transformer.py``.

Module names, keys and the order of operations are segment-anything's. Differences, each a family
option (see docs/architecture.md, "The mask decoder, beside segment-anything's"):

* ``norm_eps``: eps of every LayerNorm (SAM 1e-5; EfficientViT-SAM 1e-6).
* ``activation``: the class of the MLP activation (SAM ``nn.ReLU``; EfficientSAM ``nn.GELU``).
* ``self_attn_pe_residual``: EfficientSAM's token self-attention (see
  :meth:`TwoWayAttentionBlock.self_attention`).
* :class:`Attention` computes softmax(q k^T / sqrt(d)) v with ``F.scaled_dot_product_attention``,
  as SAM 2 does; segment-anything writes the same product out.

This is the reference forward (training, ONNX export with ``decoder_impl="reference"``, docs).
Inference on many prompts runs through :mod:`leansam.models.fast` by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock


class TwoWayTransformer(nn.Module):
    """Tokens and image tokens attend to each other ``depth`` times, then tokens attend to the image.

    Keys: ``layers.N.*``, ``final_attn_token_to_image.*``, ``norm_final_attn``.
    """

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        *,
        norm_eps: float = 1e-5,
        self_attn_pe_residual: bool = False,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                norm_eps=norm_eps,
                self_attn_pe_residual=self_attn_pe_residual,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding B x C x h x w, image_pe B x C x h x w (or 1 x ...), point_embedding B x T x C.

        Returns (tokens B x T x C, image tokens B x h*w x C).
        """
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)

        queries = point_embedding
        keys = image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)

        q = queries + point_embedding
        k = keys + image_pe
        attn_out = self.final_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = self.norm_final_attn(queries)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens-to-image attention, MLP, image-to-tokens attention; post-norm.

    ``skip_first_layer_pe``: the first block's self-attention sees the tokens without their PE and has
    no residual (SAM). ``self_attn_pe_residual``: EfficientSAM's variant, see :meth:`self_attention`.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        *,
        norm_eps: float = 1e-5,
        self_attn_pe_residual: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn_pe_residual = self_attn_pe_residual

    def self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """The tokens' self-attention and ``norm1`` (B x T x C).

        SAM adds the PE to queries and keys only. With ``self_attn_pe_residual`` (EfficientSAM) the PE
        is added to the tokens themselves, so it also enters the values and the residual stream, and
        the first block keeps its residual connection.
        """
        if self.self_attn_pe_residual:
            if not self.skip_first_layer_pe:
                queries = queries + query_pe
            queries = queries + self.self_attn(q=queries, k=queries, v=queries)
        elif self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            attn_out = self.self_attn(q=q, k=q, v=queries)
            queries = queries + attn_out
        return self.norm1(queries)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries B x T x C (tokens), keys B x N x C (image tokens), PEs of the same shapes (or batch 1)."""
        # Self attention block
        queries = self.self_attention(queries, query_pe)

        # Cross attention block, tokens attending to image embedding
        q = queries + query_pe
        k = keys + key_pe
        attn_out = self.cross_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = self.norm2(queries)

        # MLP block
        mlp_out = self.mlp(queries)
        queries = queries + mlp_out
        queries = self.norm3(queries)

        # Cross attention block, image embedding attending to tokens
        q = queries + query_pe
        k = keys + key_pe
        attn_out = self.cross_attn_image_to_token(q=k, k=q, v=queries)
        keys = keys + attn_out
        keys = self.norm4(keys)
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose inner width may be ``embedding_dim / downsample_rate``.

    Keys: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``. Inputs B x N x C.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        b, n, c = x.shape
        x = x.reshape(b, n, num_heads, c // num_heads)
        return x.transpose(1, 2)  # B x N_heads x N_tokens x C_per_head

    def _recombine_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n_heads, n_tokens, c_per_head = x.shape
        x = x.transpose(1, 2)
        return x.reshape(b, n_tokens, n_heads * c_per_head)  # B x N_tokens x C

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q B x Nq x C, k and v B x Nk x C -> B x Nq x C."""
        # Input projections
        q = self.q_proj(q)
        k = self.k_proj(k)
        v = self.v_proj(v)

        # Separate into heads
        q = self._separate_heads(q, self.num_heads)
        k = self._separate_heads(k, self.num_heads)
        v = self._separate_heads(v, self.num_heads)

        # Attention: softmax(q k^T / sqrt(d)) v
        out = F.scaled_dot_product_attention(q, k, v)

        # Get output
        out = self._recombine_heads(out)
        out = self.out_proj(out)
        return out
