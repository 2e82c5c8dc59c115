"""The ``Sam`` model: a family-specific image encoder plus the shared prompt encoder and mask decoder.

Data flow (shapes for one image, B prompts)::

    image (H x W x 3 uint8)
      -> preprocess (ImageTransform)              1 x 3 x S x S
      -> image_encoder                            1 x 256 x 64 x 64 (+ SAM 2 high-res levels)
    prompts (pixels of the original image)
      -> prepare_prompts (PromptStyle)            coords B x N x 2, labels B x N (model frame)
      -> prompt_encoder                           sparse B x N x 256, dense B x 256 x 64 x 64
      -> mask_decoder (reference or fast)         low-res logits B x M x 256 x 256, IoU B x M
      -> postprocess (ImageTransform)             logits B x M x H x W
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from ..interface import ImageFeatures, Prompts, PromptStyle, keep_confident, layout_prompts
from ..transforms import ImageTransform, postprocess_logits, preprocess
from .fast import FastDecoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = ["ImageFeatures", "PromptStyle", "Sam"]

DecoderImpl = Literal["reference", "fast"]


class Sam(nn.Module):
    """Promptable segmentation model.

    Args:
        image_encoder: B x 3 x S x S -> B x 256 x 64 x 64, or (that, [two high-res levels]) for SAM 2.
        prompt_encoder: the shared :class:`PromptEncoder`.
        mask_decoder: the shared :class:`MaskDecoder`.
        transform: pre/post-processing of the family.
        prompt_style: prompt layout of the family.
        name: registry name (informational).
        decoder_impl: how :meth:`decode` runs the mask decoder when no gradient is recorded:
            ``"fast"`` (default) through :class:`~leansam.models.fast.FastDecoder`, the same function
            reassociated for many prompts on one image (docs/performance.md), or ``"reference"``
            through ``mask_decoder.forward``. With a gradient the reference always runs. An attribute:
            ``model.decoder_impl = "reference"`` switches an existing model.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder | None = None,
        mask_decoder: MaskDecoder | None = None,
        transform: ImageTransform | None = None,
        prompt_style: PromptStyle | None = None,
        name: str = "",
        decoder_impl: DecoderImpl = "fast",
    ) -> None:
        super().__init__()
        if decoder_impl not in ("reference", "fast"):
            raise ValueError(f"decoder_impl must be 'reference' or 'fast', not {decoder_impl!r}")
        self.decoder_impl = decoder_impl
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder if prompt_encoder is not None else PromptEncoder()
        self.mask_decoder = mask_decoder if mask_decoder is not None else MaskDecoder()
        self.transform = transform if transform is not None else ImageTransform()
        self.prompt_style = prompt_style if prompt_style is not None else PromptStyle()
        self.name = name

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.device

    @property
    def mask_threshold(self) -> float:
        return 0.0

    # --- image -----------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> 1 x 3 x S x S normalised, padded encoder input (on the model's device)."""
        return preprocess(image, self.transform).to(self.device)

    def encode_image(self, x: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S encoder input -> :class:`ImageFeatures`."""
        out = self.image_encoder(x)
        if isinstance(out, (tuple, list)):
            embed, high = out
            projected = (
                self.mask_decoder.project_high_res(high) if self.mask_decoder.use_high_res_features else None
            )
            return ImageFeatures(embed, projected)
        return ImageFeatures(out)

    # --- prompts ---------------------------------------------------------------------------------
    def prepare_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> Prompts | None:
        """:func:`~leansam.interface.layout_prompts` with this model's prompt style and transform.

        Points B x N x 2 (x, y) and boxes B x 4 XYXY in pixels of the original image of (H, W)
        ``original_size`` -> (coords B x N' x 2 in the model's prompt frame, labels B x N'), or None.
        """
        return layout_prompts(
            self.prompt_style, self.transform, point_coords, point_labels, boxes, original_size
        )

    # --- decoding --------------------------------------------------------------------------------
    def decode(
        self,
        features: ImageFeatures,
        points: Prompts | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes B prompts against one image's features in one batched call.

        Args:
            features: features of ONE image (batch 1), shared by all prompts.
            points: (coords B x N x 2 in the prompt frame, labels B x N) from :meth:`prepare_prompts`.
            mask_input: B x 1 x 256 x 256 low-res logits from an earlier call, or None.
            multimask_output: 3 masks per prompt (True) or 1.

        Returns:
            low-res logits B x M x 256 x 256, IoU predictions B x M, object-score logits B x 1.
        """
        sparse, dense = self._embed_prompts(points, mask_input)
        decoder = self._decoder(features)
        return decoder(
            features.embed, self._dense_pe(features), sparse, dense, multimask_output, features.high_res
        )

    def decode_confident(
        self, features: ImageFeatures, points: Prompts, multimask_output: bool, iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` then :func:`~leansam.interface.keep_confident`.

        Returns low-res logits K x h x w, IoU K and the prompt index of each kept mask K. With the fast
        decoder the IoU comes from the score head, which does not look at the masks: prompts with no
        mask above ``iou_thresh`` then skip the upscaling (the same masks, less work). A subclass that
        overrides :meth:`decode` gets it here too with ``decoder_impl="reference"``.
        """
        decoder = self._decoder(features)
        dynamic = not multimask_output and self.mask_decoder.dynamic_multimask_via_stability
        if iou_thresh <= 0.0 or not isinstance(decoder, FastDecoder) or dynamic:
            low, iou, _ = self.decode(features, points, None, multimask_output)
            return keep_confident(low, iou, iou_thresh)
        sparse, dense = self._embed_prompts(points, None)
        out = decoder.predict_tokens(features.embed, self._dense_pe(features), sparse, dense)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        iou = out.iou[:, sel].float()
        keep = iou > iou_thresh  # B x M
        rows = keep.any(dim=1).nonzero().flatten()
        high_res = features.high_res
        if high_res is not None:
            high_res = [f if f.shape[0] == 1 else f[rows] for f in high_res]
        low = decoder.masks_from_tokens(out.select(rows), high_res)[:, sel]
        keep = keep[rows]
        owner = rows[:, None].expand_as(keep)[keep].cpu()
        return low[keep], iou[rows][keep], owner

    def _embed_prompts(
        self, points: Prompts | None, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse B x N x C and dense B x C x h x w prompt embeddings."""
        batch = (
            points[0].shape[0]
            if points is not None
            else (mask_input.shape[0] if mask_input is not None else 1)
        )
        return self.prompt_encoder(points, mask_input, batch_size=batch)

    def _decoder(self, features: ImageFeatures) -> MaskDecoder | FastDecoder:
        """The decoder strategy for a call on ``features`` (see ``decoder_impl``)."""
        if self.decoder_impl == "fast" and not torch.is_grad_enabled():
            return FastDecoder(self.mask_decoder, features.cache)
        return self.mask_decoder

    def _dense_pe(self, features: ImageFeatures) -> torch.Tensor:
        """The prompt encoder's dense PE, kept in the image's cache while no gradient is recorded."""
        if torch.is_grad_enabled():
            return self.prompt_encoder.get_dense_pe()
        key = ("dense_pe", id(self.prompt_encoder))
        pe = features.cache.get(key)
        if pe is None:
            pe = features.cache[key] = self.prompt_encoder.get_dense_pe()
        return pe

    def postprocess_masks(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """B x M x 256 x 256 low-res logits -> B x M x H x W logits at the original size."""
        return postprocess_logits(low_res, self.transform, original_size)

    def forward(
        self,
        image: np.ndarray,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image, B prompts, end to end: (logits B x M x H x W, IoU B x M). See :class:`leansam.SamPredictor`."""
        size = image.shape[:2]
        feats = self.encode_image(self.preprocess(image))
        points = self.prepare_prompts(point_coords, point_labels, boxes, size)
        low, iou, _ = self.decode(feats, points, None, multimask_output)
        return self.postprocess_masks(low, size), iou
