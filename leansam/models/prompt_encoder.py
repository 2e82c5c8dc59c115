"""The prompt encoder shared by every model family.

Points, box corners and a low-resolution mask are turned into the sparse and
dense embeddings the mask decoder consumes. Keys follow segment-anything
(``pe_layer.positional_encoding_gaussian_matrix``, ``point_embeddings.{0..3}``,
``not_a_point_embed``, ``mask_downscaling.{0,1,3,4,6}``, ``no_mask_embed``).

Point labels (one convention for all families):

====== =============================================
label  meaning
====== =============================================
 1     foreground click
 0     background click
 2     top-left box corner
 3     bottom-right box corner
-1     padding ("not a point")
====== =============================================

A box is encoded as its two corners with labels 2 and 3; this is exactly what
segment-anything's separate box path computes, and what SAM 2 / EfficientSAM
do explicitly, so one code path serves all of them.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of coordinates in [0, 1].

    Key: ``positional_encoding_gaussian_matrix`` (2 x num_pos_feats), a persistent buffer.
    """

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """... x 2 coordinates in [0, 1] -> ... x (2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        coords = 2 * torch.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an H x W grid: C x H x W."""
        h, w = size
        m = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
        xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
        coords = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._encode(coords).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """B x N x 2 pixel coordinates (x, y) in the model's input frame -> B x N x C."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Encodes points / box corners / masks into sparse (B x N x C) and dense (B x C x h x w) embeddings.

    Args:
        embed_dim: embedding width C (256 for every published model).
        image_embedding_size: (h, w) of the image embedding, 64 x 64.
        input_image_size: (H, W) of the prompt coordinate frame, 1024 x 1024.
        mask_in_chans: hidden width of the mask down-scaler.
        mask_prompt: build the mask-prompt path and ``no_mask_embed``. EfficientSAM
            has neither: its dense embedding is zero and mask prompts are refused.
        negative_point_embed: whether label 0 adds a learned embedding
            (``point_embeddings.0``). EfficientSAM's negative clicks carry only
            their positional encoding.
        zero_pad_point_pe: SAM zeroes the positional encoding of padding points;
            EfficientSAM keeps it (its padding points sit at coordinate -1).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        *,
        mask_prompt: bool = True,
        negative_point_embed: bool = True,
        zero_pad_point_pe: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # Index = point label (0..3). Identity() keeps key numbering when label 0 has no embedding.
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) if (i > 0 or negative_point_embed) else nn.Identity() for i in range(4)
        )
        self.negative_point_embed = negative_point_embed
        self.zero_pad_point_pe = zero_pad_point_pe
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_prompt = mask_prompt
        if mask_prompt:
            self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
            self.mask_downscaling = nn.Sequential(
                nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
                LayerNorm2d(mask_in_chans // 4),
                nn.GELU(),
                nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
                LayerNorm2d(mask_in_chans),
                nn.GELU(),
                nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
            )
            self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: 1 x C x h x w.

        Computed on every call, as segment-anything does; :meth:`leansam.models.sam.Sam.decode` keeps
        it per image while no gradient is recorded.
        """
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """B x N x 2 coordinates (x, y; pixels of the model's input frame) and B x N labels -> B x N x C.

        Coordinates address pixel corners; +0.5 moves them to pixel centres (as upstream).
        """
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        labels = labels[..., None]
        pad = labels == -1
        if self.zero_pad_point_pe:
            pe = torch.where(pad, torch.zeros_like(pe), pe)
        out = pe + pad * self.not_a_point_embed.weight
        for lab in range(4):
            if lab == 0 and not self.negative_point_embed:
                continue
            out = out + (labels == lab) * self.point_embeddings[lab].weight
        return out

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """B x 1 x 256 x 256 mask logits -> B x C x 64 x 64."""
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        masks: torch.Tensor | None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse B x N x C and dense B x C x h x w embeddings.

        ``points`` = (coords B x N x 2, labels B x N) already in the model's
        input frame and already padded / ordered as the family expects (see
        :class:`leansam.models.sam.PromptStyle`). Box corners are points with
        labels 2 and 3. ``masks`` = B x 1 x 256 x 256 low-res logits or None.
        """
        if points is not None:
            bs = points[0].shape[0]
            sparse = self.embed_points(*points)
        else:
            bs = batch_size if batch_size is not None else (masks.shape[0] if masks is not None else 1)
            sparse = self.not_a_point_embed.weight.new_empty((bs, 0, self.embed_dim))
        h, w = self.image_embedding_size
        if masks is not None:
            if not self.mask_prompt:
                raise ValueError("this model has no mask-prompt input (EfficientSAM); pass mask_input=None")
            dense = self.embed_masks(masks)
        elif self.mask_prompt:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        else:
            dense = sparse.new_zeros((1, self.embed_dim, 1, 1)).expand(bs, -1, h, w)
        return sparse, dense
